"""benchmarks/bench_lmeval.py end to end at --size small: lm-evaluation-harness 0.4.13 itself (its
`hf` model), the harness's hf: and scratch: backends, on the same lm-eval task files, each in its
own process. Asserts that the numbers agree (relative difference at most the benchmark's
AGREE_REL, 1e-4; accuracies and exact matches equal), that every figure is filled, that the
compute roof counts the very token positions the runners report and that both output files
exist. Beside it, the pieces of the roof and floor: the model-FLOPs count by hand on a small
configuration and against the real decoder's matrices, the matrix-product probe's figures, the
ceilings' arithmetic. Nothing here asserts speed."""

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
    from harness.models.scratch import hugepages

    if hugepages.available() is None:  # the decoder's weights sit on 2 MiB pages: the limit reads them too
        assert "sum_huge_pages" in reads


def test_matmul_peak_figures():
    from harness.benchmark.machine import matmul_peak

    shapes = ((64, 32, 48), (16, 16, 16))
    p = matmul_peak(shapes=shapes, repetitions=1)
    assert [(s["m"], s["k"], s["n"]) for s in p["shapes"]] == list(shapes)
    for s in p["shapes"]:
        assert s["flops"] == 2 * s["m"] * s["k"] * s["n"] and s["shape"] == f"[{s['m']} x {s['k']}] @ [{s['k']} x {s['n']}]"
        assert {"mm", "linear"} <= set(s["gflop_s_by_kernel"]) and all(v > 0 for v in s["gflop_s_by_kernel"].values())
        assert s["gflop_s"] == max(s["gflop_s_by_kernel"].values())
    assert p["peak_gflop_s"] == max(s["gflop_s"] for s in p["shapes"]) > 0
    assert p["threads"] >= 1 and p["repetitions"] == 1 and p["dtype"] == "float32"


def test_attention_rate_figures():
    from harness.benchmark.machine import attention_rate

    a = attention_rate(length=32, n_heads=2, head_dim=8, repetitions=1)
    assert a["flops"] == 4 * 2 * 8 * (32 * 33 // 2) and a["gflop_s"] > 0
    assert (a["length"], a["n_heads"], a["head_dim"], a["repetitions"]) == (32, 2, 8, 1) and a["threads"] >= 1


def tiny_config(**changes):
    from harness.models.scratch.config import ModelConfig

    return ModelConfig(**{"architecture": "llama", "vocab_size": 10, "dim": 8, "n_layers": 2, "n_heads": 2,
                          "n_kv_heads": 1, "head_dim": 4, "ffn_dim": 16, **changes})


def test_forward_flops_by_hand():
    from harness.benchmark.flops import attended_positions, forward_flops, matrix_parameters

    # per layer: q 8x8, k and v 8x4 each, o 8x8, gate/up/down 8x16 each = 576; head 8x10
    assert matrix_parameters(tiny_config()) == (2 * 576, 80)
    # a 3-position window scoring all 3 and a 5-position one scoring its last 2:
    # weights 2 x (1152 x 8 positions + 80 x 5 scored); attention 4 x 2 heads x 4 x (1+2+3 + 1+..+5) x 2 layers
    f = forward_flops(tiny_config(), [(3, 3), (5, 2)])
    assert (f.windows, f.positions, f.scored) == (2, 8, 5)
    assert f.matrix_flops == 2 * (1152 * 8 + 80 * 5)
    assert f.attention_flops == 4 * 2 * 4 * (6 + 15) * 2
    assert f.total == f.matrix_flops + f.attention_flops and f.per_position == f.total / 8
    assert f.mean_attended == pytest.approx(21 / 8)
    # a sliding window caps what a position attends: min(p + 1, window)
    for length in range(1, 12):
        for window in (None, 1, 3, 20):
            assert attended_positions(length, window) == sum(min(p + 1, window or p + 1) for p in range(length))
    sliding = forward_flops(tiny_config(layer_windows=(2, None)), [(5, 5)])
    assert sliding.attended == (1 + 2 + 2 + 2 + 2) + 15
    with pytest.raises(ValueError):
        forward_flops(tiny_config(), [(3, 4)])


def test_matrix_parameters_are_the_decoders_matrices():
    """The count from the config equals the weights of the scratch decoder's Linear layers (its
    fused q/k/v and gate/up matrices included) on SmolLM2-135M: 106.2 M in the body, 28.3 M in
    the head, and with the embedding and the norms the model's 134,515,008 parameters."""
    import harness
    from harness.benchmark.flops import matrix_parameters
    from harness.models.scratch.packing import Linear

    lm = harness.load_model("scratch:smollm2-135m", dtype="float32", device="cpu")
    linears = {name: m.weight.numel() for name, m in lm.model.named_modules() if isinstance(m, Linear)}
    head = linears.pop("output")
    assert matrix_parameters(lm.config) == (sum(linears.values()), head) == (106_168_320, 28_311_552)


def test_ceilings_arithmetic():
    bench = load_bench()  # its ceilings module sits beside it
    ceilings, render_ceilings = bench.ceilings, bench.render_ceilings
    rows = [{"task": "peer_rolling", "runner": "lm-eval", "eval_s": 80.0, "peak_rss_mib": 6000.0},
            {"task": "peer_rolling", "runner": "scratch:m", "eval_s": 40.0, "peak_rss_mib": 1500.0, "tokens_requested": 100},
            {"task": "peer_mc", "runner": "lm-eval", "eval_s": 20.0, "peak_rss_mib": 1200.0},
            {"task": "peer_mc", "runner": "scratch:m", "eval_s": 5.0, "peak_rss_mib": 950.0}]
    child = {"floor": {"imports_peak_mib": 250.0, "loaded_peak_mib": 900.0, "loaded_rss_mib": 850.0,
                       "weight_bytes": 538_000_000, "spec": "scratch:m"},
             "rolling": {"window_positions": [60, 40], "window_scored": [60, 40],
                         "flops": {"windows": 2, "positions": 100, "scored": 100, "n_layers": 2, "body_matrix_params": 10,
                                   "head_matrix_params": 5, "matrix_flops": 3e12, "attention_flops": 1e12,
                                   "total": 4e12, "per_position": 4e10, "mean_attended": 25.0},
                         "config": {"n_layers": 2, "n_heads": 2, "head_dim": 4, "max_length": 64}},
             "matmul": {"peak_gflop_s": 100.0, "threads": 2, "repetitions": 3,
                        "shapes": [{"shape": "[2 x 2] @ [2 x 2]", "gflop_s": 100.0}]},
             "attention": {"gflop_s": 20.0, "length": 60}}
    c = ceilings(rows, child)
    roof, floor = c["roof"], c["floor"]
    assert roof["roof_s"] == pytest.approx(40.0)  # 4 TFLOP at 100 GFLOP/s
    assert roof["max_speedup_over_lmeval"] == pytest.approx(2.0) and roof["target_speedup"] == 3.0
    assert roof["target_gflop_s"] == pytest.approx(150.0) and roof["target_fraction_of_peak"] == pytest.approx(1.5)
    # the weight products' 3 TFLOP at 100 GFLOP/s, attention's 1 TFLOP at 20
    assert roof["roof_attention_s"] == pytest.approx(30.0 + 50.0)
    assert roof["max_speedup_over_lmeval_attention"] == pytest.approx(1.0)
    scratch = next(r for r in roof["runners"] if r["runner"] == "scratch:m")
    assert scratch["achieved_gflop_s"] == pytest.approx(100.0) and scratch["fraction_of_peak"] == pytest.approx(1.0)
    assert scratch["speedup_eval"] == pytest.approx(2.0) and roof["positions_mismatch"] == []
    by_task = {t["task"]: t for t in floor["tasks"]}
    assert by_task["peer_rolling"]["allowed_mib"] == pytest.approx(2000.0) and by_task["peer_rolling"]["reachable"]
    assert by_task["peer_mc"]["allowed_mib"] == pytest.approx(400.0) and by_task["peer_mc"]["reachable"] is False
    text = "\n".join(render_ceilings(c, child, "m"))
    assert "Compute roof" in text and "Memory floor" in text and "2.00x" in text and "beyond" in text
    assert "| the roof with attention at torch's causal-attention rate (20.0 GFLOP/s at 60 positions) | 80.0 | 50.0 | 0.50 | 1.00x |" in text
    assert "| peer_mc | 1200 | 400 | 900 | 950 | no: below the floor |" in text
    # a runner that reports other token counts than the counted windows is flagged
    rows[1]["tokens_requested"] = 99
    assert ceilings(rows, child)["roof"]["positions_mismatch"] == ["scratch:m"]


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
@pytest.mark.timeout(3600)  # 14 processes; on a loaded 2-core machine this has taken 15 minutes
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

    # the compute roof: the counted windows are the positions every harness runner requested
    # (lm-eval reports none), the FLOPs are SmolLM2's (2 x 134.5 M weights + attention) per position
    c, child = data["ceilings"], data["ceilings_child"]
    roof, floor = c["roof"], c["floor"]
    assert roof["positions_mismatch"] == []
    for runner in bench.RUNNERS[1:]:
        assert rows[("peer_rolling", runner)]["tokens_requested"] == roof["positions_counted"]
    f = child["rolling"]["flops"]
    assert f["positions"] == sum(child["rolling"]["window_positions"]) == f["scored"] > 0
    assert f["matrix_flops"] == 2 * (106_168_320 + 28_311_552) * f["positions"]
    assert 2.69e8 < f["per_position"] < 2.69e8 + 4 * 30 * 9 * 64 * max(child["rolling"]["window_positions"])
    assert child["matmul"]["peak_gflop_s"] > 0 and roof["roof_s"] == pytest.approx(f["total"] / child["matmul"]["peak_gflop_s"] / 1e9)
    assert {r["runner"] for r in roof["runners"]} == set(bench.RUNNERS)
    for r in roof["runners"]:
        assert r["achieved_gflop_s"] > 0 and r["fraction_of_peak"] == pytest.approx(r["achieved_gflop_s"] / roof["peak_gflop_s"])
    assert roof["max_speedup_over_lmeval"] == pytest.approx(rows[("peer_rolling", "lm-eval")]["eval_s"] / roof["roof_s"])
    a = child["attention"]
    assert a["gflop_s"] > 0 and a["length"] == max(child["rolling"]["window_positions"]) and (a["n_heads"], a["head_dim"]) == (9, 64)
    assert roof["roof_attention_s"] == pytest.approx(f["matrix_flops"] / roof["peak_gflop_s"] / 1e9 + f["attention_flops"] / a["gflop_s"] / 1e9)
    # the memory floor: the imports, then the float32 weights (538 MB), before any evaluation
    assert 530e6 < floor["weight_bytes"] < 540e6 and 50 < floor["imports_peak_mib"] < floor["floor_mib"] < 20_000
    assert floor["floor_mib"] >= floor["imports_peak_mib"] + floor["weight_bytes"] / 2**20 * 0.9
    assert [t["task"] for t in floor["tasks"]] == bench.TASKS
    for t in floor["tasks"]:
        assert t["allowed_mib"] == pytest.approx(t["lmeval_peak_mib"] / 3) and t["reachable"] == (t["allowed_mib"] >= floor["floor_mib"])
    assert "Compute roof of peer_rolling" in table and "Memory floor" in table and "achieved GFLOP/s" in table
