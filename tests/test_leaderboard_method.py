"""The leaderboard's ranking method on crafted results: primary metrics, ties inside CIs and within
noise, metrics not comparable across tokenizers, exact transforms counted once, one row per weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.report.collect import Column, columns, load_entries
from harness.report.leaderboard import leaderboard_rows, rank, render_leaderboard
from harness.report.ranking import default_primary_metric, primary_metric, win_rates

LOWER = {"bits_per_byte", "byte_perplexity", "word_perplexity", "token_perplexity", "ter"}
OUTPUT_TYPES = {"mc": "multiple_choice", "lm": "loglikelihood_rolling", "gen": "generate_until"}


def crafted(folder: Path, models: dict[str, dict], configs: dict[str, dict] | None = None, name: str = "run") -> Path:
    """A results file from {spec: {"model": {...}, task: {metric: (value, ci_low, ci_high)}}}."""
    evaluations = []
    for spec, spec_tasks in models.items():
        backend, model_name = spec.split(":", 1)
        model = {"name": model_name, "backend": backend, "spec": spec, "n_params": 100_000_000, "dtype": "float32",
                 **spec_tasks.get("model", {})}
        tasks = {}
        for task, metrics in spec_tasks.items():
            if task == "model":
                continue
            config = {"task": task, "output_type": OUTPUT_TYPES[task.split("_")[0]], **(configs or {}).get(task, {})}
            tasks[task] = {"config": config, "n_samples": 100, "metrics": {
                m: {"value": v, "ci_low": lo, "ci_high": hi, "n": 100, "higher_is_better": m not in LOWER}
                for m, (v, lo, hi) in metrics.items()}}
        evaluations.append({"model": model, "tasks": tasks, "groups": {}})
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"schema_version": 1, "kind": "evaluation", "run_id": name, "finished": "2026-01-01", "evaluations": evaluations}))
    return path


def test_default_primary_metrics_by_output_type():
    assert default_primary_metric("loglikelihood_rolling", ["word_perplexity", "byte_perplexity", "bits_per_byte",
                                                            "token_perplexity"]) == "bits_per_byte"
    assert default_primary_metric("loglikelihood_rolling", ["token_perplexity", "word_perplexity"]) == "word_perplexity"
    assert default_primary_metric("multiple_choice", ["acc_norm", "acc"]) == "acc"
    assert default_primary_metric("generate_until", ["rouge1", "rougeL"]) == "rouge1"
    assert default_primary_metric("generate_until", []) is None


def test_task_file_primary_metric_wins_over_the_default(tmp_path):
    scores = {"gen_sum": {"rouge1": (0.3, 0.2, 0.4), "rougeL": (0.2, 0.1, 0.3)}}
    entries = load_entries([crafted(tmp_path, {"hf:a": scores}, {"gen_sum": {"primary_metric": "rougeL"}})])
    assert primary_metric(entries, "gen_sum") == "rougeL"
    listed = load_entries([crafted(tmp_path, {"hf:a": scores}, {"gen_sum": {"metric_list": [
        {"metric": "rougeL"}, {"metric": "rouge1"}]}}, name="listed")])
    assert primary_metric(listed, "gen_sum") == "rougeL"  # the first metric the task file lists
    absent = load_entries([crafted(tmp_path, {"hf:a": scores}, {"gen_sum": {"primary_metric": "bleu"}}, name="absent")])
    assert primary_metric(absent, "gen_sum") == "rouge1"  # declared but not reported: the default rule
    recorded = crafted(tmp_path, {"hf:a": scores}, name="recorded")
    data = json.loads(recorded.read_text())
    data["evaluations"][0]["tasks"]["gen_sum"]["primary_metric"] = "rougeL"  # the runner's record of the default
    recorded.write_text(json.dumps(data))
    assert primary_metric(load_entries([recorded]), "gen_sum") == "rougeL"


def test_task_file_key_primary_metric_is_checked():
    from harness.config import parse_task_config
    from harness.errors import HarnessError

    raw = {"task": "t", "dataset_path": "json", "output_type": "generate_until",
           "metric_list": [{"metric": "rouge1"}, {"metric": "rougeL"}], "primary_metric": "rougeL"}
    config = parse_task_config(raw, "t.yaml")
    assert config.primary_metric == "rougeL" and config.to_dict()["primary_metric"] == "rougeL"
    with pytest.raises(HarnessError, match="t.yaml: primary_metric 'bleu' is not in metric_list"):
        parse_task_config({**raw, "primary_metric": "bleu"}, "t.yaml")


def test_differences_inside_the_cis_and_within_noise_are_ties(tmp_path):
    path = crafted(tmp_path, {
        "hf:a": {"mc_x": {"acc": (0.60, 0.50, 0.70)}},
        "hf:b": {"mc_x": {"acc": (0.58, 0.48, 0.68)}},  # inside a's CI: a tie
        "hf:c": {"mc_x": {"acc": (0.30, 0.20, 0.40)}},  # outside both: beaten
        "hf:d": {"mc_x": {"acc": (0.30 * (1 + 1e-8), None, None)}},  # c within noise, no CI: a tie
    })
    entries = load_entries([path])
    col = Column("mc_x", "acc")
    assert win_rates(entries, col) == pytest.approx({"hf:a": 2.5 / 3, "hf:b": 2.5 / 3, "hf:c": 0.5 / 3, "hf:d": 0.5 / 3})
    rows = leaderboard_rows(entries, columns(entries))
    # a and b tie on win rate; the normalized score (a 1.0, b 0.93) orders them; c and d share a rank
    assert [(r.entry.label, r.rank) for r in rows][:2] == [("hf:a", "1"), ("hf:b", "2")]
    assert sorted((r.entry.label, r.rank) for r in rows[2:]) == [("hf:c", "3="), ("hf:d", "3=")]
    md = render_leaderboard(entries, columns(entries), "markdown", details=False)
    bold = [line.split(" | ")[1] for line in md.splitlines() if "**" in line]
    assert sorted(bold) == ["hf:a", "hf:b"]  # both best: one is not better than the other


def test_tokenizer_dependent_metric_is_shown_but_never_ranked(tmp_path):
    lm = {"bits_per_byte": (0.99, 0.97, 1.01), "token_perplexity": (36.0, 33.0, 39.0)}
    path = crafted(tmp_path, {
        "hf:small": {"model": {"source": "/models/small.gguf"}, "lm_en": lm, "mc_x": {"acc": (0.5, 0.4, 0.6)}},
        # far better token perplexity from a tokenizer with longer tokens; the same bits per byte and accuracy
        "hf:other": {"model": {"source": "/models/other.gguf"}, "lm_en": {**lm, "token_perplexity": (5.0, 4.0, 6.0)},
                     "mc_x": {"acc": (0.5, 0.4, 0.6)}},
    })
    entries = load_entries([path])
    for rank_on in ("primary", "all"):
        ranking = rank(entries, columns(entries), rank_on=rank_on)
        assert Column("lm_en", "token_perplexity", False) not in ranking.ranked
        assert [r.rank for r in ranking.rows] == ["1=", "1="]
    status = next(s for s in rank(entries, columns(entries), rank_on="all").statuses if s.column.metric == "token_perplexity")
    assert "tokenizer" in status.reason
    md = render_leaderboard(entries, columns(entries), "markdown")
    assert "lm_en / token_perplexity: not ranked (depends on the tokenizer" in md
    assert "**5.000**" not in md and "| 5 |" in md.replace("5.000", "5")  # shown, not bolded
    same = load_entries([crafted(tmp_path, {"hf:a": {"lm_en": lm}, "scratch:a": {"lm_en": {
        **lm, "token_perplexity": (30.0, 29.0, 31.0)}}}, name="same")])
    # one tokenizer (the same weights file on two backends that disagree): comparable, so ranked
    assert Column("lm_en", "token_perplexity", False) in rank(same, columns(same), rank_on="all").ranked


def test_exact_transforms_count_once(tmp_path):
    path = crafted(tmp_path, {
        "hf:a": {"lm_en": {"byte_perplexity": (1.9, 1.8, 2.0), "bits_per_byte": (0.926, 0.85, 1.0),
                           "word_perplexity": (50.0, 45.0, 55.0)},
                 "gen_sum": {"rougeL": (0.30, 0.29, 0.31), "rougeLsum": (0.30, 0.29, 0.31), "rouge1": (0.2, 0.19, 0.21)}},
        "hf:b": {"lm_en": {"byte_perplexity": (2.5, 2.4, 2.6), "bits_per_byte": (1.32, 1.3, 1.34),
                           "word_perplexity": (90.0, 85.0, 95.0)},
                 "gen_sum": {"rougeL": (0.10, 0.09, 0.11), "rougeLsum": (0.10, 0.09, 0.11), "rouge1": (0.4, 0.39, 0.41)}},
    })
    entries = load_entries([path])
    ranked = rank(entries, columns(entries), rank_on="all").ranked
    assert [c.metric for c in ranked if c.task == "lm_en"] == ["bits_per_byte"]
    assert [c.metric for c in ranked if c.task == "gen_sum"] == ["rougeL", "rouge1"]
    # a counts its language-modelling win once, rougeL once, and loses rouge1: 2 of 3, not 5 of 6
    assert {r.entry.label: r.mean_win_rate for r in rank(entries, columns(entries), rank_on="all").rows} == \
        pytest.approx({"hf:a": 2 / 3, "hf:b": 1 / 3})
    multi = json.loads(path.read_text())
    multi["evaluations"][0]["tasks"]["gen_sum"]["metrics"]["rougeLsum"]["value"] = 0.35  # multi-line: they differ
    path.write_text(json.dumps(multi))
    entries = load_entries([path])
    assert "rougeLsum" in [c.metric for c in rank(entries, columns(entries), rank_on="all").ranked]


def test_two_backends_of_one_model_are_one_row(tmp_path):
    weights = {"source": "/models/smollm2.gguf"}
    hf = {"mc_x": {"acc": (0.43, 0.33, 0.52)}, "lm_en": {"bits_per_byte": (0.99074796393, 0.972, 1.009)}}
    scratch = {"mc_x": {"acc": (0.43, 0.33, 0.52)}, "lm_en": {"bits_per_byte": (0.99074798505, 0.972, 1.009)}}  # 2e-8
    path = crafted(tmp_path, {
        "hf:smollm2": {"model": weights, **hf},
        "scratch:smollm2": {"model": weights, **scratch},
        "scratch:smollm2-bf16": {"model": {**weights, "dtype": "bfloat16"}, "mc_x": {"acc": (0.41, 0.31, 0.50)},
                                 "lm_en": {"bits_per_byte": (0.9950, 0.976, 1.013)}},
        "hf:gemma": {"model": {"source": "/models/gemma.gguf"}, "mc_x": {"acc": (0.56, 0.46, 0.66)},
                     "lm_en": {"bits_per_byte": (0.93, 0.91, 0.95)}},
    })
    entries = load_entries([path])
    rows = leaderboard_rows(entries, columns(entries))
    assert [[v.label for v in r.group.variants] for r in rows] == [
        ["hf:gemma"], ["hf:smollm2", "scratch:smollm2"], ["scratch:smollm2-bf16"]]
    # bf16 is another row; inside smollm2's CIs it ties on win rate, and its lower scores order it third
    assert [r.rank for r in rows] == ["1", "2", "3"] and rows[1].mean_win_rate == rows[2].mean_win_rate == 0.25
    md = render_leaderboard(entries, columns(entries), "markdown")
    assert "| hf:smollm2 (= scratch:smollm2) |" in md
    assert "scratch:smollm2 | scratch | float32 |" in md  # the variant keeps its own line in the details
    disagree = json.loads(path.read_text())
    disagree["evaluations"][1]["tasks"]["lm_en"]["metrics"]["bits_per_byte"]["value"] = 0.9920  # 1e-3 apart
    path.write_text(json.dumps(disagree))
    entries = load_entries([path])
    assert len(leaderboard_rows(entries, columns(entries))) == 4  # numbers that disagree are not merged


def test_cli_rank_on_all_and_weights_from_another_machine(tmp_path, capsys):
    from harness.cli import main

    scores = {"mc_x": {"acc": (0.43, 0.33, 0.52), "acc_norm": (0.45, 0.35, 0.55)}}
    here = crafted(tmp_path, {"hf:m": {"model": {"source": "/home/a/models/m.gguf"}, **scores}}, name="here")
    there = crafted(tmp_path, {"scratch:m": {"model": {"source": "/srv/cache/m.gguf"}, **scores}}, name="there")
    other = crafted(tmp_path, {"hf:o": {"model": {"source": "/srv/o.gguf"},
                                        "mc_x": {"acc": (0.60, 0.50, 0.70), "acc_norm": (0.30, 0.20, 0.40)}}},
                    name="other")
    assert main(["leaderboard", str(here), str(there), str(other), "--format", "json", "--rank-on", "all"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["model"], r["variants"], r["of"]) for r in rows] == [("hf:o", "hf:o", 2), ("hf:m", "hf:m scratch:m", 2)] \
        or [(r["model"], r["variants"], r["of"]) for r in rows] == [("hf:m", "hf:m scratch:m", 2), ("hf:o", "hf:o", 2)]
    assert [r["rank"] for r in rows] == ["1=", "1="]  # one win each: acc for o, acc_norm for m
    assert main(["leaderboard", str(here), str(there), str(other), "--format", "json"]) == 0
    primary = json.loads(capsys.readouterr().out)
    assert primary[0]["model"] == "hf:o" and primary[0]["of"] == 1 and primary[0]["rank"] == "1"
