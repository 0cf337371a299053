"""The train stage's outputs: made in a staging directory, resumable, published in one rename.

A run writes everything into ``<models>.partial/`` (next to ``paths.models``)::

    run.json                 what the run is: its config and the hashes of its inputs
    checkpoints/last.ckpt    full training state, every epoch and every N steps (resume)
    quality.ckpt, quality.onnx, cost.md, student.pth, lineage.json

and, when training and export are done, replaces ``paths.models`` with it in one rename and
writes ``metrics/train.json``: a killed run leaves the previous models and metrics as they were
(every checkpoint file is itself written atomically). ``train.resume=true`` continues the staged
run from ``last.ckpt`` when ``run.json`` matches the new run, and refuses otherwise, naming the
differing keys; without it, staged work is discarded.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import Checkpoint

from fiqa.core.artifacts import LAST_CHECKPOINT, LINEAGE, TRAIN_METRICS
from fiqa.core.atomic import atomic_path, replace_dir, write_json_atomic
from fiqa.core.containers import differences
from fiqa.core.provenance import code_version

log = logging.getLogger(__name__)

RUN_RECORD = "run.json"
# train / trainer keys that change no weight: a run differing only in these may be resumed.
RUNTIME_KEYS = ("train.resume", "train.num_workers", "train.checkpoint_every_n_steps","trainer.enable_progress_bar",
                "trainer.enable_model_summary", "trainer.log_every_n_steps")  # fmt: skip


class ResumeError(RuntimeError):
    """``train.resume=true`` on staged work of another run."""


def staging_dir(models_dir: Path) -> Path:
    """Where a run of the train stage writing ``models_dir`` stages its outputs."""
    return models_dir.with_name(models_dir.name + ".partial")


def open_staging(staging: Path, identity: Mapping[str, Any], resume: bool) -> Path | None:
    """Prepare ``staging`` for the run ``identity``; return the checkpoint to resume from.

    Args:
        staging: The staging directory.
        identity: The run's config and input hashes (``run.json``).
        resume: ``train.resume``: continue staged work of the same run.

    Raises:
        ResumeError: ``resume`` and the staged work belongs to another run.
    """
    record, last = staging / RUN_RECORD, staging / LAST_CHECKPOINT
    if resume and last.is_file():
        staged = json.loads(record.read_text(encoding="utf-8")) if record.is_file() else {}
        differ = differences(staged, identity, RUNTIME_KEYS)
        if differ:
            raise ResumeError(
                f"train.resume=true: {last} belongs to another run; it differs in "
                f"{'; '.join(differ)}. Run without train.resume to start afresh, or with the "
                "killed run's config"
            )
        log.info("resuming from %s", last)
        return last
    if staging.exists():
        log.info("train: discarding staged work in %s (train.resume=%s)", staging, resume)
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    write_json_atomic(record, identity)
    return None


def publish(staging: Path, models_dir: Path, metrics_dir: Path, identity: Mapping[str, Any],
            summary: Mapping[str, float]) -> None:  # fmt: skip
    """Replace ``models_dir`` with the staged outputs (their lineage recorded, the resume state
    dropped) in one rename, then write ``metrics/train.json``."""
    shutil.rmtree(staging / Path(LAST_CHECKPOINT).parent, ignore_errors=True)
    (staging / RUN_RECORD).unlink(missing_ok=True)
    write_json_atomic(staging / LINEAGE, {**identity, **code_version()})
    replace_dir(staging, models_dir)
    # the labels trained on beside the metrics: a `labels.target` column in `dvc exp show`
    write_json_atomic(
        metrics_dir / TRAIN_METRICS, {**summary, "labels": identity.get("labels", {})}
    )


def train_position(checkpoint: Path) -> tuple[int, int]:
    """Epoch and batches of it already trained of a Lightning checkpoint (``(e + 1, 0)`` for
    one saved at the end of epoch ``e``). The file is memory-mapped, not read: Lightning loads it
    next."""
    loops = torch.load(checkpoint, "cpu", weights_only=True, mmap=True)["loops"]["fit_loop"]
    epoch = int(loops["epoch_progress"]["current"]["processed"])
    batches = loops["epoch_loop.batch_progress"]
    done = 0 if batches["is_last_batch"] else int(batches["current"]["ready"])
    return epoch, done


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint files written to a temporary file and renamed: a kill while saving
    leaves the previous checkpoint."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any,
                        storage_options: Any | None = None) -> None:  # fmt: skip
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


class ResumableState(Checkpoint):
    """Saves the full training state to ``path`` at the end of every epoch and, with
    ``every_n_steps``, every that many optimiser steps (``train.checkpoint_every_n_steps``).

    A ``Checkpoint``, so Lightning runs it after the other callbacks (it reorders checkpoint
    callbacks last, in their given order): listed after the best-model ``ModelCheckpoint``, the
    state it saves at an epoch's end includes that epoch's best-model update.

    The global random states (torch, numpy, random: dropout and the like) are part of it, so a
    resumed run draws what the uninterrupted run would have drawn.
    """

    def __init__(self, path: Path, every_n_steps: int | None) -> None:
        super().__init__()
        self.path, self.every_n_steps = path, every_n_steps

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            trainer.save_checkpoint(self.path)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainer.save_checkpoint(self.path)

    def state_dict(self) -> dict[str, Any]:
        # plain types and tensors only: Lightning loads checkpoints with weights_only=True
        name, keys, pos, has_gauss, gauss = np.random.get_state()
        numpy_state = [name, torch.from_numpy(keys.copy()), int(pos), int(has_gauss), float(gauss)]
        return {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        name, keys, pos, has_gauss, gauss = state_dict["numpy"]
        np.random.set_state((name, keys.numpy(), pos, has_gauss, gauss))
        random.setstate(state_dict["python"])
