"""`harness run`: evaluate models on tasks and print a results table.

lm-evaluation-harness's run flags work with its meaning: our spelling (`--num-fewshot`) and its
own (`--num_fewshot`) are the same option.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from harness.cli.common import positive_or_auto
from harness.cli.run_args import (
    RUN_OPTION_KEYS, CommaList, KeyValues, check_model_args, parse_bool, parse_seed, resolve_models, run_seed,
)
from harness.cli.tasks import add_task_code
from harness.errors import HarnessError
from harness.redact import redact_argv

HELP = "evaluate models on tasks and print a results table"
DESCRIPTION = "Evaluate each --model on each task. With no arguments: the `core` suite on scratch:smollm2-135m."

LMEVAL_TABLE = """\
coming from lm-evaluation-harness (its spellings work too):
  lm_eval                                 harness run
  --model hf --model_args pretrained=X    --model hf:X   (or the same lm-eval form)
  --model_args dtype=bfloat16,device=cuda --model-args dtype=bfloat16,device=cuda
  --tasks a,b                             --tasks a,b    (or --tasks a b)
  --num_fewshot 5                         --num-fewshot 5
  --apply_chat_template                   --apply-chat-template  (off by default, as lm-eval)
  --fewshot_as_multiturn false            --fewshot-as-multiturn false
  --system_instruction "..."              --system-instruction "..."
  --gen_kwargs temperature=0,max_gen_toks=64   --gen-kwargs temperature=0,max_gen_toks=64
  --output_path DIR --log_samples         --output DIR   (samples are always written)
  --seed 0,1234,1234,1234                 --seed 1234    (one seed; a list gives its few-shot slot)
  --device cuda --batch_size auto         --device auto --batch-size auto  (auto is the default device)
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = LMEVAL_TABLE
    p.add_argument("--model", "-m", action="append", dest="models", metavar="SPEC",
                   help="model spec: a built-in name (smollm2-135m, gemma3-270m), a local HF directory, a .gguf file "
                        "or a hub id, optionally prefixed by a backend (hf:, scratch:, llamacpp:, api:); "
                        "repeat to compare models")
    p.add_argument("--model-args", "--model_args", action=KeyValues, nargs="+", default={}, metavar="K=V,...",
                   help="backend options: dtype, device, batch_size, max_length, revision, trust_remote_code, "
                        "compile (scratch), n_threads (llamacpp), pretrained (lm-eval's model name); "
                        "unknown keys are refused")
    p.add_argument("--tasks", "-t", action=CommaList, nargs="+", metavar="TASK",
                   help="task names, tags, groups or globs, space- or comma-separated (default: core)")
    p.add_argument("--include-path", "--include_path", action="append", default=[], metavar="DIR",
                   help="extra folder of task YAML files (also $HARNESS_INCLUDE_PATH)")
    p.add_argument("--limit", type=int, metavar="N", help="evaluate only the first N documents of each task")
    p.add_argument("--num-fewshot", "--num_fewshot", type=int, metavar="N",
                   help="few-shot examples per prompt, for every task (default: each task's num_fewshot)")
    chat = p.add_mutually_exclusive_group()
    chat.add_argument("--apply-chat-template", "--apply_chat_template", nargs="?", const="true", default=None,
                      metavar="true|false", help="render prompts with the model's chat template (default: only "
                      "tasks whose file sets chat_template: auto or always, as lm-eval)")
    chat.add_argument("--no-chat-template", dest="apply_chat_template", action="store_const", const="false",
                      help="plain-text prompts for every task, whatever the task file says")
    p.add_argument("--fewshot-as-multiturn", "--fewshot_as_multiturn", type=parse_bool, nargs="?", const=True,
                   default=True, metavar="true|false",
                   help="with a chat template: each few-shot example its own user/assistant turn (default true, "
                        "as lm-eval with --apply_chat_template); false puts them in one user message")
    p.add_argument("--system-instruction", "--system_instruction", metavar="TEXT",
                   help="system prompt before the task's description (the system message with a chat template)")
    p.add_argument("--gen-kwargs", "--gen_kwargs", action=KeyValues, nargs="+", default={}, metavar="K=V,...",
                   help="generation settings for every generating task: until, max_gen_toks, temperature, "
                        "do_sample, top_p, top_k, repetition_penalty, seed")
    p.add_argument("--seed", type=parse_seed, metavar="N",
                   help="seed for few-shot sampling, sampled generation and bootstrap CIs; lm-eval's "
                        "python,numpy,torch,fewshot list is accepted (its few-shot slot is used)")
    p.add_argument("--batch-size", "--batch_size", type=positive_or_auto, default=8, metavar="B|auto",
                   help="batch size, or auto (on CUDA: halve and retry on out-of-memory); default 8")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="weights' dtype (default auto: bfloat16 on CUDA, float32 on CPU)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto: CUDA where torch "
                                                     "sees a GPU, else CPU)")
    p.add_argument("--compile", action="store_true",
                   help="scratch backend on CUDA: capture the decode step in CUDA graphs (torch.compile)")
    p.add_argument("--output", "--output-path", "--output_path", "-o", default="runs", metavar="DIR",
                   help="folder for the results JSON and per-sample JSONL (default runs/)")
    p.add_argument("--log-samples", "--log_samples", action="store_true",
                   help="accepted for lm-eval users: per-sample records are always written")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the response cache")
    p.add_argument("--cache-dir", metavar="DIR", help="response cache folder (default: $HARNESS_CACHE_DIR or ~/.cache/harness)")
    p.add_argument("--data-dir", metavar="DIR", help="local copies of hub datasets: DIR/<task>/<split>.jsonl or "
                   "DIR/<dataset_path>/<dataset_name or default>/<split>.jsonl (also $HARNESS_DATA_DIR)")
    p.add_argument("--trust-remote-code", "--trust_remote_code", action="store_true",
                   help="let transformers run a hub model's own Python code")
    add_task_code(p)
    p.add_argument("--allow-external-data", action="store_true",
                   help="let task files read data_files outside their own folder and --data-dir")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="bootstrap resamples for CIs (default 1000)")


def options_from_args(args: argparse.Namespace):  # noqa: ANN201 - RunOptions, imported lazily
    """The RunOptions and model specs an argument namespace asks for (HarnessError when inconsistent)."""
    from harness.config import GENERATION_KEYS
    from harness.runner import DEFAULT_MODEL, RunOptions

    chat = None if args.apply_chat_template is None else args.apply_chat_template.strip().lower()
    if chat not in (None, "true", "false"):
        raise HarnessError(f"--apply-chat-template {args.apply_chat_template!r}: named templates are not supported; "
                           "the model's own chat template is used (give no value, true or false)")
    unknown = sorted(set(args.gen_kwargs) - GENERATION_KEYS)
    if unknown:
        raise HarnessError(f"--gen-kwargs {unknown[0]}: not a generation setting; use {', '.join(sorted(GENERATION_KEYS))}")
    if Path(args.output).suffix.lower() == ".json":
        raise HarnessError(f"--output {args.output}: give a folder; the results go to FOLDER/<run id>.json "
                           "with the samples beside")
    model_args = dict(args.model_args)
    models = resolve_models(args.models, model_args)
    if args.compile:
        model_args["compile"] = True
    check_model_args(models or [DEFAULT_MODEL], model_args)
    run_fields = {"dtype": args.dtype, "device": args.device, "batch_size": args.batch_size,
                  "trust_remote_code": args.trust_remote_code}
    for key, field_name in RUN_OPTION_KEYS.items():
        if key in model_args:
            run_fields[field_name] = model_args.pop(key)
    if args.num_fewshot is not None and args.num_fewshot < 0:
        raise HarnessError("--num-fewshot cannot be negative")
    options = RunOptions(
        limit=args.limit, seed=run_seed(args.seed), output_dir=args.output, use_cache=not args.no_cache,
        cache_dir=args.cache_dir, include_paths=args.include_path, data_dir=args.data_dir, n_boot=args.bootstrap,
        trust_task_code=args.trust_task_code, allow_external_data=args.allow_external_data,
        command=shlex.join(redact_argv(["harness", *sys.argv[1:]])), model_options=model_args,
        num_fewshot=args.num_fewshot,
        apply_chat_template=None if chat is None else chat == "true",
        fewshot_as_multiturn=args.fewshot_as_multiturn, system_instruction=args.system_instruction,
        gen_kwargs=dict(args.gen_kwargs), **run_fields,
    )
    return options, models


def run(args: argparse.Namespace) -> int:
    from harness.report.text_tables import results_table
    from harness.runner import evaluate

    options, models = options_from_args(args)
    results = evaluate(models, args.tasks, options)
    print(results_table(results))
    if results.path:
        print(f"\nresults: {results.path}")
    return 0
