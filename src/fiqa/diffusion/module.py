"""Training the face DDPM as a Lightning module on prepared faces.

The objective is DifFIQA's: draw t uniformly from [0, train_t_max), noise the face to x_t and
regress the network's output on x0 (``prediction: sample``) or on the noise (``epsilon``) with
an L2 loss. Faces are mirrored at random (the reconstruction is also run on mirrors).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import cv2
import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from fiqa.data.face_store import PreparedFaces
from fiqa.diffusion.model import FaceDDPM, build_scheduler, build_unet
from fiqa.diffusion.settings import ScheduleSettings, UNetSettings


class DiffusionFaces(Dataset):
    """Prepared faces ``rows`` as ``(3, size, size)`` float tensors in [-1, 1].

    Args:
        prepared: The prepared set.
        rows: Its manifest rows to serve.
        size: The DDPM's sample size (faces are resized with area resampling).
    """

    def __init__(self, prepared: PreparedFaces, rows: np.ndarray, size: int) -> None:
        self.prepared, self.rows, self.size = prepared, np.asarray(rows, np.int64), size

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> torch.Tensor:
        face = self.prepared.face(int(self.rows[index]))
        if face.shape[:2] != (self.size, self.size):
            face = cv2.resize(face, (self.size, self.size), interpolation=cv2.INTER_AREA)
        x = torch.from_numpy(np.ascontiguousarray(face)).permute(2, 0, 1).float()
        return x / 127.5 - 1.0


class DDPMModule(pl.LightningModule):
    """The U-Net and its schedule, trained on small diffusion steps.

    Args:
        unet: Architecture (``UNetSettings`` as a dict: stored in the checkpoint).
        schedule: Noise schedule (``ScheduleSettings`` as a dict).
        train_t_max: t is drawn from [0, train_t_max).
        lr: Adam learning rate.
    """

    def __init__(
        self, unet: dict[str, Any], schedule: dict[str, Any], train_t_max: int, lr: float
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.unet = build_unet(UNetSettings(**unet))
        self.scheduler = build_scheduler(ScheduleSettings(**schedule))
        self.train_t_max, self.lr = train_t_max, lr
        self.sample_target = schedule["prediction"] == "sample"

    @classmethod
    def of(cls, unet: UNetSettings, schedule: ScheduleSettings, train_t_max: int, lr: float):
        """The module from typed settings."""
        return cls(asdict(unet), asdict(schedule), train_t_max, lr)

    def loss(self, x0: torch.Tensor) -> torch.Tensor:
        """The L2 loss of one batch of [-1, 1] faces (random mirror, step and noise)."""
        n = x0.shape[0]
        mirror = torch.rand(n, device=x0.device) < 0.5
        x0 = torch.where(mirror[:, None, None, None], x0.flip(3), x0)
        t = torch.randint(0, self.train_t_max, (n,), device=x0.device)
        noise = torch.randn_like(x0)
        x_t = self.scheduler.add_noise(x0, noise, t)
        prediction = self.unet(x_t, t).sample
        return F.mse_loss(prediction.float(), x0 if self.sample_target else noise)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        self.log("ddpm/loss", loss, prog_bar=True, batch_size=batch.shape[0])
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.unet.parameters(), lr=self.lr)

    def ddpm(self) -> FaceDDPM:
        """The trained DDPM (the module's current weights: the EMA ones after fitting)."""
        return FaceDDPM(self.unet.eval().requires_grad_(False), self.scheduler)
