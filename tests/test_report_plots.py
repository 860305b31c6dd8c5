"""`harness plot`: the figures that fit the results, one idea each, PNG and SVG, deterministic bytes,
chance lines on multiple choice, and point labels that never overlap."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from harness.cli import main
from harness.errors import HarnessError
from harness.report.collect import columns, load_entries
from harness.report.plots import chance_level, choose_kinds, efficiency_figure, save_plots, size_figure
from tests.test_report_data import FakeModel, write_results


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plots")
    return write_results(folder, "sizes", [FakeModel("hf:small", n_params=135_000_000, quality=0.5),
                                           FakeModel("hf:big", n_params=1_700_000_000, quality=0.9),
                                           FakeModel("scratch:small", backend="scratch", quality=0.5,
                                                     tasks=("mc_colors", "lm_toy"))])


def test_the_figures_that_fit_in_both_formats(results, tmp_path):
    entries = load_entries([results])
    assert choose_kinds(entries, columns(entries)) == ["size", "bars"]  # no benchmark results: no efficiency plot
    paths = save_plots(entries, columns(entries), tmp_path)
    assert sorted(p.name for p in paths) == ["bars.png", "bars.svg", "size.png", "size.svg"]
    for p in paths:
        data = p.read_bytes()
        if p.suffix == ".png":
            assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
        else:
            root = ET.fromstring(data)
            assert root.tag.endswith("svg") and root.get("width") == "504pt"  # 7 in: a page's width
            text = data.decode()
            # one panel per task, on its primary metric; every model in the legend
            assert "lm_toy" in text and "bits_per_byte ↓" in text and "word_perplexity" not in text
            assert "scratch:small" in text and "hf:big" in text
    one_size = write_results(tmp_path / "one", "one", [FakeModel("hf:a"), FakeModel("hf:b", quality=0.3)])
    same = load_entries([one_size])
    assert choose_kinds(same, columns(same)) == ["bars"]  # one parameter count: no size plot


def test_size_plot_has_a_panel_per_task_and_the_chance_line(results):
    entries = load_entries([results])
    assert chance_level(entries, columns(entries, ["mc_colors"], ["acc"])[0]) == pytest.approx(0.25)
    assert chance_level(entries, columns(entries, ["lm_toy"], ["bits_per_byte"])[0]) is None
    fig = size_figure(entries, columns(entries))
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["mc_colors", "translate_toy", "lm_toy"]
    assert [ax.get_xscale() for ax in axes] == ["log"] * 3
    mc = axes[0]
    assert [line.get_ydata()[0] for line in mc.get_lines() if line.get_linestyle() == ":"] == [pytest.approx(0.25)]
    assert fig.get_size_inches()[0] == 7.0


@pytest.mark.parametrize("kind", ["size", "bars", "efficiency"])
def test_png_and_svg_are_deterministic(results, tmp_path, kind):
    paths = [results]
    if kind == "efficiency":
        paths.append(_bench(tmp_path, {"hf:small": 40.0, "hf:big": 12.0}))
    entries = load_entries(paths)
    cols = columns(entries)
    a = save_plots(entries, cols, tmp_path / "a", kinds=[kind])
    b = save_plots(entries, cols, tmp_path / "b", kinds=[kind])
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    assert b"Date" not in a[1].read_bytes() and b"matplotlib.org" not in a[0].read_bytes()


def _bench(folder, speeds: dict[str, float]):
    import json

    path = folder / "bench.json"
    path.write_text(json.dumps({"schema_version": 1, "kind": "benchmark", "finished": "2026-01-01", "evaluations": [
        {"model": {"spec": spec, "name": spec.split(":")[1]}, "efficiency": {"decode_tokens_per_s": v}}
        for spec, v in speeds.items()]}))
    return path


def test_efficiency_labels_never_overlap(tmp_path):
    from harness.report.figure_layout import any_overlap, label_boxes

    # six models crowded into one corner: the same speed within 2%, the same quality
    models = [FakeModel(f"hf:model-with-a-long-name-{i}", quality=0.7, seed=i % 2) for i in range(6)]
    quality = write_results(tmp_path, "crowd", models)
    bench = _bench(tmp_path, {m.spec: 50.0 + 0.2 * i for i, m in enumerate(models)})
    entries = load_entries([quality, bench])
    fig = efficiency_figure(entries, columns(entries))
    ax = fig.axes[0]
    labels = [t for t in ax.texts if t.get_text().startswith("hf:")]
    assert len(labels) == 6
    fig.canvas.draw()
    boxes = label_boxes(ax, labels)
    assert not any_overlap(boxes)
    frame = ax.get_window_extent()
    assert all(frame.x0 <= b.x0 and b.x1 <= frame.x1 and frame.y0 <= b.y0 and b.y1 <= frame.y1 for b in boxes)


def test_size_plot_needs_parameter_counts(tmp_path):
    path = write_results(tmp_path, "nosize", [FakeModel("api:remote", n_params=None)])
    entries = load_entries([path])
    with pytest.raises(HarnessError, match="parameter count"):
        save_plots(entries, columns(entries), tmp_path, kinds=["size"])
    assert [p.name for p in save_plots(entries, columns(entries), tmp_path, kinds=["bars"], formats=["png"])] == ["bars.png"]


def test_cli_plot(results, tmp_path, capsys):
    out = tmp_path / "pics"
    assert main(["plot", str(results), "-o", str(out), "--kind", "bars", "--format", "svg", "--prefix", "toy-",
                 "--metrics", "acc*"]) == 0
    assert capsys.readouterr().out.strip() == str(out / "toy-bars.svg")
    assert main(["plot", str(results), "--metrics", "nope", "-o", str(out)]) == 2
