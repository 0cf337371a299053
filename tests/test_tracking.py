"""W&B runs are named by what they are, tagged with their overrides, and end failed on errors.

The offline runs are read back from their ``run-<id>.wandb`` file, the record log that
``wandb sync`` uploads: it holds the run record (name, group, tags, config), the summary updates
and the exit record whose exit code makes the run "failed" (non-zero) or "finished" (0) in W&B.
The offline run directory has no ``files/wandb-summary.json`` (wandb-core writes none offline),
and wandb 0.31 ships no Python reader of the file, so ``wandb_records`` reads its format:
a 7-byte header (``:W&B``, magic, version), then LevelDB-log chunks in 32 KiB blocks (a 7-byte
chunk header: CRC, length, type FULL/FIRST/MIDDLE/LAST), each whole record a protobuf ``Record``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

from fiqa.config import compose_config, config_dir
from fiqa.config.validate import load_settings
from fiqa.stages import StageError
from fiqa.tracking import tracked_run, wandb_init_kwargs

_BLOCK, _CHUNK_HEADER, _FULL, _LAST = 32768, 7, 1, 4


def wandb_records(run_dir: Path) -> dict[str, list[Any]]:
    """The records of an offline run's ``.wandb`` file by type (``run``, ``summary``, ``exit``)."""
    from wandb.proto import wandb_internal_pb2

    (path,) = run_dir.glob("run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B", path
    records: dict[str, list[Any]] = {}
    pos, pending = 7, b""
    while pos + _CHUNK_HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _CHUNK_HEADER:  # the block's zero padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + _CHUNK_HEADER])
        if kind == 0:  # zero-filled rest of a block
            pos += left
            continue
        pending += data[pos + _CHUNK_HEADER : pos + _CHUNK_HEADER + length]
        pos += _CHUNK_HEADER + length
        if kind in (_FULL, _LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            kind_name = record.WhichOneof("record_type")
            records.setdefault(kind_name, []).append(getattr(record, kind_name))
            pending = b""
    return records


def offline_run(root: Path) -> dict[str, list[Any]]:
    """The records of the one offline W&B run under ``root/wandb``, once written: ``teardown``
    stops W&B's service process, which closes (flushes) every run file it writes."""
    import wandb

    wandb.teardown()
    (run_dir,) = (root / "wandb").glob("offline-run-*")
    return wandb_records(run_dir)


def summary_of(records: dict[str, list[Any]]) -> dict[str, str]:
    return {u.key: u.value_json for s in records.get("summary", []) for u in s.update if u.key}


@pytest.fixture
def hydra_multirun_job() -> Iterator[None]:
    """Hydra's runtime config of multirun job 3 with ``OVERRIDES``, as in a ``-m`` sweep."""
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        hydra_cfg = compose("config", overrides=[*OVERRIDES, "hydra.mode=MULTIRUN",
                                                 "hydra.job.num=3"], return_hydra_config=True)  # fmt: skip
    HydraConfig.instance().set_config(hydra_cfg)
    try:
        yield
    finally:
        HydraConfig.instance().cfg = None  # later tests run outside any Hydra app


OVERRIDES = ["label=serfiq", "paths.root=/tmp/sweep", "train.batch_size=8"]


def test_run_names_say_experiment_stage_label_target_and_benchmark() -> None:
    def names(*overrides: str) -> dict[str, str]:
        settings = load_settings(compose_config(list(overrides)))
        stages = ("prepare", "label", "train", "evaluate")
        return {s: wandb_init_kwargs(settings, s)["name"] for s in stages}

    assert names() == {"prepare": "demo-prepare", "label": "demo-label-faceqnet",
                       "train": "demo-train-faceqnet",
                       "evaluate": "demo-evaluate-faceqnet-demo_val"}  # fmt: skip
    serfiq = names("label=serfiq")
    assert serfiq["label"] == "demo-label-serfiq" != names()["label"]
    assert serfiq["train"] == "demo-train-serfiq"
    assert names("experiment=faceqnet")["train"] == "faceqnet-train-faceqnet"
    extra = names("eval.benchmarks=[{format: bin, path: /data/lfw.bin}]")
    assert extra["evaluate"] == "demo-evaluate-faceqnet-demo_val+lfw"
    kwargs = wandb_init_kwargs(load_settings(compose_config(["experiment=faceqnet"])), "train")
    assert (kwargs["group"], kwargs["job_type"]) == ("faceqnet", "train")
    assert kwargs["tags"] == [] and kwargs["config"]["overrides"] == []  # no Hydra app here


def test_a_multirun_job_is_named_by_its_number_and_tagged_with_its_overrides(
    hydra_multirun_job: None,
) -> None:
    kwargs = wandb_init_kwargs(load_settings(compose_config(OVERRIDES)), "train")
    assert kwargs["name"] == "demo-train-serfiq-job3"
    assert kwargs["tags"] == ["label=serfiq", "train.batch_size=8"]  # paths.*: not a tag
    assert kwargs["config"]["overrides"] == OVERRIDES
    assert kwargs["group"] == "demo"


def _tracked_cfg(root: Path, monkeypatch: pytest.MonkeyPatch, *overrides: str):
    monkeypatch.setenv("WANDB_MODE", "offline")
    return compose_config([f"paths.root={root}", "logger=wandb", *overrides])


def test_a_failing_stage_body_ends_its_run_failed_with_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _tracked_cfg(tmp_path / "failed", monkeypatch, "label=serfiq")
    with pytest.raises(StageError, match="boom"), tracked_run(load_settings(cfg), "label"):
        raise StageError("label: boom")
    records = offline_run(tmp_path / "failed")
    (run,) = records["run"]
    assert (run.display_name, run.run_group, run.job_type) == ("demo-label-serfiq", "demo", "label")
    assert list(run.tags) == []  # no Hydra app: no command-line overrides
    assert [e.exit_code for e in records["exit"]] == [1]
    assert summary_of(records)["error"] == '"StageError: label: boom"'

    ok = _tracked_cfg(tmp_path / "ok", monkeypatch)  # the same run without an error: exit 0
    with tracked_run(load_settings(ok), "prepare") as tracking:
        tracking.wandb.summary["prepare/faces"] = 3
    records = offline_run(tmp_path / "ok")
    assert [e.exit_code for e in records["exit"]] == [0]
    assert "error" not in summary_of(records)


def test_a_failing_lightning_fit_ends_its_wandb_run_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The train stage's path: Lightning's WandbLogger writes into the stage's one run, which
    ends failed with the fit's error."""
    cfg = _tracked_cfg(tmp_path, monkeypatch, "label=serfiq")
    with (
        pytest.raises(RuntimeError, match="out of memory"),
        tracked_run(load_settings(cfg), "train") as tracking,
    ):
        logger = tracking.lightning_logger()
        logger.log_metrics({"train/loss": 1.0}, step=0)
        assert tracking.lightning_logger("distill").experiment is logger.experiment  # one run
        raise RuntimeError("out of memory")
    records = offline_run(tmp_path)
    assert records["run"][0].display_name == "demo-train-serfiq"
    assert [e.exit_code for e in records["exit"]] == [1]
    assert summary_of(records)["error"] == '"RuntimeError: out of memory"'
    off = compose_config([f"paths.root={tmp_path}", "logger=none"])
    with tracked_run(load_settings(off), "train") as tracking:
        assert tracking.wandb is None and tracking.lightning_logger() is False
