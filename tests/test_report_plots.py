"""`harness plot`: the size plot and the grouped bars, PNG and SVG, deterministic."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from harness.cli import main
from harness.errors import HarnessError
from harness.report.collect import columns, load_entries
from harness.report.plots import save_plots
from tests.test_report_data import FakeModel, write_results


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plots")
    return write_results(folder, "sizes", [FakeModel("hf:small", n_params=135_000_000, quality=0.5),
                                           FakeModel("hf:big", n_params=1_700_000_000, quality=0.9),
                                           FakeModel("scratch:small", backend="scratch", quality=0.5,
                                                     tasks=("mc_colors", "lm_toy"))])


def test_both_plots_in_both_formats(results, tmp_path):
    entries = load_entries([results])
    paths = save_plots(entries, columns(entries), tmp_path)
    assert sorted(p.name for p in paths) == ["bars.png", "bars.svg", "size.png", "size.svg"]
    for p in paths:
        data = p.read_bytes()
        if p.suffix == ".png":
            assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
        else:
            root = ET.fromstring(data)
            assert root.tag.endswith("svg")
            text = data.decode()
            # every panel is there: task titles and metric axes; models in the legend
            assert "lm_toy" in text and "word_perplexity ↓" in text and "scratch:small" in text


def test_svg_is_deterministic(results, tmp_path):
    entries = load_entries([results])
    cols = columns(entries, ["mc_colors"])
    a = save_plots(entries, cols, tmp_path / "a", kinds=["size"], formats=["svg"])[0].read_bytes()
    b = save_plots(entries, cols, tmp_path / "b", kinds=["size"], formats=["svg"])[0].read_bytes()
    assert a == b


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
