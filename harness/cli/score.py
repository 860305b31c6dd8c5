"""`harness score`: score predictions you already have against references, with 95% CIs.

    harness score --metric bleu --metric chrf --predictions hyp.txt --references ref.txt --lang zh
    harness score -m rougeL -m token_f1 --predictions out.jsonl --prediction-field output --json

The computation is harness/metrics/scoring.py (score_files).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

HELP = "score predictions you already have against references, with 95% CIs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `harness score` options to a (sub)parser."""
    from harness.metrics.scoring import generation_metrics

    parser.add_argument(
        "--metric",
        "-m",
        action="append",
        required=True,
        metavar="NAME",
        help="metric to compute (repeatable); one of: " + ", ".join(generation_metrics()),
    )
    parser.add_argument(
        "--predictions", "-p", required=True, metavar="FILE", help="model outputs: plain text (one per line) or .jsonl"
    )
    parser.add_argument(
        "--references",
        "-r",
        action="append",
        default=None,
        metavar="FILE",
        help="references, plain text or .jsonl; repeat for several references per item",
    )
    parser.add_argument(
        "--lang", default=None, help="target language (e.g. zh): picks the BLEU/TER tokenizer and the ROUGE tokenizer"
    )
    parser.add_argument(
        "--prediction-field",
        default="prediction",
        metavar="F",
        help="field of a .jsonl predictions file (default: prediction)",
    )
    parser.add_argument(
        "--reference-field",
        default="reference",
        metavar="F",
        help="field of a .jsonl references file, a string or a list of strings (default: reference)",
    )
    parser.add_argument(
        "--option",
        "-o",
        action="append",
        default=[],
        metavar="[METRIC.]KEY=VALUE",
        help="metric option, e.g. bleu.tokenize=char or use_stemmer=true (repeatable)",
    )
    parser.add_argument(
        "--bootstrap", type=int, default=1000, metavar="N", help="bootstrap resamples for the CI (default 1000)"
    )
    parser.add_argument("--seed", type=int, default=1234, help="bootstrap seed (default 1234)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")


def run(args: argparse.Namespace) -> int:
    """Score the files, print a table (or JSON). HarnessError for bad input; returns 0."""
    from harness.metrics.scoring import score_files

    result = score_files(
        metrics=args.metric,
        predictions=args.predictions,
        references=args.references,
        lang=args.lang,
        prediction_field=args.prediction_field,
        reference_field=args.reference_field,
        options=args.option,
        n_boot=args.bootstrap,
        seed=args.seed,
    )
    print(json.dumps(result, indent=2, ensure_ascii=False) if args.json else format_table(result))
    return 0


def format_table(result: dict[str, Any]) -> str:
    """A plain-text table: metric, value, stderr, 95% CI, n; then each metric's signature."""

    def num(x: float | None) -> str:
        return "-" if x is None else f"{x:.4f}"

    rows = [("metric", "value", "stderr", "95% CI", "n")]
    for name, m in result["metrics"].items():
        ci = "-" if m["ci_low"] is None else f"[{num(m['ci_low'])}, {num(m['ci_high'])}]"
        arrow = "↑" if m["higher_is_better"] else "↓"
        rows.append((f"{name} {arrow}", num(m["value"]), num(m["stderr"]), ci, str(m["n"])))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = []
    for name, m in result["metrics"].items():
        sig = m["signature"]
        text = sig.get("signature") if isinstance(sig, dict) else None
        if text:
            notes.append(f"{name}: {text}")
        if isinstance(sig, dict) and sig.get("unparseable"):
            notes.append(f"{name}: {sig['unparseable']} of {sig['judged']} verdicts unparseable (left out of the mean)")
    if notes:
        lines += [""] + notes
    return "\n".join(lines)
