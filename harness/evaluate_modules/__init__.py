"""Every harness generation metric as an `evaluate` module that loads offline from this package.

    import evaluate
    from harness import evaluate_modules

    bleu = evaluate.load(evaluate_modules.path("bleu"))            # a local file: never the hub
    bleu.compute(predictions=hyps, references=refs, lang="zh")     # or tokenize="zh"
    suite = evaluate.combine([evaluate.load(evaluate_modules.path(m)) for m in ("bleu", "chrf", "rougeL")])
    suite.compute(predictions=hyps, references=refs)

Each module file is two lines over `harness.evaluate_modules.template`, which runs the harness
metric (same numbers as `harness score`) and returns NAME, NAME_stderr, NAME_ci_low, NAME_ci_high
and NAME_signature. Metric options go to `evaluate.load(path, **options)` or to `compute(...)`.
This package does not import `evaluate`; only the module files do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.errors import HarnessError

NAMES = (
    "bleu",
    "chrf",
    "chrf_pp",
    "ter",
    "rouge1",
    "rouge2",
    "rougeL",
    "rougeLsum",
    "token_f1",
    "distinct_1",
    "distinct_2",
    "embedding_similarity",
    "exact_match",
    "judge_rating",
)
DIRECTORY = Path(__file__).resolve().parent


def path(name: str) -> str:
    """The module file for a metric, to pass to `evaluate.load`."""
    if name not in NAMES:
        raise HarnessError(f"no evaluate module for metric {name!r}; available: {', '.join(NAMES)}")
    return str(DIRECTORY / f"{name}.py")


def load(name: str, **options: Any) -> Any:
    """`evaluate.load(path(name), **options)`."""
    import evaluate

    return evaluate.load(path(name), **options)
