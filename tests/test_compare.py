"""`harness compare`: paired tests, verdicts, thresholds, the hash check and the regression gate."""

from __future__ import annotations

import json
import random

import pytest

from harness.cli import main
from harness.errors import HarnessError
from harness.metrics.base import get_metric
from harness.report.compare import Thresholds, compare_files
from harness.report.significance import approximate_randomization, paired_bootstrap
from tests.test_report_data import FakeModel, write_results


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare")
    return {
        "base": write_results(folder, "base", [FakeModel("hf:m", quality=0.8)]),
        "same": write_results(folder, "same", [FakeModel("hf:m", quality=0.8)]),
        "worse": write_results(folder, "worse", [FakeModel("hf:m", quality=0.3, seed=1)]),
        "better": write_results(folder, "better", [FakeModel("hf:m", quality=1.0, seed=2)]),
        "fewer": write_results(folder, "fewer", [FakeModel("hf:m", quality=0.8)], n_docs=30),
        "short": write_results(folder, "short", [FakeModel("hf:m", quality=0.8, max_gen_toks=2)]),
        "no_lm": write_results(folder, "no_lm", [FakeModel("hf:m", quality=0.8, tasks=("mc_colors", "translate_toy"))]),
        "folder": folder,
    }


def verdicts(comparison):
    return {(r.task, r.metric): r.verdict for r in comparison.rows}


def test_identical_runs_are_unchanged_and_the_gate_passes(runs, capsys):
    comparison = compare_files(runs["base"], runs["same"])
    assert set(verdicts(comparison).values()) == {"unchanged"}
    assert all(r.delta == 0 and r.p_value == 1.0 for r in comparison.rows)
    assert main(["compare", str(runs["base"]), str(runs["same"]), "--fail-on-regression"]) == 0
    assert "0 regressed, 0 improved, 8 unchanged" in capsys.readouterr().out


def test_worse_candidate_regresses_in_both_directions_and_the_gate_fails(runs, capsys):
    comparison = compare_files(runs["base"], runs["worse"])
    v = verdicts(comparison)
    assert v[("mc_colors", "acc")] == "regressed"  # per-sample: paired bootstrap
    assert v[("translate_toy", "bleu")] == "regressed"  # corpus: approximate randomization
    assert v[("lm_toy", "word_perplexity")] == "regressed"  # lower is better, went up
    tests = {r.metric: r.test for r in comparison.rows}
    assert tests["acc"] == "paired bootstrap" and tests["bleu"] == "approximate randomization"
    assert tests["rougeL"] == "paired bootstrap" and tests["word_perplexity"] == "approximate randomization"
    ppl = next(r for r in comparison.rows if r.metric == "word_perplexity")
    assert ppl.delta > 0 and ppl.ci_low > 0 and ppl.p_value < 0.05
    assert main(["compare", str(runs["base"]), str(runs["worse"]), "--fail-on-regression"]) == 1
    out = capsys.readouterr().out
    assert "REGRESSED" in out and "approximate randomization" in out
    # without the flag the comparison is a report, not a gate
    assert main(["compare", str(runs["base"]), str(runs["worse"])]) == 0


def test_better_candidate_improves_and_passes(runs):
    comparison = compare_files(runs["base"], runs["better"])
    v = verdicts(comparison)
    assert v[("mc_colors", "acc")] == "improved" and v[("lm_toy", "word_perplexity")] == "improved"
    assert "regressed" not in v.values()
    assert main(["compare", str(runs["base"]), str(runs["better"]), "--fail-on-regression"]) == 0


def test_thresholds_absolute_relative_and_per_metric(runs):
    huge = Thresholds(absolute={"": 1000.0})
    assert set(verdicts(compare_files(runs["base"], runs["worse"], thresholds=huge)).values()) == {"unchanged"}
    only_acc = Thresholds(absolute={"": 1000.0, "mc_colors/acc": 0.01})
    v = verdicts(compare_files(runs["base"], runs["worse"], thresholds=only_acc))
    assert v[("mc_colors", "acc")] == "regressed" and v[("translate_toy", "bleu")] == "unchanged"
    rel = Thresholds(relative={"": 50.0})  # a change of 5000% never happens
    assert "regressed" not in verdicts(compare_files(runs["base"], runs["worse"], thresholds=rel)).values()
    strict = Thresholds(alpha=1e-9)  # no resampling can reach it
    assert "regressed" not in verdicts(compare_files(runs["base"], runs["worse"], thresholds=strict)).values()
    assert main(["compare", str(runs["base"]), str(runs["worse"]), "--fail-on-regression",
                 "--threshold-abs", "1000"]) == 0


def test_different_documents_are_refused_unless_forced(runs, capsys):
    with pytest.raises(HarnessError, match=r"documents differ .*40 vs 30 documents.*--force"):
        compare_files(runs["base"], runs["fewer"])
    assert main(["compare", str(runs["base"]), str(runs["fewer"])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: refusing to compare")
    forced = compare_files(runs["base"], runs["fewer"], force=True)
    assert forced.warnings and "documents differ" in forced.warnings[0]


def test_different_requests_say_what_changed(runs):
    with pytest.raises(HarnessError) as info:
        compare_files(runs["base"], runs["short"])
    message = str(info.value)
    assert "translate_toy" in message and "prompt_hash" in message
    assert "rendered prompts are identical" in message and "max_gen_toks: 32 → 2" in message
    assert "mc_colors" not in message  # only the task that differs


def test_missing_metric_fails_the_gate(runs, capsys):
    comparison = compare_files(runs["base"], runs["no_lm"])
    assert verdicts(comparison)[("lm_toy", "word_perplexity")] == "missing"
    assert main(["compare", str(runs["base"]), str(runs["no_lm"]), "--fail-on-regression"]) == 1
    assert "MISSING" in capsys.readouterr().out
    assert verdicts(compare_files(runs["no_lm"], runs["base"]))[("lm_toy", "bits_per_byte")] == "new"


def test_without_samples_falls_back_to_an_unpaired_test(runs, tmp_path):
    data = json.loads(runs["worse"].read_text())
    for task in data["evaluations"][0]["tasks"].values():
        task["samples_file"] = "nowhere/missing.jsonl"
    lonely = tmp_path / "lonely.json"
    lonely.write_text(json.dumps(data))
    comparison = compare_files(runs["base"], lonely)
    assert {r.test for r in comparison.rows} == {"unpaired z-test"}
    assert verdicts(comparison)[("mc_colors", "acc")] == "regressed"


def test_json_and_markdown_output_and_model_selection(runs, tmp_path, capsys):
    two = write_results(tmp_path, "two", [FakeModel("hf:m", quality=0.8), FakeModel("hf:other", quality=0.2)])
    assert main(["compare", str(two), str(runs["worse"]), "--format", "json", "--baseline-model", "hf:m"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pairs"] == [["hf:m", "hf:m"]] and report["counts"]["regressed"] >= 3
    assert main(["compare", str(runs["base"]), str(runs["same"]), "--format", "markdown",
                 "-o", str(tmp_path / "c.md")]) == 0
    assert (tmp_path / "c.md").read_text().count("| unchanged |") == 8
    assert main(["compare", str(two), str(runs["base"]), "--baseline-model", "nope"]) == 2
    assert main(["compare", str(runs["base"]), str(runs["same"]), "--alpha", "2"]) == 2
    assert main(["compare", str(runs["base"]), str(runs["same"]), "--threshold-abs", "x"]) == 2


def test_paired_bootstrap_basics():
    same = paired_bootstrap([1, 0, 1, 1], [1, 0, 1, 1])
    assert same.delta == 0 and same.p_value == 1.0
    rng = random.Random(0)
    b = [float(rng.random() < 0.8) for _ in range(200)]
    c = [x if rng.random() < 0.6 else 0.0 for x in b]
    test = paired_bootstrap(b, c, n_resamples=2000)
    assert test.delta < 0 and test.ci_high < 0 and test.p_value < 0.01
    assert paired_bootstrap([1.0], [0.0]).p_value is None


def test_approximate_randomization_agrees_with_sacrebleu():
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    from harness.metrics.base import Sample

    rng = random.Random(0)
    words = list("abcdefghijk")
    refs = [" ".join(rng.choices(words, k=8)) for _ in range(30)]
    hb = [r if rng.random() < 0.7 else " ".join(rng.choices(words, k=8)) for r in refs]
    hc = [r if rng.random() < 0.5 else " ".join(rng.choices(words, k=8)) for r in refs]
    _, res = PairedTest([("b", hb), ("c", hc)], {"BLEU": BLEU()}, [refs], test_type="ar", n_samples=4000)()
    bleu = get_metric("bleu")
    stats = [bleu.sample_stats([Sample(str(i), "generate_until", target=r, prediction=h, language="en")
                                for i, (h, r) in enumerate(zip(hyps, refs))]) for hyps in (hb, hc)]
    ours = approximate_randomization(bleu, stats[0], stats[1], n_resamples=4000, seed=1)
    assert ours.delta == pytest.approx(res["BLEU"][1].score - res["BLEU"][0].score, abs=1e-9)
    assert ours.p_value == pytest.approx(res["BLEU"][1].p_value, abs=0.01)
    assert ours.ci_low < ours.delta < ours.ci_high < 0


@pytest.mark.slow
def test_real_runs_identical_pass_and_degraded_decoding_fails(tmp_path):
    """smollm2-135m twice on the same translation task (the second run recomputes everything):
    the gate passes; once more with max_gen_toks 2 (a deliberately degraded decoding setting): the
    gate refuses without --force (the requests differ, and it says how), and with it exits 1."""
    import shutil
    import subprocess
    import sys

    from harness.runner import RunOptions, evaluate
    from tests.conftest import REPO

    source = REPO / "tasks" / "translation"
    config = (source / "translation_fr_en.yaml").read_text()
    assert "max_gen_toks: 96" in config

    def task_folder(name: str, max_gen_toks: int):
        folder = tmp_path / name
        folder.mkdir()
        shutil.copy(source / "en_fr.jsonl", folder)
        (folder / "gate_fr_en.yaml").write_text(config.replace("task: translation_fr_en", "task: gate_fr_en")
                                                .replace("max_gen_toks: 96", f"max_gen_toks: {max_gen_toks}"))
        return folder

    def run(folder, out: str, use_cache: bool = True) -> str:
        options = RunOptions(limit=10, output_dir=str(tmp_path / out), include_paths=[str(folder)], use_cache=use_cache)
        return evaluate(["smollm2-135m"], ["gate_fr_en"], options).path

    good, bad = task_folder("good", 24), task_folder("bad", 2)
    baseline, again, degraded = run(good, "a"), run(good, "b", use_cache=False), run(bad, "c")

    def gate(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "harness", "compare", *args, "--fail-on-regression"],
                              capture_output=True, text=True, cwd=REPO, timeout=1200, check=False)

    same = gate(baseline, again)
    assert same.returncode == 0 and "0 regressed, 0 improved, 3 unchanged" in same.stdout, same.stdout + same.stderr
    refused = gate(baseline, degraded)
    assert refused.returncode == 2 and "max_gen_toks: 24 → 2" in refused.stderr, refused.stderr
    worse = gate(baseline, degraded, "--force")
    assert worse.returncode == 1, worse.stdout + worse.stderr
    rows = {line.split()[2]: line for line in worse.stdout.splitlines() if line.startswith("hf:smollm2-135m")}
    assert rows["chrf"].endswith("REGRESSED"), worse.stdout


def test_damaged_samples_file_is_a_one_line_error(runs, tmp_path, capsys):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(runs["folder"] / "same", folder / "same")
    shutil.copy(runs["same"], folder / "same.json")
    samples = folder / "same" / "hf-m__mc_colors.jsonl"
    samples.write_text(samples.read_text()[:-20] + "\n")
    assert main(["compare", str(runs["base"]), str(folder / "same.json")]) == 2
    err = capsys.readouterr().err
    assert "hf-m__mc_colors.jsonl: line 40 is not JSON" in err and len(err.strip().splitlines()) == 1
