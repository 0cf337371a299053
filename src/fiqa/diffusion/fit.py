"""Fitting the face DDPM once per (prepared faces, settings) and writing the DDPM stage output.

Trained models live in the cache (``<cache>/ddpm/<key>/model``, keyed by the prepared manifest
and every setting that changes the weights), so a rerun of the stage, another experiment or a
study on the same faces reuses them; a killed training resumes from
``<cache>/ddpm/<key>/checkpoints/last.ckpt``. The stage output (``paths.ddpm``) is a copy of the
model with ``ddpm.json`` (the key, the content digest, the training figures) and
``samples.png`` (input faces, their x_t and DDIM reconstructions).
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, EMAWeightAveraging, ModelCheckpoint
from pytorch_lightning.utilities.rank_zero import rank_zero_only
from torch.utils.data import DataLoader

from fiqa.core.artifacts import DDPM_RECORD, DDPM_SAMPLES, MANIFEST
from fiqa.core.atomic import atomic_dir, write_json_atomic
from fiqa.core.grids import face_grid
from fiqa.core.provenance import code_version, digest, sha256_now
from fiqa.data.face_store import PreparedFaces
from fiqa.diffusion.model import FaceDDPM, ddpm_digest, load_ddpm
from fiqa.diffusion.module import DDPMModule, DiffusionFaces
from fiqa.diffusion.sampling import perturb
from fiqa.diffusion.settings import DDPMSettings

log = logging.getLogger(__name__)

# Settings that change no weight: left out of the key.
RUNTIME_SETTINGS = ("resume", "grid_faces", "grid_t", "num_workers", "checkpoint_every")
TRAINING_RECORD = "training.json"


@dataclass
class DDPMJob:
    """One DDPM to train (or reuse) and where its output goes.

    Attributes:
        settings: The ``ddpm`` group.
        prepared_dir: The prepared faces it trains on.
        out_dir: The stage output (``paths.ddpm``).
        store: Trained models and resumable checkpoints by key (``<paths.cache>/ddpm``).
    """

    settings: DDPMSettings
    prepared_dir: Path
    out_dir: Path
    store: Path

    def key(self) -> str:
        """Digest of the prepared manifest and the settings that change the weights."""
        settings = {k: v for k, v in asdict(self.settings).items() if k not in RUNTIME_SETTINGS}
        PreparedFaces(self.prepared_dir)  # a clear error when there is no prepared set
        return digest({"manifest": sha256_now(str(self.prepared_dir / MANIFEST)),
                       "settings": settings})  # fmt: skip


class DDPMTrainingError(RuntimeError):
    """The DDPM cannot be trained on these faces (the message names the key to change)."""


def fit_ddpm(job: DDPMJob, logger: Any = False) -> dict[str, float]:
    """Train the DDPM of ``job`` unless the store has it, then write ``job.out_dir``.

    Returns:
        The stage summary (``ddpm/loss``, ``ddpm/images_per_s``, ``ddpm/steps``,
        ``ddpm/trained_now``).
    """
    key = job.key()
    entry = job.store / key
    model_dir = entry / "model"
    trained_now = not (model_dir / "model_index.json").is_file()
    if trained_now:
        _train(job, entry, logger)
    else:
        log.info("ddpm: reusing the DDPM trained on these faces with these settings (%s)", entry)
    if rank_zero_only.rank != 0:
        return {}
    training = _read_json(entry / TRAINING_RECORD)
    write_ddpm_output(job, model_dir, key, training)
    return {
        "ddpm/loss": float(training["final_loss"]),
        "ddpm/images_per_s": float(training["images_per_s"]),
        "ddpm/steps": float(training["steps"]),
        "ddpm/trained_now": float(trained_now),
    }


def training_rows(prepared: PreparedFaces, split: str) -> np.ndarray:
    """Manifest rows of ``split`` (``all``: every row)."""
    if split == "all":
        return np.arange(len(prepared))
    rows = np.flatnonzero(prepared.manifest["split"].to_numpy() == split)
    if len(rows) == 0:
        raise DDPMTrainingError(
            f"ddpm.split={split}: {prepared.directory / MANIFEST} has no face in that split"
        )
    return rows


def _train(job: DDPMJob, entry: Path, logger: Any) -> None:
    s = job.settings
    prepared = PreparedFaces(job.prepared_dir)
    rows = training_rows(prepared, s.split)
    pl.seed_everything(s.seed, workers=True)
    module = DDPMModule.of(s.unet, s.schedule, s.train_t_max, s.lr)
    loader = DataLoader(
        DiffusionFaces(prepared, rows, s.unet.sample_size),
        batch_size=s.batch_size,
        shuffle=True,
        drop_last=len(rows) >= s.batch_size,
        num_workers=s.num_workers,
        persistent_workers=s.num_workers > 0,
        multiprocessing_context="spawn" if s.num_workers > 0 else None,
    )
    checkpoints = entry / "checkpoints"
    last = checkpoints / "last.ckpt"
    progress = _Progress(s.max_steps, s.batch_size)
    trainer = pl.Trainer(
        accelerator=s.accelerator,
        devices=s.devices,
        strategy=s.strategy,
        precision=s.precision,
        max_steps=s.max_steps,
        max_epochs=-1,
        logger=logger,
        callbacks=[
            EMAWeightAveraging(decay=s.ema_decay),
            ModelCheckpoint(
                dirpath=checkpoints,
                every_n_train_steps=s.checkpoint_every,
                save_top_k=0,
                save_last=True,
            ),
            progress,
        ],
        enable_progress_bar=sys.stderr.isatty(),
        enable_model_summary=False,
        log_every_n_steps=max(1, min(50, s.max_steps // 20)),
        default_root_dir=str(entry),
    )
    resume = s.resume and last.is_file()
    if resume:
        log.info("ddpm: resuming from %s", last)
    log.info("ddpm: training on %d faces (%s split) for %d steps of %d", len(rows), s.split,
             s.max_steps, s.batch_size)  # fmt: skip
    trainer.fit(module, loader, ckpt_path=str(last) if resume else None)
    if trainer.global_rank != 0:
        return
    with atomic_dir(entry / "model") as tmp:
        module.ddpm().save(tmp)
    write_json_atomic(entry / TRAINING_RECORD, {
        "steps": int(trainer.global_step),
        "steps_this_run": progress.steps,
        "resumed": resume,
        "final_loss": progress.loss,
        "images_per_s": progress.images_per_s,
        "faces": len(rows),
        "split": s.split,
        "parameters_m": sum(p.numel() for p in module.unet.parameters()) / 1e6,
        **code_version(),
    })  # fmt: skip
    shutil.rmtree(checkpoints, ignore_errors=True)  # the model is saved; the state is not needed


def write_ddpm_output(job: DDPMJob, model_dir: Path, key: str, training: dict[str, Any]) -> None:
    """``job.out_dir``: the model, ``ddpm.json`` and ``samples.png``, written atomically."""
    s = job.settings
    with atomic_dir(job.out_dir) as tmp:
        shutil.copytree(model_dir, tmp, dirs_exist_ok=True)
        ddpm = load_ddpm(tmp, s.unet, s.schedule)
        ddpm.unet.to(_device(s.accelerator))
        prepared = PreparedFaces(job.prepared_dir)
        grid = sample_grid(ddpm, _grid_faces(prepared, s), s.grid_t, s.seed)
        cv2.imwrite(str(tmp / DDPM_SAMPLES), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
        write_json_atomic(tmp / DDPM_RECORD, {
            "trained": True,
            "key": key,
            "digest": ddpm_digest(tmp),
            "settings": asdict(s),
            "prepared": str(job.prepared_dir),
            "samples": {"rows": ["input", *(f"{k}@t={t}" for t in s.grid_t
                                            for k in ("x_t", "reconstruction"))]},
            "training": training,
        })  # fmt: skip


def write_not_needed(out_dir: Path, reason: str) -> None:
    """The DDPM stage output when no configured method uses the pipeline's DDPM."""
    with atomic_dir(out_dir) as tmp:
        write_json_atomic(tmp / DDPM_RECORD, {"trained": False, "reason": reason})


def sample_grid(ddpm: FaceDDPM, faces: np.ndarray, steps: list[int], seed: int) -> np.ndarray:
    """Rows: the uint8 ``faces``, then for each step t their x_t and DDIM reconstruction."""
    device = next(ddpm.unet.parameters()).device
    x = torch.from_numpy(faces).permute(0, 3, 1, 2).float().to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    rows = [faces]
    ddim = ddpm.ddim()
    for t in steps:
        for image in perturb(ddpm, ddim, x, t, generator):
            rows.append(image.round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
    return face_grid(np.concatenate(rows), ncols=len(faces))


def _device(accelerator: str) -> torch.device:
    """Where the sample grid is drawn: the training's GPU when it had one."""
    gpu = accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()
    return torch.device("cuda" if gpu else "cpu")


def _grid_faces(prepared: PreparedFaces, s: DDPMSettings) -> np.ndarray:
    """The first ``grid_faces`` faces it was not trained on (training faces if none)."""
    split = prepared.manifest["split"].to_numpy()
    unseen = np.flatnonzero(split != s.split) if s.split != "all" else np.arange(0)
    rows = unseen if len(unseen) else np.arange(len(prepared))
    return prepared.faces(rows[: s.grid_faces])


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


class _Progress(Callback):
    """Log lines with the step count, the loss and the speed (every 5% of the steps or 60 s);
    the last 5% of the losses and the speed go to ``training.json``."""

    def __init__(self, max_steps: int, batch_size: int) -> None:
        self.max_steps, self.batch_size, self.world = max_steps, batch_size, 1
        self.every = max(1, max_steps // 20)
        self.steps, self.seconds = 0, 0.0
        self._losses: list[float] = []  # the last ``every`` steps
        self._start = self._last_log = 0.0

    @property
    def loss(self) -> float:
        """Mean loss of the last 5% of the steps run."""
        return float(np.mean(self._losses)) if self._losses else float("nan")

    @property
    def images_per_s(self) -> float:
        """Training images per second over all devices."""
        images = self.steps * self.batch_size * self.world
        return images / self.seconds if self.seconds else 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.world = trainer.world_size
        self._start = self._last_log = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:  # fmt: skip
        now = time.perf_counter()
        self.steps += 1
        self.seconds = now - self._start
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self._losses.append(float(loss.detach()))
        del self._losses[: -self.every]
        step = trainer.global_step
        if trainer.is_global_zero and (step % self.every == 0 or now - self._last_log > 60
                                       or step == self.max_steps):  # fmt: skip
            self._last_log = now
            log.info("ddpm: step %d/%d, loss %.4f, %.1f images/s", step, self.max_steps,
                     self.loss, self.images_per_s)  # fmt: skip
