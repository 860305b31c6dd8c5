"""ROUGE + BLEU + chrF on 10,000 pairs: seconds per metric, the harness beside the plain libraries.

    .venv/bin/python benchmarks/bench_metrics.py [--pairs 10000] [--bootstrap 1000]

The pairs are English references from tasks/translation/en_fr.jsonl (cycled) and hypotheses made
from them by seeded word drops, substitutions and swaps. "harness" is sample_stats + aggregate
(the value), "library" the plain call (rouge-score's RougeScorer.score per pair with all four
ROUGE types in one scorer, against the harness's four metrics one after another; sacrebleu's corpus_bleu / corpus_chrf). The bootstrap column is the
extra time of the seeded 95% CI (stats.summarize), which the libraries do not compute.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_pairs(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rows = [
        json.loads(line) for line in (ROOT / "tasks/translation/en_fr.jsonl").read_text().splitlines() if line.strip()
    ]
    sentences = [r["en"] for r in rows]
    vocab = sorted({w for s in sentences for w in s.split()})
    rng = random.Random(seed)
    hyps, refs = [], []
    for i in range(n):
        ref = sentences[i % len(sentences)]
        words = ref.split()
        out = []
        for w in words:
            r = rng.random()
            if r < 0.1:
                continue  # drop
            out.append(rng.choice(vocab) if r < 0.2 else w)  # substitute
        if len(out) > 3 and rng.random() < 0.5:
            j = rng.randrange(len(out) - 1)
            out[j], out[j + 1] = out[j + 1], out[j]
        hyps.append(" ".join(out))
        refs.append(ref)
    return hyps, refs


REPEAT = 2


def timed(fn):
    """Best of REPEAT runs (this machine is shared), and the value."""
    best = float("inf")
    for _ in range(REPEAT):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return best, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--bootstrap", type=int, default=1000, help="resamples for the CI timing (0: skip)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per timing; the best is printed")
    args = parser.parse_args()
    global REPEAT
    REPEAT = max(1, args.repeat)

    import sacrebleu
    from rouge_score import rouge_scorer

    from harness.metrics.base import Sample, get_metric
    from harness.metrics.stats import summarize

    hyps, refs = make_pairs(args.pairs)
    samples = [Sample(str(i), "generate_until", target=r, prediction=h) for i, (h, r) in enumerate(zip(hyps, refs))]
    rouge_types = ["rouge1", "rouge2", "rougeL", "rougeLsum"]

    def harness_metric(name: str):
        metric = get_metric(name)
        stats = metric.sample_stats(samples)
        return metric, stats, metric.aggregate(stats)

    def library_rouge():
        scorer = rouge_scorer.RougeScorer(rouge_types)
        scores = [scorer.score(r, h) for h, r in zip(hyps, refs)]
        return {t: sum(s[t].fmeasure for s in scores) / len(scores) for t in rouge_types}

    rows = []
    t_lib, lib_rouge = timed(library_rouge)

    def harness_rouge():
        from harness.metrics.overlap import _tokens

        _tokens.cache_clear()  # each timed run starts cold, as a fresh process would
        return [harness_metric(t) for t in rouge_types]

    t_ours, results = timed(harness_rouge)
    boot = 0.0
    for t, (metric, stats, value) in zip(rouge_types, results):
        assert abs(value - lib_rouge[t]) < 1e-12, (t, value, lib_rouge[t])
        if args.bootstrap:
            boot += timed(lambda: summarize(metric, stats, n_boot=args.bootstrap))[0]
    rows.append(("ROUGE 1/2/L/Lsum", t_ours, t_lib, boot))

    for name, library in (
        ("bleu", lambda: sacrebleu.corpus_bleu(hyps, [refs]).score),
        ("chrf", lambda: sacrebleu.corpus_chrf(hyps, [refs]).score),
    ):
        t_lib, lib_value = timed(library)
        t_ours, (metric, stats, value) = timed(lambda name=name: harness_metric(name))
        assert value == lib_value, (name, value, lib_value)
        boot = timed(lambda: summarize(metric, stats, n_boot=args.bootstrap))[0] if args.bootstrap else 0.0
        rows.append((name.upper() if name == "bleu" else "chrF", t_ours, t_lib, boot))

    print(f"{args.pairs} pairs; values identical to the libraries; bootstrap {args.bootstrap} resamples")
    print(f"{'metric':<18}{'harness s':>11}{'library s':>11}{'ratio':>8}{'bootstrap s':>13}")
    for name, ours_s, lib_s, boot_s in rows:
        print(f"{name:<18}{ours_s:>11.2f}{lib_s:>11.2f}{ours_s / lib_s:>8.2f}{boot_s:>13.2f}")
    total_ours = sum(r[1] for r in rows)
    total_lib = sum(r[2] for r in rows)
    print(
        f"{'total':<18}{total_ours:>11.2f}{total_lib:>11.2f}{total_ours / total_lib:>8.2f}{sum(r[3] for r in rows):>13.2f}"
    )


if __name__ == "__main__":
    main()
