"""`harness bench`: timing arithmetic, the results file every reporter reads, the speed/memory
regression gate (a stand-in backend with an injected delay), and a real run on SmolLM2 (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.benchmark.measure import BenchSettings, Shape, _union_length, make_prompts, summarize, time_run
from harness.cli import main
from harness.errors import HarnessError
from harness.models.base import LanguageModel
from harness.report.collect import columns, load_entries
from harness.report.compare import compare_files
from harness.report.plots import pareto_front
from harness.report.report_tables import efficiency_columns, render_report
from harness.requests import ModelInfo
from tests.test_report_data import FakeModel, write_results

# -- a stand-in backend: sleeps instead of computing, so its speed is known and can be slowed down --

STEP_SECONDS = 0.010  # one decode step
EXTRA_STEP_SECONDS = 0.0  # the injected slowdown: tests set it through monkeypatch


class VirtualClock:
    """Time that passes only when the stand-in "works" (its sleeps): the measurements it yields
    are exact, however loaded the machine, so the tests assert them exactly."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


CLOCK = VirtualClock()


@pytest.fixture(autouse=True)
def virtual_time(monkeypatch, request):
    """The benchmark's clock (measure.py, worker.py) reads the virtual clock, except in the
    real-model test, which measures real time."""
    import importlib
    from types import SimpleNamespace

    if request.node.get_closest_marker("slow"):
        return None

    import harness.benchmark.measure as measure
    import harness.benchmark.worker as worker

    # the backend registry imports this file as `tests.test_bench`, which pytest may hold as a
    # second module object: both must share one clock
    monkeypatch.setattr(importlib.import_module("tests.test_bench"), "CLOCK", CLOCK)
    clock = SimpleNamespace(perf_counter=CLOCK.perf_counter, sleep=CLOCK.sleep)
    monkeypatch.setattr(measure, "time", clock)
    monkeypatch.setattr(worker, "time", clock)
    return CLOCK


class StandInLM(LanguageModel):
    """A model whose decode step takes STEP_SECONDS + EXTRA_STEP_SECONDS (on the virtual clock): the gate
    test's subject. Never used for a number a user reads."""

    backend = "standin"
    max_length = 4096
    prefix_token_id = 0

    def __init__(self, name: str, **_options):
        CLOCK.sleep(0.02)  # a load time
        self.name = name

    def tok_encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return list(text.encode())

    def stream_token_ids(self, prompts, max_new_tokens, on_token):
        CLOCK.sleep(0.010)  # prefill
        for step in range(max_new_tokens):
            if step:
                CLOCK.sleep(STEP_SECONDS + EXTRA_STEP_SECONDS)
            for row in range(len(prompts)):
                on_token(row, 1)
        return [[1] * max_new_tokens for _ in prompts]

    def loglikelihood(self, requests):
        raise NotImplementedError

    def loglikelihood_rolling(self, texts, *, max_length=None, stride=None):
        raise NotImplementedError

    def generate(self, requests):
        raise NotImplementedError

    @property
    def fingerprint(self) -> str:
        return "standin"

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(name=self.name, backend="standin", spec=f"standin:{self.name}", n_params=1000)


@pytest.fixture
def standin(monkeypatch):
    from harness import models

    monkeypatch.setitem(models.BACKENDS, "standin", "tests.test_bench:StandInLM")
    return monkeypatch


def bench_args(output: Path, *extra: str) -> list[str]:
    return ["bench", "--in-process", "-m", "standin:toy", "--prompt-lengths", "8", "--batch-sizes", "1", "2",
            "--new-tokens", "6", "--repetitions", "3", "--warmup", "1", "--output", str(output), *extra]


def only_json(folder: Path) -> Path:
    (path,) = folder.glob("*.json")
    return path


# -- timing arithmetic ----------------------------------------------------------------------------

def test_union_of_decode_intervals():
    assert _union_length([(0.0, 1.0), (0.5, 2.0), (3.0, 4.0)]) == pytest.approx(3.0)
    assert _union_length([]) == 0.0


def test_time_run_splits_prefill_and_decode_for_sequential_rows():
    """Rows one after another (as llama.cpp runs them): prefill is every row's wait for its first
    token, decode the rows' token intervals, summed."""
    def stream(prompts, n, on_token):
        for row in range(len(prompts)):
            CLOCK.sleep(0.05)  # this row's prefill
            for step in range(n):
                if step:
                    CLOCK.sleep(0.01)
                on_token(row, 7)

    run = time_run(stream, [[1] * 10, [1] * 10], 5)
    assert run["ttft_s"] == pytest.approx(0.05, abs=1e-9)
    assert run["decode_s"] == pytest.approx(2 * 4 * 0.01, abs=1e-9)
    assert run["prefill_s"] == pytest.approx(0.10, abs=1e-9)
    assert run["decode_tokens_per_s"] == pytest.approx(8 / run["decode_s"])
    assert run["prefill_tokens_per_s"] == pytest.approx(20 / run["prefill_s"])
    assert run["requests_per_s"] == pytest.approx(2 / run["total_s"])


def test_time_run_refuses_short_rows_and_summarize_spread():
    with pytest.raises(HarnessError, match="produced"):
        time_run(lambda prompts, n, on_token: on_token(0, 1), [[1]], 3)
    s = summarize([3.0, 1.0, 2.0])
    assert (s["median"], s["min"], s["max"], s["half_range"], s["n"]) == (2.0, 1.0, 3.0, 1.0, 3)


def test_prompts_have_the_exact_shape():
    lm = StandInLM.__new__(StandInLM)
    prompts = make_prompts(lm, Shape(prompt_tokens=300, batch_size=3, new_tokens=4))
    assert [len(p) for p in prompts] == [300, 300, 300] and all(p[0] == 0 for p in prompts)
    assert len({tuple(p) for p in prompts}) == 3  # rows differ


def test_settings_are_checked():
    for bad in ({"new_tokens": 1}, {"batch_sizes": []}, {"prompt_lengths": [1]}, {"repetitions": 0}):
        with pytest.raises(HarnessError):
            BenchSettings(**bad)
    s = BenchSettings(prompt_lengths=[512, 128], batch_sizes=[4, 1], new_tokens=8)
    assert [x.label for x in s.shapes()] == ["p128 b1 n8", "p128 b4 n8", "p512 b1 n8", "p512 b4 n8"]
    assert (s.reference_shape.label, s.batched_shape.label) == ("p128 b1 n8", "p128 b4 n8")


def test_pareto_front():
    # (speed, quality), both higher is better: (1, 0.9) and (10, 0.5) are on the front, (5, 0.4) is not
    assert pareto_front([(1, 0.9), (10, 0.5), (5, 0.4)], True, True) == [0, 1]
    # memory: lower is better
    assert pareto_front([(100, 0.9), (50, 0.5), (200, 0.4)], False, True) == [0, 1]


# -- the results file, the reports and the gate (stand-in backend) --------------------------------

def test_bench_results_file_and_reports(standin, tmp_path, capsys):
    assert main(bench_args(tmp_path / "bench")) == 0
    out = capsys.readouterr().out
    assert "standin:toy" in out and "p8 b2 n6" in out and "machine:" in out
    path = only_json(tmp_path / "bench")
    data = json.loads(path.read_text())
    assert data["schema_version"] == 2 and data["kind"] == "benchmark" and not data["errors"]
    assert data["status"] == "complete"
    (evaluation,) = data["evaluations"]
    assert evaluation["model"]["spec"] == "standin:toy" and evaluation["model"]["fingerprint"] == "standin"
    eff = evaluation["efficiency"]
    assert set(eff) == {"load_s", "ttft_s", "prefill_tokens_per_s", "decode_tokens_per_s",
                        "batch_decode_tokens_per_s", "batch_requests_per_s", "peak_memory_mib"}
    assert eff["decode_tokens_per_s"] == pytest.approx(1 / STEP_SECONDS, rel=1e-9)
    assert eff["batch_decode_tokens_per_s"] == pytest.approx(2 / STEP_SECONDS, rel=1e-9)
    shape = evaluation["bench"]["shapes"][0]
    assert shape["decode_tokens_per_s"]["n"] == 3 and len(shape["decode_tokens_per_s"]["values"]) == 3
    assert data["environment"]["machine"]["cpu_cores_usable"] >= 1
    assert main(["bench", "--show", str(path)]) == 0 and "p8 b1 n6" in capsys.readouterr().out

    # beside quality results of the same spec: report, leaderboard and plot show the figures
    quality = write_results(tmp_path / "q", "quality", [FakeModel("standin:toy", backend="standin", quality=0.8),
                                                        FakeModel("hf:other", quality=0.6)])
    entries = load_entries([quality, path])
    assert entries[0].efficiency == eff
    assert [c.title for c in efficiency_columns(entries)][:2] == ["load s ↓", "TTFT s ↓"]
    md = render_report(entries, columns(entries), "markdown")
    assert "decode tok/s ↑" in md.splitlines()[0] and "medians over repetitions" in md
    records = json.loads(render_report(entries, columns(entries), "json"))["records"]
    assert {"task": "efficiency", "metric": "decode_tokens_per_s"}.items() <= next(
        r for r in records if r["metric"] == "decode_tokens_per_s").items()
    assert main(["report", str(quality), str(path), "--transpose", "--no-ci"]) == 0
    assert "| efficiency | peak memory MiB ↓ |" in capsys.readouterr().out
    assert main(["leaderboard", str(quality), str(path), "--no-details"]) == 0
    board = capsys.readouterr().out
    assert "batch requests/s ↑" in board.splitlines()[0] and "do not enter the ranking" in board
    assert main(["plot", str(quality), str(path), "--kind", "efficiency", "-o", str(tmp_path / "plots")]) == 0
    assert (tmp_path / "plots" / "efficiency.png").stat().st_size > 0
    assert (tmp_path / "plots" / "efficiency.svg").is_file()
    # plotting everything without benchmark results leaves the efficiency plot out
    assert main(["plot", str(quality), "-o", str(tmp_path / "plain")]) == 0
    assert not (tmp_path / "plain" / "efficiency.png").exists()
    assert main(["plot", str(quality), "--kind", "efficiency", "-o", str(tmp_path / "none")]) == 2


def test_gate_catches_an_injected_slowdown(standin, tmp_path, capsys):
    assert main(bench_args(tmp_path / "base")) == 0
    assert main(bench_args(tmp_path / "again")) == 0
    standin.setattr(__import__("tests.test_bench", fromlist=["x"]), "EXTRA_STEP_SECONDS", 3 * STEP_SECONDS)
    assert main(bench_args(tmp_path / "slow")) == 0
    base, again, slow = (only_json(tmp_path / d) for d in ("base", "again", "slow"))
    capsys.readouterr()

    # the same code twice: nothing regressed (generous threshold: a shared machine is noisy)
    assert main(["compare", str(base), str(again), "--fail-on-regression", "--speed-threshold", "0.3",
                 "--memory-threshold", "0.3"]) == 0
    capsys.readouterr()
    # decode 4x slower: caught, and the output says medians over repetitions were compared
    code = main(["compare", str(base), str(slow), "--fail-on-regression", "--speed-threshold", "0.3",
                 "--memory-threshold", "0.3"])
    out = capsys.readouterr().out
    assert code == 1
    decode = next(line for line in out.splitlines() if "decode_tokens_per_s" in line and "batch" not in line)
    assert "REGRESSED" in decode and "median of 3 vs 3 runs" in decode
    assert "medians over the repetitions" in out
    rows = {r.metric: r for r in compare_files(base, slow).rows}
    assert rows["decode_tokens_per_s"].verdict == rows["batch_decode_tokens_per_s"].verdict == "regressed"
    assert rows["ttft_s"].verdict == "unchanged"  # prefill did not change
    assert rows["decode_tokens_per_s"].delta < 0 and "of the baseline median" in rows["decode_tokens_per_s"].note


def test_gate_memory_threshold_and_shape_refusal(tmp_path):
    def write(name: str, memory: float, shape: str = "p8 b1 n6") -> Path:
        path = tmp_path / f"{name}.json"
        figures = {"peak_memory_mib": {"median": memory, "min": memory, "max": memory, "n": 1, "shape": None},
                   "decode_tokens_per_s": {"median": 100.0, "min": 95.0, "max": 105.0, "n": 3, "shape": shape}}
        path.write_text(json.dumps({"schema_version": 1, "kind": "benchmark", "finished": "2026-01-01", "options": {"device": "cpu"},
                                    "evaluations": [{"model": {"spec": "llamacpp:x"},
                                                     "efficiency": {"peak_memory_mib": memory, "decode_tokens_per_s": 100.0},
                                                     "bench": {"figures": figures, "machine": {"cpu": "c"}}}]}))
        return path

    rows = {r.metric: r.verdict for r in compare_files(write("a", 1000), write("b", 1150)).rows}
    assert rows == {"decode_tokens_per_s": "unchanged", "peak_memory_mib": "regressed"}
    assert main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--memory-threshold", "0.2",
                 "--fail-on-regression"]) == 0
    with pytest.raises(HarnessError, match="benchmark shapes differ"):
        compare_files(write("a", 1000), write("c", 1000, shape="p128 b1 n32"))
    assert compare_files(tmp_path / "a.json", tmp_path / "c.json", force=True).warnings


# -- a real run on SmolLM2 (each backend in its own process) --------------------------------------

@pytest.mark.slow
def test_real_bench_on_smollm2(tmp_path, capsys):
    specs = ["hf:smollm2-135m", "scratch:smollm2-135m", "llamacpp:smollm2-135m"]
    args = ["bench", "--prompt-lengths", "16", "--batch-sizes", "1", "2", "--new-tokens", "4",
            "--repetitions", "2", "--output", str(tmp_path)]
    for spec in specs:
        args += ["-m", spec]
    assert main(args) == 0
    out = capsys.readouterr().out
    path = only_json(tmp_path)
    data = json.loads(path.read_text())
    assert data["kind"] == "benchmark" and not data["errors"]
    assert [e["model"]["spec"] for e in data["evaluations"]] == specs
    for e in data["evaluations"]:
        eff = e["efficiency"]
        assert eff["decode_tokens_per_s"] > 0 and eff["ttft_s"] > 0 and eff["load_s"] > 0
        assert 50 < eff["peak_memory_mib"] < 8000  # resident memory of the measuring process
        assert e["bench"]["isolated"] and e["model"]["n_params"] == 134_515_008
        assert [s["label"] for s in e["bench"]["shapes"]] == ["p16 b1 n4", "p16 b2 n4"]
    by = {e["model"]["backend"]: e for e in data["evaluations"]}
    assert by["llamacpp"]["model"]["dtype"] == "Q4_1" and by["hf"]["model"]["dtype"] == "float32"
    # llama.cpp runs 4-bit weights without torch: less memory than transformers' float32 copy
    assert by["llamacpp"]["efficiency"]["peak_memory_mib"] < by["hf"]["efficiency"]["peak_memory_mib"]
    assert "hf:smollm2-135m" in out and "results:" in out

    quality = write_results(tmp_path / "q", "quality", [FakeModel(s, backend=s.split(":")[0]) for s in specs])
    assert main(["leaderboard", str(quality), str(path), "--no-details"]) == 0
    board = capsys.readouterr().out
    for spec in specs:
        row = next(line for line in board.splitlines() if f"| {spec} |" in line)
        assert "—" not in row.split("|")[9]  # the load-time column is filled
    assert main(["report", str(quality), str(path), "--metrics", "acc"]) == 0
    assert "decode tok/s ↑" in capsys.readouterr().out
