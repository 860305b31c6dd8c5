"""benchmarks/bench_lmeval.py end to end at --size small: lm-evaluation-harness 0.4.13 itself (its
`hf` model), the harness's hf: and scratch: backends, on the same lm-eval task files, each in its
own process. Asserts that the numbers agree (relative difference at most the benchmark's
AGREE_REL, 1e-4; accuracies and exact matches equal), that every figure is filled and that both
output files exist. It asserts nothing about speed."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from tests.conftest import REPO



def load_bench():
    spec = importlib.util.spec_from_file_location("bench_lmeval", REPO / "benchmarks/bench_lmeval.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_lmeval"] = module
    spec.loader.exec_module(module)
    return module


def test_memory_bandwidth_figures():
    from harness.benchmark.machine import memory_bandwidth

    b = memory_bandwidth(size_mib=16, repetitions=2)
    reads = b["read_by_kernel_gb_s"]
    assert {"sum", "mv"} <= set(reads) and all(v > 0 for v in reads.values()) and b["copy_gb_s"] > 0
    assert b["limit_gb_s"] == b["read_gb_s"] == max(reads.values())
    assert b["size_mib"] == 16 and b["threads"] >= 1


def test_decode_bytes_count_a_tied_head_once():
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self, tied: bool):
            super().__init__()
            self.embed = nn.Embedding(100, 8)
            self.proj = nn.Linear(8, 8, bias=True)
            self.head = nn.Linear(8, 100, bias=False)
            if tied:
                self.head.weight = self.embed.weight

    bench = load_bench()
    # tied: the head is the embedding matrix, read once; untied: the head plus one embedding row
    assert bench.decode_bytes_per_token(Tiny(tied=True)) == 4 * (8 * 8 + 8 + 100 * 8)
    assert bench.decode_bytes_per_token(Tiny(tied=False)) == 4 * (8 * 8 + 8 + 100 * 8 + 8)


@pytest.mark.slow
@pytest.mark.timeout(3600)  # 13 processes; on a loaded 2-core machine this has taken 15 minutes
def test_small_run_agrees_with_lm_eval(tmp_path):
    bench = load_bench()
    out = tmp_path / "out"
    assert bench.main(["--size", "small", "--output", str(out)]) == 0
    data = json.loads((out / "bench_lmeval.json").read_text())
    table = (out / "bench_lmeval.md").read_text()

    rows = {(r["task"], r["runner"]): r for r in data["rows"]}
    assert set(rows) == {(t, r) for t in bench.TASKS for r in bench.RUNNERS}
    expected = {"peer_rolling": {"word_perplexity", "byte_perplexity", "bits_per_byte"},
                "peer_mc": {"acc", "acc_norm"}, "peer_mc_3shot": {"acc", "acc_norm"}, "peer_gen": {"exact_match"}}
    for (task, runner), r in rows.items():
        assert expected[task] <= set(r["metrics"]), (task, runner, r["metrics"])
        assert r["eval_s"] > 0 and r["process_s"] >= r["eval_s"] and 50 < r["peak_rss_mib"] < 20_000
        if runner == "lm-eval":
            continue
        ref = rows[(task, "lm-eval")]["metrics"]
        assert set(r["shared_metrics"]) >= expected[task]
        for name in expected[task]:
            if name in ("acc", "acc_norm", "exact_match"):
                assert r["metrics"][name] == ref[name], (task, runner, name)
            else:
                assert r["metrics"][name] == pytest.approx(ref[name], rel=bench.AGREE_REL), (task, runner, name)
        assert r["agrees"] and r["max_rel_diff"] <= bench.AGREE_REL
        assert r["speedup_eval"] > 0 and r["memory_fraction"] > 0
    assert data["sizes"]["peer_mc"] == bench.SIZES["small"].mc_docs
    # the word perplexity is a perplexity of real prose, not a degenerate value
    assert 5 < rows[("peer_rolling", "lm-eval")]["metrics"]["word_perplexity"] < 1000

    # the machine and the scratch decoder's kernels are reported
    assert data["machine"]["summary"] and "avx2" in data["machine"]["flags"]
    assert data["scratch_kernels"] and all(k in table for k in data["scratch_kernels"])
    # the decode section: a rate, the bytes it reads (SmolLM2's 134.5M float32 weights, the tied
    # head once), the measured bandwidth and the fraction of it
    d = data["decode"]
    assert d["tokens_per_s"] > 0 and d["bandwidth"]["read_gb_s"] > 0 and d["bandwidth"]["copy_gb_s"] > 0
    assert 530e6 < d["weight_bytes_per_token"] < 540e6
    assert d["fraction_of_limit"] == pytest.approx(d["implied_gb_s"] / d["bandwidth"]["limit_gb_s"])
    assert "| peer_mc_3shot | scratch:smollm2-135m |" in table and "fraction of the limit" in table
