"""The face DDPM's settings (the ``ddpm`` config group): architecture, noise schedule, training.

These dataclasses are the schema the config is validated against; the values live in
``conf/ddpm/`` (``paper``: the DifFIQA paper's DDPM, a GPU job; ``cpu``: a small preset that
trains in minutes on a CPU).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class UNetSettings:
    """The denoising U-Net (``diffusers.UNet2DModel``).

    Attributes:
        sample_size: Side of the square faces it works on (the aligned face is resized to it).
        base_width: Channels of the first level.
        channel_mults: Channel multiplier per level (its length is the number of levels).
        layers_per_block: ResNet layers per level.
        attention_levels: Levels (0 = the first) with self-attention blocks.
    """

    sample_size: int
    base_width: int
    channel_mults: list[int]
    layers_per_block: int
    attention_levels: list[int] = field(default_factory=list)


@dataclass
class ScheduleSettings:
    """The forward-diffusion (noise) schedule.

    Attributes:
        timesteps: T, the number of diffusion steps.
        beta_start: beta_1.
        beta_end: beta_T.
        beta_schedule: ``linear`` (the paper) or another ``diffusers`` schedule name.
        prediction: What the network predicts: ``sample`` (x0, the paper) or ``epsilon``.
    """

    timesteps: int
    beta_start: float
    beta_end: float
    beta_schedule: str
    prediction: str


@dataclass
class DDPMSettings:
    """The ``ddpm`` group: the DDPM and how it is trained on the prepared faces.

    Attributes:
        unet: The U-Net.
        schedule: The noise schedule.
        train_t_max: Training draws t uniformly from [0, train_t_max) (DifFIQA only ever
            noises to small t).
        split: Prepared faces it trains on (``train``: the benchmark split stays unseen).
        lr: Adam learning rate.
        ema_decay: Decay of the exponential moving average of the weights (the saved model).
        batch_size: Faces per step.
        max_steps: Optimiser steps.
        checkpoint_every: Steps between resumable checkpoints (``last.ckpt``).
        resume: Continue a killed training of the same settings from its last checkpoint.
        grid_faces: Faces shown in the sample grid (input, x_t, reconstruction).
        grid_t: Diffusion steps shown in the sample grid.
        num_workers: DataLoader workers decoding faces.
        seed: Seed of the weights, the batches and the noise.
        accelerator: Lightning accelerator.
        devices: Device count (> 1 with strategy ddp).
        strategy: Lightning strategy.
        precision: Lightning precision (``bf16-mixed`` on GPUs).
    """

    unet: UNetSettings
    schedule: ScheduleSettings
    train_t_max: int
    split: str
    lr: float
    ema_decay: float
    batch_size: int
    max_steps: int
    checkpoint_every: int
    resume: bool
    grid_faces: int
    grid_t: list[int]
    num_workers: int
    seed: int
    accelerator: str
    devices: Any
    strategy: str
    precision: str

    def __post_init__(self) -> None:
        checks = {
            "ddpm.train_t_max": 0 < self.train_t_max <= self.schedule.timesteps,
            "ddpm.batch_size": self.batch_size > 0,
            "ddpm.max_steps": self.max_steps > 0,
            "ddpm.checkpoint_every": self.checkpoint_every > 0,
            "ddpm.ema_decay": 0.0 <= self.ema_decay < 1.0,
            "ddpm.schedule.prediction": self.schedule.prediction in ("sample", "epsilon"),
        }
        bad = [key for key, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid settings: {', '.join(bad)}")
