"""fiqa study: a small study end to end on the demo, its resumption after a kill, and the state
file that decides what a rerun skips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import fiqa.study.run as study_run
from conftest import demo_config
from fiqa.cli.study import study
from fiqa.config.typed import ConfigError
from fiqa.core.artifacts import QUALITY_CHECKPOINT, QUALITY_ONNX

METHODS = ["faceqnet", "serfiq+ediffiqa"]
BLIND = ["serfiq", "detector", "sharpness"]
TINY_DDPM = ["ddpm.unet.sample_size=16", "ddpm.unet.channel_mults=[1,2]", "ddpm.max_steps=2",
             "label.methods.diffiqa.repeats=1"]  # fmt: skip


def _config(root: Path, small_demo: Path, *overrides: str, methods: list[str] = METHODS,
            blind: list[str] = BLIND):  # fmt: skip
    return demo_config(root, small_demo, "debug=smoke", "trainer.max_epochs=1", "study.name=small",
                       f"study.methods=[{','.join(methods)}]", f"study.blind=[{','.join(blind)}]",
                       "study.benchmarks=[{format: prepared, split: all}]",  # val has no errors
                       *overrides)  # fmt: skip


def test_small_study_resumes_after_a_kill_without_retraining(
    tmp_path: Path, small_demo: Path, monkeypatch: pytest.MonkeyPatch
):
    cfg = _config(tmp_path, small_demo)
    fit = study_run.fit_quality_model
    trained: list[str] = []

    def killed_at_second_method(job, *args):
        trained.append(job.label_column)
        if len(trained) == 2:
            raise KeyboardInterrupt("killed")  # as a SLURM preemption would
        return fit(job, *args)

    monkeypatch.setattr(study_run, "fit_quality_model", killed_at_second_method)
    with pytest.raises(KeyboardInterrupt):
        study(cfg.copy())
    directory = tmp_path / "studies" / "small"
    first = directory / "models" / METHODS[0] / QUALITY_ONNX
    first_written = first.stat().st_mtime_ns
    assert not (directory / "models" / METHODS[1] / QUALITY_ONNX).exists()

    def recorded(job, *args):
        trained.append(job.label_column)
        return fit(job, *args)

    def no_prepare(*args):
        raise AssertionError("the rerun prepared the faces again")

    monkeypatch.setattr(study_run, "fit_quality_model", recorded)
    monkeypatch.setattr(study_run, "prepare_faces", no_prepare)
    summary = study(cfg.copy())

    assert trained == [METHODS[0], METHODS[1], METHODS[1]]  # the finished one is not retrained
    assert first.stat().st_mtime_ns == first_written
    state = json.loads((directory / "state.json").read_text())
    assert set(state["steps"]) == {"prepare", "label", *(f"train/{m}" for m in METHODS)}
    assert set(state["seconds"]) == {"evaluate", *state["steps"]}  # each from its last run

    # Every model is kept where the README says, usable by fiqa score --checkpoint.
    from fiqa.quality.scoring import QualityScorer

    for method in METHODS:
        for name in (QUALITY_CHECKPOINT, QUALITY_ONNX):
            scorer = QualityScorer.from_path(directory / "models" / method / name)
            scores = scorer.score_prepared(directory / "prepared", batch_size=16)
            assert np.isfinite(scores["quality"]).all() and scores["quality"].std() > 0

    # The blind table: the trained models as <method>(R), the per-image methods and baselines.
    results = json.loads((directory / "metrics" / "study.json").read_text())
    (bench,) = results
    rows = results[bench]["sface"]
    expected = [f"{m}(R)" for m in METHODS] + BLIND
    assert [m for m in rows if rows[m].get("kind") in {"blind"}] == expected
    assert not [m for m in rows if rows[m].get("kind") == "label"]
    assert rows["faceqnet(R)"]["same_model"] is True  # trained on SFace labels, scored by SFace
    report = (directory / "reports" / "study.md").read_text()
    assert "| faceqnet(R) |" in report and "Best blind method (mean)" in report
    assert (directory / "reports" / "study.html").is_file()
    assert list((directory / "reports").glob("edc_*.png"))
    assert all(np.isfinite(v) for v in summary.values())

    labels = pd.read_parquet(directory / "labels" / "labels.parquet")
    corrected, base = labels["serfiq+ediffiqa"], labels["serfiq"]
    assert corrected.between(0, 1).all() and not np.allclose(corrected, base)

    # A method added to the study relabels (one more column) and trains only itself.
    trained.clear()
    study(_config(tmp_path, small_demo, methods=[*METHODS, "crfiqa"]))
    assert trained == ["crfiqa"] and first.stat().st_mtime_ns == first_written


def test_state_skips_a_step_only_with_its_inputs_and_output(tmp_path: Path):
    state = study_run._State(tmp_path / "state.json")
    state.finish("prepare", "k", {"prepare": 1.25})
    reread = study_run._State(tmp_path / "state.json")
    assert reread.data == {"steps": {"prepare": "k"}, "seconds": {"prepare": 1.2}}
    output = tmp_path / "out"
    assert not reread.done("prepare", "k", output)  # its output is gone
    output.touch()
    assert reread.done("prepare", "k", output)
    assert not reread.done("prepare", "other inputs", output)


def test_unknown_study_method_is_named(tmp_path: Path, small_demo: Path):
    cfg = _config(tmp_path, small_demo, methods=["faceqnet", "crfiqa+typo"])
    with pytest.raises(ConfigError, match=r"study.methods.*crfiqa\+typo"):
        study(cfg)


@pytest.mark.slow
def test_a_diffiqa_study_trains_its_own_ddpm_once(tmp_path: Path, small_demo: Path):
    """DifFIQA in a study: the study's DDPM on its training set (``ddpm/``), DifFIQA labels
    from it for DifFIQA(R), DifFIQA on the benchmark faces; a rerun skips the DDPM."""
    cfg = _config(tmp_path, small_demo, *TINY_DDPM, methods=["diffiqa"], blind=["diffiqa"])
    study(cfg.copy())
    directory = tmp_path / "studies" / "small"
    record = json.loads((directory / "ddpm" / "ddpm.json").read_text())
    assert record["trained"] and record["prepared"] == str(directory / "prepared")
    state = json.loads((directory / "state.json").read_text())
    assert set(state["steps"]) == {"prepare", "ddpm", "label", "train/diffiqa"}
    labels = pd.read_parquet(directory / "labels" / "labels.parquet")
    assert labels["diffiqa"].notna().all() and labels["diffiqa"].std() > 0
    (bench,) = json.loads((directory / "metrics" / "study.json").read_text()).values()
    assert {"diffiqa(R)", "diffiqa"} <= set(bench["sface"])
    written = (directory / "ddpm" / "ddpm.json").stat().st_mtime_ns
    study(cfg.copy())
    assert (directory / "ddpm" / "ddpm.json").stat().st_mtime_ns == written
