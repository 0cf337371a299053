"""The fiqa command line: dispatch, help, and the report tool."""

from __future__ import annotations

import json

import pytest

from fiqa.cli.main import _expand_inputs, main
from fiqa.eval.report import write_comparison


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for cmd in ["prepare", "label", "train", "evaluate", "score", "report", "demo-data"]:
        assert cmd in out


def test_unknown_command_exits_2(capsys: pytest.CaptureFixture[str]):
    assert main(["fly"]) == 2
    assert "unknown command 'fly'" in capsys.readouterr().err


def test_expand_inputs_folders_lists_and_files(tmp_path):
    (tmp_path / "d").mkdir()
    for name in ["b.png", "a.jpg", "notes.md"]:
        (tmp_path / "d" / name).write_bytes(b"x")
    listing = tmp_path / "list.txt"
    listing.write_text("x/1.jpg\n\nx/2.jpg\n")
    got = _expand_inputs([str(tmp_path / "d"), str(listing), "single.png"])
    assert [p.name for p in got] == ["a.jpg", "b.png", "1.jpg", "2.jpg", "single.png"]


def _eval(value: float) -> dict:
    cell = {"pauc@0.2": value, "pauc@0.3": value + 0.1, "fnmr@0": 0.2}
    return {"demo_val": {"sface": {"model": cell, "serfiq": {**cell, "pauc@0.2": 0.9}}}}


def test_report_compares_runs_and_marks_the_best(tmp_path):
    a, b = tmp_path / "a" / "metrics" / "eval.json", tmp_path / "b" / "metrics" / "eval.json"
    for path, value in [(a, 0.5), (b, 0.95)]:
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(_eval(value)))
    md, html = write_comparison([a, b], tmp_path / "out" / "compare")
    text = md.read_text()
    # one row per method and run, best per column in bold
    assert "| model (a) | **0.5000** | **0.5000** |" in text
    assert "| model (b) | 0.9500 | 0.9500 |" in text
    assert "<b>0.5000</b>" in html.read_text()
    with pytest.raises(FileNotFoundError, match=r"missing\.json"):
        write_comparison([tmp_path / "missing.json"], tmp_path / "x")
