/* The pieces of one decode step (one new token per cache row) of a LLaMA-style decoder, AVX2 + FMA,
 * OpenMP over output channels or heads. A decode step reads every weight once for a handful of
 * activation rows, so it is bound by memory bandwidth; through torch it also pays a dispatch and an
 * allocation per small operation (about 40 per layer), which at batch 1 cost as much as the
 * products themselves. These functions do the same arithmetic in a few calls per layer, writing
 * into buffers the caller keeps.
 *
 *   harness_gemv_f32     y[m, n] (+)= sum_k x[m, k] w[n, k] + bias[n]     (float32 weights [N, K])
 *   harness_rmsnorm      out[m] = w * x[m] / sqrt(mean(x[m]^2) + eps)      (transformers' LlamaRMSNorm)
 *   harness_rope_attend  rotary on each row's q and k heads (rotate-half), k and v written into the
 *                        cache at the row's position, then softmax attention of each q head over its
 *                        kv head's slots 0..position (grouped-query: H / KH q heads per kv head)
 *   harness_silu_mul     out[m, f] = silu(gu[m, f]) * gu[m, F + f]          (gate and up side by side)
 *   harness_decode_layers  all of the above for every layer of a float32 model, in one call and one
 *                        OpenMP parallel region (the threads wait at a barrier between phases
 *                        instead of being started ~8 times per layer)
 *
 * Loaded by harness/models/scratch/fused_decode.py through ctypes (compiled like quant_gemv.c). The
 * caller checks shapes, dtypes and contiguity. Sums run in another order than torch's kernels, so
 * results agree with the torch model to float32 rounding, not bit for bit.
 */
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ALWAYS_INLINE static inline __attribute__((always_inline))


int harness_decode_abi(void) { return 2; }

ALWAYS_INLINE float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

ALWAYS_INLINE float dot(const float *a, const float *b, int64_t K) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + 8), _mm256_loadu_ps(b + k + 8), s1);
    }
    for (; k + 8 <= K; k += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), s0);
    float t = hsum(_mm256_add_ps(s0, s1));
    for (; k < K; k++) t += a[k] * b[k];
    return t;
}

/* -- matrix-vector products ---------------------------------------------------------------- */

/* MB activation rows against R consecutive weight rows: each weight vector loaded once is used
 * for every activation row, each activation vector for every weight row. */
ALWAYS_INLINE void f32_block(const int MB, const int R, const float *x, int64_t K, const float *w,
                             const float *bias, float *y, int64_t N, int accumulate) {
    __m256 acc[2][4];
    for (int j = 0; j < MB; j++)
        for (int r = 0; r < R; r++) acc[j][r] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) {
        __m256 xv[2];
        for (int j = 0; j < MB; j++) xv[j] = _mm256_loadu_ps(x + j * K + k);
        for (int r = 0; r < R; r++) {
            const __m256 wv = _mm256_loadu_ps(w + r * K + k);
            for (int j = 0; j < MB; j++) acc[j][r] = _mm256_fmadd_ps(wv, xv[j], acc[j][r]);
        }
    }
    for (int j = 0; j < MB; j++)
        for (int r = 0; r < R; r++) {
            float t = hsum(acc[j][r]);
            for (int64_t q = k; q < K; q++) t += x[j * K + q] * w[r * K + q];
            if (bias) t += bias[r];
            float *dst = y + j * N + r;
            *dst = accumulate ? *dst + t : t;
        }
}

/* Output-channel blocks [first, last) of y (+)= x w^T + bias: the work of one thread. */
static void gemv_blocks(const float *x, int64_t M, int64_t K, const float *w, const float *bias, int64_t N,
                        float *y, int accumulate, int64_t first, int64_t last) {
    for (int64_t blk = first; blk < last; blk++) {
        const int64_t n = blk * 4;
        const int R = N - n >= 4 ? 4 : (int)(N - n);
        const float *wn = w + n * K, *bn = bias ? bias + n : NULL;
        int64_t m = 0;
        for (; m + 2 <= M; m += 2) {
            if (R == 4) f32_block(2, 4, x + m * K, K, wn, bn, y + m * N + n, N, accumulate);
            else for (int r = 0; r < R; r++)
                f32_block(2, 1, x + m * K, K, wn + r * K, bn ? bn + r : NULL, y + m * N + n + r, N, accumulate);
        }
        if (m < M) {
            if (R == 4) f32_block(1, 4, x + m * K, K, wn, bn, y + m * N + n, N, accumulate);
            else for (int r = 0; r < R; r++)
                f32_block(1, 1, x + m * K, K, wn + r * K, bn ? bn + r : NULL, y + m * N + n + r, N, accumulate);
        }
    }
}

/* The calling thread's share of the product, inside a parallel region (no barrier). */
static void gemv_share(const float *x, int64_t M, int64_t K, const float *w, const float *bias, int64_t N,
                       float *y, int accumulate) {
    const int64_t blocks = (N + 3) / 4, t = omp_get_thread_num(), T = omp_get_num_threads();
    gemv_blocks(x, M, K, w, bias, N, y, accumulate, blocks * t / T, blocks * (t + 1) / T);
}

void harness_gemv_f32(const float *x, int64_t M, int64_t K, const float *w, const float *bias, int64_t N,
                      float *y, int accumulate, int threads) {
#pragma omp parallel num_threads(threads)
    gemv_share(x, M, K, w, bias, N, y, accumulate);
}

/* -- norms and the gated activation --------------------------------------------------------- */


/* x / (1 + e^-x) for 8 floats: e^-x from Cephes' expf polynomial (about 1 ulp; -x clamped to
 * [-87, 88], where e^-x and its exponent bits stay normal floats). */
ALWAYS_INLINE __m256 silu8(__m256 x) {
    const __m256 t = _mm256_max_ps(_mm256_min_ps(_mm256_sub_ps(_mm256_setzero_ps(), x), _mm256_set1_ps(88.0f)),
                                   _mm256_set1_ps(-87.0f));
    __m256 fx = _mm256_round_ps(_mm256_mul_ps(t, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), t);
    r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500E-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507E-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073E-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894E-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459E-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201E-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
    const __m256 ex = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
    return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), ex));
}

/* The calling thread's share of out = silu(gate) * up over M rows of F (no barrier). */
static void silu_share(const float *gu, int64_t M, int64_t F, float *out) {
    const int64_t t = omp_get_thread_num(), T = omp_get_num_threads();
    for (int64_t m = 0; m < M; m++) {
        const float *g = gu + m * 2 * F, *u = g + F;
        float *o = out + m * F;
        int64_t f = (F / 8 * t / T) * 8, end = t == T - 1 ? F : (F / 8 * (t + 1) / T) * 8;
        for (; f + 8 <= end; f += 8)
            _mm256_storeu_ps(o + f, _mm256_mul_ps(silu8(_mm256_loadu_ps(g + f)), _mm256_loadu_ps(u + f)));
        for (; f < end; f++) o[f] = g[f] / (1.0f + expf(-g[f])) * u[f];
    }
}

void harness_silu_mul(const float *gu, int64_t M, int64_t F, float *out, int threads) {
#pragma omp parallel num_threads(threads)
    silu_share(gu, M, F, out);
}

/* -- rotary, cache and attention ------------------------------------------------------------ */

/* Rotate-half rotary of one head in place: the pairs are (i, i + D/2). */
ALWAYS_INLINE void rotate(float *x, const float *cos, const float *sin, int64_t D) {
    const int64_t half = D / 2;
    for (int64_t i = 0; i < half; i++) {
        const float a = x[i], b = x[i + half];
        x[i] = a * cos[i] - b * sin[i];
        x[i + half] = b * cos[i + half] + a * sin[i + half];
    }
}

/* The shapes of one step: qkv [B, (H + 2 KH) D] holds each row's q heads, then its k heads, then
 * its v heads. Row b is at position positions[b] of cache row rows[b] (rows NULL: row b); caches
 * [Bc, KH, S, D]; cos, sin [P, D] tables by position, P >= S. */
typedef struct {
    int64_t B, H, KH, D, S;
    const int64_t *positions, *rows;
    const float *cos, *sin;
    float scale;
} Heads;

/* Rotary on every row's q and k heads, and k and v into the cache (one thread: a few kB). */
static void rope_and_store(const Heads *a, float *qkv, float *kcache, float *vcache) {
    const int64_t width = (a->H + 2 * a->KH) * a->D, D = a->D;
    for (int64_t b = 0; b < a->B; b++) {
        const int64_t pos = a->positions[b], row = a->rows ? a->rows[b] : b;
        float *q = qkv + b * width, *k = q + a->H * D, *v = k + a->KH * D;
        for (int64_t h = 0; h < a->H + a->KH; h++) rotate(q + h * D, a->cos + pos * D, a->sin + pos * D, D);
        for (int64_t h = 0; h < a->KH; h++) {
            memcpy(kcache + ((row * a->KH + h) * a->S + pos) * D, k + h * D, sizeof(float) * (size_t)D);
            memcpy(vcache + ((row * a->KH + h) * a->S + pos) * D, v + h * D, sizeof(float) * (size_t)D);
        }
    }
}

/* Softmax attention of q head h of row b over its kv head's slots 0..position; p holds S floats. */
static void attend(const Heads *a, const float *qkv, const float *kcache, const float *vcache, int64_t b, int64_t h,
                   float *out, float *p) {
    const int64_t D = a->D, n = a->positions[b] + 1, row = a->rows ? a->rows[b] : b;
    const int64_t kv = (row * a->KH + h / (a->H / a->KH)) * a->S * D;
    const float *q = qkv + b * (a->H + 2 * a->KH) * D + h * D, *keys = kcache + kv, *values = vcache + kv;
    float *o = out + (b * a->H + h) * D;
    float top = -INFINITY;
    for (int64_t j = 0; j < n; j++) {
        p[j] = dot(q, keys + j * D, D) * a->scale;
        if (p[j] > top) top = p[j];
    }
    float total = 0.0f;
    for (int64_t j = 0; j < n; j++) total += (p[j] = expf(p[j] - top));
    const float inv = 1.0f / total;
    for (int64_t d = 0; d < D; d++) o[d] = 0.0f;
    for (int64_t j = 0; j < n; j++) {
        const __m256 pv = _mm256_set1_ps(p[j] * inv);
        const float *vj = values + j * D;
        int64_t d = 0;
        for (; d + 8 <= D; d += 8)
            _mm256_storeu_ps(o + d, _mm256_fmadd_ps(pv, _mm256_loadu_ps(vj + d), _mm256_loadu_ps(o + d)));
        for (; d < D; d++) o[d] += p[j] * inv * vj[d];
    }
}

static int positions_fit(const Heads *a) {
    for (int64_t b = 0; b < a->B; b++)
        if (a->positions[b] < 0 || a->positions[b] >= a->S) return 0;
    return 1;
}

/* out [B, H D]. scores: threads x S floats of scratch. Returns 0, or -1 where a position is
 * outside the cache. */
int harness_rope_attend(float *qkv, int64_t B, int64_t H, int64_t KH, int64_t D, const int64_t *positions,
                        const int64_t *rows, const float *cos, const float *sin, float *kcache, float *vcache,
                        int64_t S, float scale, float *out, float *scores, int threads) {
    const Heads a = {B, H, KH, D, S, positions, rows, cos, sin, scale};
    if (!positions_fit(&a)) return -1;
    rope_and_store(&a, qkv, kcache, vcache);
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t task = 0; task < B * H; task++)
        attend(&a, qkv, kcache, vcache, task / H, task % H, out, scores + omp_get_thread_num() * S);
    return 0;
}

/* -- every layer in one call ---------------------------------------------------------------- */

/* One layer's float32 weights (biases may be NULL). */
typedef struct {
    const float *attn_norm, *ffn_norm;
    const float *wqkv, *bqkv, *wo, *bo, *w13, *b13, *w2, *b2;
} Layer;

/* x [B, dim] is the residual stream, updated in place; h [B, dim], qkv, att [B, H D], gu [B, 2F],
 * act [B, F] and scores [threads, S] are scratch. After the layers, out [B, dim] gets the final
 * norm (weight norm) of x, and where head is not NULL, logits [B, vocab] the head's product. */
typedef struct {
    Heads heads;
    int64_t dim, F, vocab;
    float eps;
    float *x, *h, *qkv, *att, *gu, *act, *scores;
    const float *norm, *head;
    float *out, *logits;
} Step;

static void rmsnorm_rows(const float *x, int64_t M, int64_t D, const float *w, float eps, float *out) {
    for (int64_t m = 0; m < M; m++) {
        const float *xm = x + m * D;
        float *om = out + m * D;
        const float inv = 1.0f / sqrtf(dot(xm, xm, D) / (float)D + eps);
        for (int64_t d = 0; d < D; d++) om[d] = w[d] * (xm[d] * inv);
    }
}

/* kcaches[l], vcaches[l]: layer l's caches, passed apart from the weights since each generation
 * allocates new ones. */
int harness_decode_layers(const Step *s, const Layer *layers, float *const *kcaches, float *const *vcaches,
                          int64_t n_layers, int threads) {
    const Heads *a = &s->heads;
    if (!positions_fit(a)) return -1;
    const int64_t B = a->B, dim = s->dim, qkv_n = (a->H + 2 * a->KH) * a->D, q_n = a->H * a->D;
#pragma omp parallel num_threads(threads)
    {
        float *scores = s->scores + omp_get_thread_num() * a->S;
        for (int64_t l = 0; l < n_layers; l++) {
            const Layer *L = layers + l;
#pragma omp single
            rmsnorm_rows(s->x, B, dim, L->attn_norm, s->eps, s->h);
            gemv_share(s->h, B, dim, L->wqkv, L->bqkv, qkv_n, s->qkv, 0);
#pragma omp barrier
#pragma omp single
            rope_and_store(a, s->qkv, kcaches[l], vcaches[l]);
#pragma omp for schedule(static)
            for (int64_t task = 0; task < B * a->H; task++)
                attend(a, s->qkv, kcaches[l], vcaches[l], task / a->H, task % a->H, s->att, scores);
            gemv_share(s->att, B, q_n, L->wo, L->bo, dim, s->x, 1);
#pragma omp barrier
#pragma omp single
            rmsnorm_rows(s->x, B, dim, L->ffn_norm, s->eps, s->h);
            gemv_share(s->h, B, dim, L->w13, L->b13, 2 * s->F, s->gu, 0);
#pragma omp barrier
            silu_share(s->gu, B, s->F, s->act);
#pragma omp barrier
            gemv_share(s->act, B, s->F, L->w2, L->b2, dim, s->x, 1);
#pragma omp barrier
        }
#pragma omp single
        rmsnorm_rows(s->x, B, dim, s->norm, s->eps, s->out);
        if (s->head) gemv_share(s->out, B, dim, s->head, NULL, s->vocab, s->logits, 0);
    }
    return 0;
}

void harness_rmsnorm(const float *x, int64_t M, int64_t D, const float *w, float eps, float *out) {
    rmsnorm_rows(x, M, D, w, eps, out);
}
