"""The fiqa command line: dispatch, help, the report tool, and how stage errors are reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fiqa.cli.main import _expand_inputs, main
from fiqa.eval.report import write_comparison

REPO_ROOT = Path(__file__).resolve().parents[1]


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


def test_a_tool_reports_a_missing_file_in_one_line_and_v_shows_the_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    missing = tmp_path / "run" / "metrics" / "eval.json"
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")  # off; -v below turns it on, undone after
    with pytest.raises(SystemExit) as exit_:
        main(["report", str(missing), "--out", str(tmp_path / "out")])
    assert exit_.value.code == 1
    assert capsys.readouterr().err == (
        f"fiqa report: {missing} not found (give metrics/eval.json files)\n"
    )
    with pytest.raises(FileNotFoundError, match="not found"):
        main(["report", str(missing), "-v"])
    assert not (tmp_path / "out").exists()


def _command(tmp_path: Path, command: list[str], **env: str) -> subprocess.CompletedProcess:
    """``command`` run in ``tmp_path`` (Hydra's outputs/ go there), tracking off."""
    environ = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"} | env
    return subprocess.run([sys.executable, *command, f"paths.root={tmp_path}", "logger=none"],
                          cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=300)  # fmt: skip


def test_a_missing_input_ends_the_stage_in_one_line_without_a_traceback(tmp_path: Path):
    done = _command(tmp_path, ["-m", "fiqa.cli.main", "prepare", "data.root=/nonexistent"])
    assert done.returncode == 1, done.stderr
    assert done.stderr == "fiqa prepare: data.root /nonexistent is not a directory\n"


def test_a_config_error_names_the_key_in_one_line_and_exits_2(tmp_path: Path):
    """``python train.py`` too: the key is checked before anything is read."""
    done = _command(tmp_path, [str(REPO_ROOT / "train.py"), "prepare.shard_size=0"])
    assert done.returncode == 2, done.stderr
    assert done.stderr == "train.py: prepare.shard_size=0: must be >= 1\n"


def test_hydra_full_error_shows_the_traceback_of_a_user_error(tmp_path: Path):
    command = ["-m", "fiqa.cli.main", "prepare", "prepare.shard_size=0"]
    done = _command(tmp_path, command, HYDRA_FULL_ERROR="1")
    assert done.returncode == 1, done.stderr
    assert "Traceback (most recent call last)" in done.stderr
    assert "fiqa.config.typed.ConfigError: prepare.shard_size=0: must be >= 1" in done.stderr


def test_reported_errors_keep_bugs_and_fail_multirun_jobs(monkeypatch: pytest.MonkeyPatch):
    """In process: a bug passes through with its traceback; in a multirun a user error fails
    the job as a compact Hydra error (Hydra prints its message once the sweep's batch is done);
    ``-v`` is taken off the command line and turns full errors on."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from fiqa.cli.errors import JobError, reported_errors, verbose_errors
    from fiqa.config import config_dir
    from fiqa.stages import StageError

    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")  # off; undone after the test
    with pytest.raises(KeyError, match="bug"), reported_errors("fiqa train", "train"):
        raise KeyError("bug")
    with pytest.raises(SystemExit) as exit_, reported_errors("fiqa train", "train"):
        raise StageError("train: no labels")
    assert exit_.value.code == 1

    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        hydra_cfg = compose("config", ["hydra.mode=MULTIRUN", "hydra.job.num=1"],
                            return_hydra_config=True)  # fmt: skip
    HydraConfig.instance().set_config(hydra_cfg)
    try:
        job_failed = pytest.raises(JobError, match=r"^fiqa train: no labels$")
        with job_failed, reported_errors("fiqa train", "train"):
            raise StageError("train: no labels")
    finally:
        HydraConfig.instance().cfg = None

    assert verbose_errors(["fiqa train", "-v", "model.lr=1e-3"]) == ["fiqa train", "model.lr=1e-3"]
    assert os.environ["HYDRA_FULL_ERROR"] == "1"
    with pytest.raises(StageError), reported_errors("fiqa train", "train"):
        raise StageError("train: no labels")
