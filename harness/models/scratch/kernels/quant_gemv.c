/* Weight-only quantized matrix products for a few activation rows, AVX2 + FMA, OpenMP over output
 * channels: y[m, n] = sum_k x[m, k] * w[n, k] (+ bias[n]) for x float32 [M, K] row-major.
 *
 *   int8:  w[n, k] = scales[n] * q[n, k], q int8 [N, K]
 *   int4:  w[n, k] = (q[n, k] - 8) * s[n, g] + z[n, g], g = k / group, q packed two per byte in
 *          [N, K / 2] (element 2i in the low nibble, 2i + 1 in the high), sz float32 [N, K / group, 2]
 *          holding (s, z): one output channel's scales side by side, read with its weights.
 *          Per group: s * sum_k x_k q_k + (z - 8 s) * sum_k x_k, the second sum taken once per
 *          call for all output channels.
 *
 * Loaded by harness/models/scratch/cpu_quant_kernel.py through ctypes, compiled with
 * -O3 -mavx2 -mfma -fopenmp. Each output channel's weight row is read from memory once and kept in
 * L1 while up to four activation rows at a time are multiplied with it (the row is widened to
 * float once per block of rows). The caller checks shapes, dtypes and contiguity. The sums run in
 * another order than a float GEMM's, so results agree with the dequantized product to float32
 * rounding, not bit for bit.
 */
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>

#define ALWAYS_INLINE static inline __attribute__((always_inline))

int harness_qgemv_abi(void) { return 1; }

ALWAYS_INLINE float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

ALWAYS_INLINE __m256 widen8(const int8_t *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}

/* -- int8 ---------------------------------------------------------------------------------- */

/* MB activation rows against one weight row; U independent accumulators per row (U = 2 or 4). */
ALWAYS_INLINE void int8_rows(const int MB, const int U, const float *x, int64_t K, const int8_t *w,
                             float scale, float bias, float *y, int64_t N) {
    __m256 acc[4][4];
    for (int j = 0; j < MB; j++)
        for (int u = 0; u < U; u++) acc[j][u] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 * U <= K; k += 8 * U) {
        __m256 wv[4];
        for (int u = 0; u < U; u++) wv[u] = widen8(w + k + 8 * u);
        for (int j = 0; j < MB; j++)
            for (int u = 0; u < U; u++)
                acc[j][u] = _mm256_fmadd_ps(wv[u], _mm256_loadu_ps(x + j * K + k + 8 * u), acc[j][u]);
    }
    for (; k + 8 <= K; k += 8) {
        __m256 wv = widen8(w + k);
        for (int j = 0; j < MB; j++) acc[j][0] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + j * K + k), acc[j][0]);
    }
    for (int j = 0; j < MB; j++) {
        __m256 a = acc[j][0];
        for (int u = 1; u < U; u++) a = _mm256_add_ps(a, acc[j][u]);
        float t = hsum(a);
        for (int64_t r = k; r < K; r++) t += x[j * K + r] * (float)w[r];
        y[j * N] = scale * t + bias;
    }
}

void harness_gemv_int8(const float *x, int64_t M, int64_t K, const int8_t *q, const float *scales,
                       const float *bias, int64_t N, float *y, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t n = 0; n < N; n++) {
        const int8_t *w = q + n * K;
        const float s = scales[n], b = bias ? bias[n] : 0.0f;
        int64_t m = 0;
        for (; m + 4 <= M; m += 4) int8_rows(4, 2, x + m * K, K, w, s, b, y + m * N + n, N);
        switch (M - m) {
        case 3: int8_rows(3, 2, x + m * K, K, w, s, b, y + m * N + n, N); break;
        case 2: int8_rows(2, 2, x + m * K, K, w, s, b, y + m * N + n, N); break;
        case 1: int8_rows(1, 4, x + m * K, K, w, s, b, y + m * N + n, N); break;
        default: break;
        }
    }
}

/* -- int4 ----------------------------------------------------------------------------------
 * Eight packed bytes hold 16 consecutive inputs' values: the even-indexed ones in the low nibbles,
 * the odd-indexed ones in the high nibbles. The activations are reordered once per call to match
 * (each run of 16 inputs as its 8 even-indexed, then its 8 odd-indexed values), so widening the
 * bytes and taking each nibble gives two vectors of 8 floats with no shuffle per weight. The -8 of
 * w = (q - 8) s + z goes into the group term: s sum x q + (z - 8 s) sum x. */

/* x [M, K] -> xp [M, K] reordered as above, and xs [M, K / group] each group's sum of x. */
static void int4_prepare(const float *x, int64_t M, int64_t K, int64_t group, float *xp, float *xs) {
    const int64_t G = K / group;
    for (int64_t m = 0; m < M; m++) {
        for (int64_t k = 0; k < K; k += 16) {
            __m256 a = _mm256_loadu_ps(x + m * K + k), b = _mm256_loadu_ps(x + m * K + k + 8);
            /* shuffle_ps works per 128-bit lane: [a0 a2 b0 b2 | a4 a6 b4 b6], then the 64-bit
             * quarters into order */
            __m256 ev = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
            __m256 od = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
            ev = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(ev), _MM_SHUFFLE(3, 1, 2, 0)));
            od = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(od), _MM_SHUFFLE(3, 1, 2, 0)));
            _mm256_storeu_ps(xp + m * K + k, ev);
            _mm256_storeu_ps(xp + m * K + k + 8, od);
        }
        for (int64_t g = 0; g < G; g++) {
            const float *xr = x + m * K + g * group;
            __m256 a = _mm256_setzero_ps();
            for (int64_t c = 0; c < group; c += 8) a = _mm256_add_ps(a, _mm256_loadu_ps(xr + c));
            xs[m * G + g] = hsum(a);
        }
    }
}

/* MB reordered activation rows against one packed weight row n and its G (s, z) pairs sz; T
 * running totals per row (two with one or two rows, for even and odd groups, so that the chain of
 * per-group products does not bound the loop; T divides G). GROUP is a constant where the caller
 * can make it one (the inner loop then unrolls). */
ALWAYS_INLINE void int4_rows(const int MB, const int T, const int64_t GROUP, const float *xp, const float *xs,
                             int64_t K, const uint8_t *w, const float *sz, float bias, float *y, int64_t N) {
    const int64_t G = K / GROUP;
    const __m256i low = _mm256_set1_epi32(0x0F);
    __m256 tot[4][2];
    float zsum[4];
    for (int j = 0; j < MB; j++) {
        zsum[j] = 0.0f;
        for (int t = 0; t < T; t++) tot[j][t] = _mm256_setzero_ps();
    }
    for (int64_t g0 = 0; g0 < G; g0 += T) {
        for (int t = 0; t < T; t++) {
            const int64_t g = g0 + t;
            const float s = sz[2 * g], z = sz[2 * g + 1] - 8.0f * s;
            const uint8_t *wg = w + g * (GROUP / 2);
            const float *xg = xp + g * GROUP;
            __m256 a0[4], a1[4];
            for (int j = 0; j < MB; j++) a0[j] = _mm256_setzero_ps(), a1[j] = _mm256_setzero_ps();
            for (int64_t c = 0; c < GROUP; c += 16) {
                __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(wg + c / 2)));
                __m256 flo = _mm256_cvtepi32_ps(_mm256_and_si256(v, low));
                __m256 fhi = _mm256_cvtepi32_ps(_mm256_srli_epi32(v, 4));
                for (int j = 0; j < MB; j++) {
                    a0[j] = _mm256_fmadd_ps(flo, _mm256_loadu_ps(xg + j * K + c), a0[j]);
                    a1[j] = _mm256_fmadd_ps(fhi, _mm256_loadu_ps(xg + j * K + c + 8), a1[j]);
                }
            }
            const __m256 sv = _mm256_set1_ps(s);
            for (int j = 0; j < MB; j++) {
                tot[j][t] = _mm256_fmadd_ps(sv, _mm256_add_ps(a0[j], a1[j]), tot[j][t]);
                zsum[j] += z * xs[j * G + g];
            }
        }
    }
    for (int j = 0; j < MB; j++) {
        __m256 a = tot[j][0];
        for (int t = 1; t < T; t++) a = _mm256_add_ps(a, tot[j][t]);
        y[j * N] = hsum(a) + zsum[j] + bias;
    }
}

/* int4_rows with the group size as a constant for the sizes offered (32, 64, 128). */
#define INT4_ROWS(MB, T)                                                                              \
    do {                                                                                              \
        const float *xpm = xp + m * K, *xsm = xs + m * G;                                             \
        float *ym = y + m * N + n;                                                                    \
        switch (group) {                                                                              \
        case 32: int4_rows(MB, T, 32, xpm, xsm, K, w, s, b, ym, N); break;                           \
        case 64: int4_rows(MB, T, 64, xpm, xsm, K, w, s, b, ym, N); break;                           \
        case 128: int4_rows(MB, T, 128, xpm, xsm, K, w, s, b, ym, N); break;                         \
        default: int4_rows(MB, T, group, xpm, xsm, K, w, s, b, ym, N); break;                        \
        }                                                                                             \
    } while (0)

/* Returns 0, or -1 where the shapes do not fit (group not a multiple of 16 dividing K) or memory
 * for the reordered activations could not be had. */
int harness_gemv_int4(const float *x, int64_t M, int64_t K, const uint8_t *q, const float *sz,
                      int64_t group, const float *bias, int64_t N, float *y, int threads) {
    if (group <= 0 || group % 16 || K % group || M < 0) return -1;
    if (M == 0) return 0;
    const int64_t G = K / group;
    float *xp = (float *)malloc(sizeof(float) * (size_t)(M * K + M * G));
    if (!xp) return -1;
    float *xs = xp + M * K;
    int4_prepare(x, M, K, group, xp, xs);
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t n = 0; n < N; n++) {
        const uint8_t *w = q + n * (K / 2);
        const float *s = sz + 2 * n * G;
        const float b = bias ? bias[n] : 0.0f;
        int64_t m = 0;
        for (; m + 4 <= M; m += 4) INT4_ROWS(4, 1);
        switch (M - m) {
        case 3: INT4_ROWS(3, 1); break;
        case 2: if (G % 2) INT4_ROWS(2, 1); else INT4_ROWS(2, 2); break;
        case 1: if (G % 2) INT4_ROWS(1, 1); else INT4_ROWS(1, 2); break;
        default: break;
        }
    }
    free(xp);
    return 0;
}
