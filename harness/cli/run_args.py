"""Argument forms `harness run` shares with lm-evaluation-harness: key=value lists, comma lists, seeds.

lm-evaluation-harness users type `--model_args dtype=bfloat16,max_length=2048`,
`--gen_kwargs temperature=0,max_gen_toks=64`, `--tasks a,b` and `--seed 0,1234,1234,1234`; these
parse them with its meaning (values typed as its `handle_arg_string` does) and refuse what would
be silently ignored.
"""

from __future__ import annotations

import argparse
import inspect
from typing import Any

from harness.errors import HarnessError

# lm-eval's --seed slots: python, numpy, torch, few-shot. One seed drives everything here (few-shot
# sampling, sampled generation, bootstrap); a list gives it the few-shot slot, the one that
# changes prompts.
SEED_SLOTS = ("python", "numpy", "torch", "fewshot")
LMEVAL_DEFAULT_SEEDS = (0, 1234, 1234, 1234)

# What --model-args keys become: RunOptions fields, else backend options.
RUN_OPTION_KEYS = {"dtype": "dtype", "device": "device", "batch_size": "batch_size",
                   "trust_remote_code": "trust_remote_code"}


class CommaList(argparse.Action):
    """`--tasks a,b c` -> ['a', 'b', 'c'] (repeatable), as lm-eval's SplitArgs."""

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: ANN001
        items = list(getattr(namespace, self.dest) or [])
        for value in values if isinstance(values, list) else [values]:
            items.extend(v for v in value.split(",") if v)
        setattr(namespace, self.dest, items)


class KeyValues(argparse.Action):
    """`--model-args a=1,b=x c=2` -> {'a': 1, 'b': 'x', 'c': 2} (repeatable; later keys win)."""

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: ANN001
        merged = dict(getattr(namespace, self.dest) or {})
        for value in values if isinstance(values, list) else [values]:
            try:
                merged.update(parse_key_values(value))
            except HarnessError as err:
                parser.error(f"argument {option_string}: {err}")
        setattr(namespace, self.dest, merged)


def split_top_level(text: str) -> list[str]:
    """Split at commas outside brackets and quotes: 'until=["a","b"],x=1' -> two items."""
    items, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return [item.strip() for item in items if item.strip()]


def typed_value(text: str) -> Any:
    """A value as lm-eval types it: true/false/none, integers, floats, quoted strings, JSON lists."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    lower = text.lower()
    if lower in ("true", "false"):
        return lower == "true"
    if lower == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if text[:1] in "[{":
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            pass
    return text


def parse_key_values(text: str) -> dict[str, Any]:
    """'k=v,k2=v2' (or a JSON object) -> a dict with typed values."""
    text = text.strip()
    if text.startswith("{"):
        import json

        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            raise HarnessError(f"{text!r} is not a JSON object ({err.msg})") from None
        if not isinstance(value, dict):
            raise HarnessError(f"{text!r} is not a JSON object")
        return value
    out = {}
    for item in split_top_level(text):
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise HarnessError(f"expected key=value, got {item!r}")
        out[key.strip()] = typed_value(raw)
    return out


def parse_seed(text: str) -> list[int | None]:
    """`42` -> [42]; `0,1234,1234,1234` or `0,None,8` (lm-eval's slots) -> the list."""
    items = []
    for part in text.split(","):
        part = part.strip()
        if part.lower() == "none":
            items.append(None)
            continue
        try:
            items.append(int(part))
        except ValueError:
            raise argparse.ArgumentTypeError(f"seed must be an integer or a comma list of integers/None, not {text!r}") from None
    if len(items) not in (1, 3, 4):
        raise argparse.ArgumentTypeError(f"--seed takes one integer or 3-4 comma-separated slots "
                                         f"({','.join(SEED_SLOTS)}), not {len(items)}")
    return items


def run_seed(seeds: list[int | None] | None) -> int | None:
    """The one seed of a run: the integer given, or the few-shot slot of lm-eval's list."""
    if not seeds:
        return None
    if len(seeds) == 1:
        return seeds[0]
    full = list(seeds) + list(LMEVAL_DEFAULT_SEEDS[len(seeds):])
    return full[SEED_SLOTS.index("fewshot")]


def parse_bool(text: str) -> bool:
    lower = text.strip().lower()
    if lower in ("true", "1", "yes", "on"):
        return True
    if lower in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def backend_options(spec: str) -> tuple[str, list[str]]:
    """The backend of a model spec and the option names its constructor takes."""
    import importlib

    from harness.models import BACKENDS, split_spec

    backend, _ = split_spec(spec)
    module_name, _, class_name = BACKENDS[backend].partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except ModuleNotFoundError:
        return backend, []  # load_model names the missing package
    accepted = getattr(cls, "accepted_options", None)
    if accepted is None:
        params = inspect.signature(cls.__init__).parameters.values()
        accepted = [p.name for p in params if p.kind == p.KEYWORD_ONLY]
    return backend, sorted(accepted)


def check_model_args(specs: list[str], model_args: dict[str, Any]) -> None:
    """Refuse a --model-args key that some model's backend does not take, naming the valid ones."""
    for spec in specs:
        backend, accepted = backend_options(spec)
        if not accepted:
            continue
        unknown = sorted(set(model_args) - set(accepted))
        if unknown:
            raise HarnessError(f"--model-args {unknown[0]}: the {backend} backend ({spec}) takes "
                               f"{', '.join(accepted)}")


def resolve_models(models: list[str] | None, model_args: dict[str, Any]) -> list[str] | None:
    """lm-eval's `--model hf --model-args pretrained=NAME` -> the spec `hf:NAME`."""
    from harness.models import BACKENDS

    pretrained = model_args.pop("pretrained", None)
    if pretrained is None:
        return models
    if not models:
        return [str(pretrained)]
    if len(models) == 1 and models[0] in BACKENDS:
        return [f"{models[0]}:{pretrained}"]
    raise HarnessError("--model-args pretrained=NAME goes with one --model naming a backend "
                       f"({', '.join(BACKENDS)}), e.g. --model hf --model-args pretrained={pretrained}")
