"""`harness score` (harness.cli.score over harness.metrics.scoring): files in, values with CIs out."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from harness.errors import HarnessError
from harness.cli.score import add_arguments as add_score_arguments
from harness.cli.score import run as run_score
from harness.metrics.scoring import score_files
from tests.conftest import REPO


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="harness score")
    add_score_arguments(parser)
    return parser.parse_args(list(argv))


def run(capsys, *argv: str) -> str:
    assert run_score(parse(*argv)) == 0
    return capsys.readouterr().out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("score")
    rows = [
        json.loads(line) for line in (REPO / "tasks/translation/en_zh.jsonl").read_text().splitlines() if line.strip()
    ]
    en_refs = [r["en"] for r in rows][:60]
    en_hyps = [" ".join(r.split()[::-1][:8]) if i % 4 == 0 else r.replace("the ", "a ") for i, r in enumerate(en_refs)]
    en_hyps[5] = ""  # an empty hypothesis line
    zh_refs = [r["zh"] for r in rows][:60]
    zh_hyps = [r[1:] if i % 2 else r[::-1] for i, r in enumerate(zh_refs)]
    paths = {}
    for name, lines in (("en.hyp", en_hyps), ("en.ref", en_refs), ("zh.hyp", zh_hyps), ("zh.ref", zh_refs)):
        paths[name] = folder / name
        paths[name].write_text("\n".join(lines) + "\n", encoding="utf-8")
    paths["en.jsonl"] = folder / "en.jsonl"
    paths["en.jsonl"].write_text(
        "".join(
            json.dumps({"output": h, "gold": [r, r.upper()], "question": "Translate."}) + "\n"
            for h, r in zip(en_hyps, en_refs)
        )
    )
    return paths, en_hyps, en_refs, zh_hyps, zh_refs


def sacrebleu_cli(ref, hyp, *args):
    out = subprocess.run(
        [sys.executable, "-m", "sacrebleu", str(ref), "-i", str(hyp), *args, "-w", "10"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = json.loads(out)
    return result if isinstance(result, list) else [result]


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_json_values_equal_sacrebleu_command_line(capsys, files, lang):
    paths, *_ = files
    hyp, ref = paths[f"{lang}.hyp"], paths[f"{lang}.ref"]
    argv = ["-m", "bleu", "-m", "chrf", "-m", "ter", "-m", "chrf_pp", "-p", str(hyp), "-r", str(ref), "--json"]
    extra = []
    if lang == "zh":
        argv += ["--lang", "zh"]
        extra = ["-tok", "zh", "--ter-normalized", "--ter-asian-support"]
    result = json.loads(run(capsys, *argv))
    cli = sacrebleu_cli(ref, hyp, "-m", "bleu", "chrf", "ter", *extra)
    cli += sacrebleu_cli(ref, hyp, "-m", "chrf", "--chrf-word-order", "2")
    for name, expected in zip(["bleu", "chrf", "ter", "chrf_pp"], cli):
        got = result["metrics"][name]
        assert f"{got['value']:.10f}" == f"{expected['score']:.10f}", name
        assert got["signature"]["signature"] == expected["signature"], name
        assert got["ci_low"] <= got["value"] <= got["ci_high"], name
        assert got["stderr"] > 0
    assert result["n"] == 60
    assert result["bootstrap"] == {"n_boot": 1000, "seed": 1234, "ci": "percentile 95%"}


def test_table_output_and_rouge(capsys, files):
    paths, en_hyps, en_refs, *_ = files
    out = run(capsys, "-m", "rougeL", "-m", "bleu", "-p", str(paths["en.hyp"]), "-r", str(paths["en.ref"]))
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["metric", "value", "stderr", "95%", "CI"]
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    expected = sum(scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(en_hyps, en_refs)) / len(en_refs)
    row = next(line for line in lines if line.startswith("rougeL"))
    assert f"{expected:.4f}" in row and "[" in row
    bleu = sacrebleu.corpus_bleu(en_hyps, [en_refs]).score
    assert f"{bleu:.4f}" in next(line for line in lines if line.startswith("bleu"))
    assert "bleu: nrefs:1|case:mixed|eff:no|tok:13a" in out


def test_jsonl_fields_multiple_references(capsys, files):
    paths, en_hyps, en_refs, *_ = files
    result = json.loads(
        run(
            capsys,
            "-m",
            "bleu",
            "-m",
            "token_f1",
            "-m",
            "distinct_2",
            "-p",
            str(paths["en.jsonl"]),
            "--prediction-field",
            "output",
            "--reference-field",
            "gold",
            "--json",
        )
    )
    expected = sacrebleu.corpus_bleu(en_hyps, [en_refs, [r.upper() for r in en_refs]]).score
    assert result["metrics"]["bleu"]["value"] == expected
    assert "nrefs:2" in result["metrics"]["bleu"]["signature"]["signature"]
    assert 0 < result["metrics"]["token_f1"]["value"] < 1
    # the same references given as two plain files
    upper = paths["en.ref"].with_name("en.upper.ref")
    upper.write_text("\n".join(r.upper() for r in en_refs) + "\n")
    two = score_files(["bleu"], str(paths["en.hyp"]), [str(paths["en.ref"]), str(upper)], n_boot=10)
    assert two["metrics"]["bleu"]["value"] == expected


def test_options(capsys, files):
    paths, en_hyps, en_refs, *_ = files
    result = json.loads(
        run(
            capsys,
            "-m",
            "bleu",
            "-m",
            "rouge1",
            "-p",
            str(paths["en.hyp"]),
            "-r",
            str(paths["en.ref"]),
            "-o",
            "bleu.tokenize=char",
            "-o",
            "use_stemmer=true",
            "--bootstrap",
            "50",
            "--seed",
            "3",
            "--json",
        )
    )
    assert result["metrics"]["bleu"]["value"] == sacrebleu.BLEU(tokenize="char").corpus_score(en_hyps, [en_refs]).score
    assert result["metrics"]["rouge1"]["signature"]["options"]["use_stemmer"] is True
    with pytest.raises(HarnessError, match="no selected metric has an option 'smoothing'"):
        run(capsys, "-m", "bleu", "-p", str(paths["en.hyp"]), "-r", str(paths["en.ref"]), "-o", "smoothing=3")
    with pytest.raises(HarnessError, match="not among --metric"):
        run(capsys, "-m", "bleu", "-p", str(paths["en.hyp"]), "-r", str(paths["en.ref"]), "-o", "chrf.beta=3")


def test_bad_input(tmp_path, files):
    paths, *_ = files
    hyp, ref = str(paths["en.hyp"]), str(paths["en.ref"])
    short = tmp_path / "short.ref"
    short.write_text("one\ntwo\n")
    with pytest.raises(
        HarnessError, match=r"60 predictions but .*short.ref has 2 references; the first unpaired item is at position 2"
    ):
        score_files(["bleu"], hyp, [str(short)])
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(HarnessError, match=r"metric 'chrf': there are no predictions to score in .*empty.txt"):
        score_files(["chrf"], str(empty), [str(empty)])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prediction": "a", "reference": "a"}\n{"prediction": null, "reference": "b"}\n')
    with pytest.raises(
        HarnessError, match=r"metric 'rougeL': the prediction at position 1 \(line 2 of .*bad.jsonl\).* is None"
    ):
        score_files(["rougeL"], str(bad))
    bad.write_text('{"prediction": "a", "reference": "a"}\n\n{"prediction": "b", "reference": 7}\n')
    with pytest.raises(
        HarnessError, match=r"metric 'bleu': the reference at position 1 \(line 3 of .*bad.jsonl\).* int"
    ):
        score_files(["bleu"], str(bad))
    bad.write_text('{"prediction": "a", "reference": "a"}\n{"output": "b"}\n')
    with pytest.raises(HarnessError, match=r"bad.jsonl, line 2: no field 'prediction'"):
        score_files(["bleu"], str(bad))
    bad.write_text('{"prediction": "a"\n')
    with pytest.raises(HarnessError, match=r"line 1: not valid JSON"):
        score_files(["bleu"], str(bad))
    with pytest.raises(HarnessError, match="needs references"):
        score_files(["bleu"], hyp)
    with pytest.raises(HarnessError, match="file not found"):
        score_files(["bleu"], str(tmp_path / "missing.txt"), [ref])
    with pytest.raises(HarnessError, match="unknown metric"):
        score_files(["blue"], hyp, [ref])
    with pytest.raises(HarnessError, match="log-likelihoods"):
        score_files(["acc"], hyp, [ref])
    with pytest.raises(HarnessError, match="listed twice"):
        score_files(["bleu", "bleu"], hyp, [ref])


def test_empty_hypotheses_file_lines_score_zero(tmp_path):
    hyp, ref = tmp_path / "h.txt", tmp_path / "r.txt"
    hyp.write_text("\n\n\n")
    ref.write_text("a b c\nd e f\ng h i\n")
    result = score_files(["bleu", "chrf", "rouge1", "token_f1", "ter"], str(hyp), [str(ref)], n_boot=20)
    assert [result["metrics"][m]["value"] for m in ("bleu", "chrf", "rouge1", "token_f1")] == [0.0, 0.0, 0.0, 0.0]
    assert result["metrics"]["ter"]["value"] == 100.0
    assert result["n"] == 3


def test_reference_free_metric_without_references(capsys, tmp_path):
    hyp = tmp_path / "h.txt"
    hyp.write_text("i like it\ni like it a lot\n")
    result = json.loads(run(capsys, "-m", "distinct_1", "-p", str(hyp), "--json"))
    assert result["metrics"]["distinct_1"]["value"] == pytest.approx(5 / 8)
    assert result["references"] == []


def test_python_score_function():
    from harness.metrics.scoring import score

    hyps, refs = ["the cat sat on a mat", "hello world", ""], ["the cat sat on the mat", "hello there world", "x y"]
    result = score("bleu", hyps, refs, n_boot=50)
    assert result["value"] == sacrebleu.corpus_bleu(hyps, [refs]).score
    assert result["per_sample"][0] == pytest.approx(sacrebleu.sentence_bleu(hyps[0], [refs[0]]).score)
    assert score("chrf", hyps, [[r] for r in refs], char_order=4)["signature"]["signature"].startswith(
        "nrefs:1|case:mixed|eff:yes|nc:4"
    )
    with pytest.raises(HarnessError, match=r"metric 'bleu': 3 predictions but 2 references"):
        score("bleu", hyps, refs[:2])
