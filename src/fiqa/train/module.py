"""The quality regressor: an FR backbone (knowledge transfer) plus a small regression head.

The LightningModule takes plain values only, so ``save_hyperparameters()`` and
``QualityRegressor.load_from_checkpoint(path)`` work without Hydra. Backbones are looked up
by name in ``BACKBONES`` (``build_backbone``); later backbones (iResNet, MobileFaceNet)
register there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn

from fiqa.train.metrics import mean_absolute_error, pearson, spearman

log = logging.getLogger(__name__)

HEADS = ("linear", "mlp")
LOSSES: dict[str, Callable[[], nn.Module]] = {
    "l1": nn.L1Loss,
    "smooth_l1": nn.SmoothL1Loss,
    "mse": nn.MSELoss,
}
SCHEDULERS = ("cosine", "none")
# What stays fixed during training: nothing, the convolutional trunk (the backbone's `trunk`
# attribute; its embedding layer still trains), or the whole backbone.
FREEZE = ("none", "trunk", "backbone")


def _sface_backbone(pretrained: bool, weights: str | None) -> tuple[nn.Module, int]:
    """SFace (MobileNetV1-like trunk + 128-d embedding layer), optionally with FR weights."""
    from fiqa.fr import load_fr_model
    from fiqa.fr.sface import EMBEDDING_SIZE, SFaceNet

    if not pretrained:
        if weights is not None:
            log.warning("backbone_weights=%s ignored because pretrained=False", weights)
        return SFaceNet(dropout=0.0), EMBEDDING_SIZE
    return load_fr_model({"name": "sface", "weights": weights}).net, EMBEDDING_SIZE


BACKBONES: dict[str, Callable[[bool, str | None], tuple[nn.Module, int]]] = {
    "sface": _sface_backbone,
}


def _check_choice(key: str, value: str, choices: Any) -> None:
    if value not in choices:
        raise ValueError(f"unknown {key} {value!r}; choose one of {sorted(choices)}")


def build_backbone(
    name: str, pretrained: bool = True, weights: str | None = None
) -> tuple[nn.Module, int]:
    """Build a registered backbone.

    Args:
        name: Registry name (see ``BACKBONES``).
        pretrained: Initialise from the FR model's weights (False: random init).
        weights: Weights file; None uses the embedded/default weights of that FR model.

    Returns:
        The module (float NCHW RGB 0..255 -> (N, out_dim)) and ``out_dim``.
    """
    _check_choice("backbone", name, BACKBONES)
    return BACKBONES[name](pretrained, weights)


def build_head(name: str, in_dim: int, hidden: int) -> nn.Module:
    """Regression head ``in_dim -> 1``: "linear", or "mlp" (in -> hidden -> 1, GELU)."""
    _check_choice("head", name, HEADS)
    if name == "linear":
        return nn.Linear(in_dim, 1)
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, 1))


def _param_groups(module: nn.Module, lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on weight matrices/kernels only, none on biases, norms, PReLU."""
    decay, no_decay = [], []
    for param in module.parameters():
        if param.requires_grad:
            (decay if param.ndim > 1 else no_decay).append(param)
    groups = [
        {"params": decay, "lr": lr, "weight_decay": weight_decay},
        {"params": no_decay, "lr": lr, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


class QualityRegressor(pl.LightningModule):
    """Face image quality regressor: ``forward(faces) -> (N,)`` quality, higher = better.

    Args:
        backbone: Backbone registry name.
        pretrained: Initialise the backbone from the FR weights (False: from scratch).
        backbone_weights: FR weights file; None = the embedded default.
        head: "linear" or "mlp".
        head_hidden: Hidden width of the MLP head.
        loss: "l1", "smooth_l1" or "mse".
        lr: Learning rate of the head.
        backbone_lr: Learning rate of the backbone.
        weight_decay: AdamW weight decay (weight matrices only).
        scheduler: "cosine" (per step, over the whole fit) or "none".
        freeze: "none", "trunk" (the backbone's convolutional trunk is fixed, its embedding layer
            trains: no backward pass through the convolutions, affordable on a CPU) or
            "backbone" (only the head trains). Frozen parts get no gradients and keep their
            BatchNorm statistics (eval mode).
    """

    def __init__(
        self,
        backbone: str = "sface",
        pretrained: bool = True,
        backbone_weights: str | None = None,
        head: str = "mlp",
        head_hidden: int = 1024,
        loss: str = "l1",
        lr: float = 1e-3,
        backbone_lr: float = 1e-4,
        weight_decay: float = 1e-4,
        scheduler: str = "cosine",
        freeze: str = "none",
    ) -> None:
        super().__init__()
        # Fail on a bad name before the (slow) backbone is built.
        _check_choice("backbone", backbone, BACKBONES)
        _check_choice("head", head, HEADS)
        _check_choice("loss", loss, LOSSES)
        _check_choice("scheduler", scheduler, SCHEDULERS)
        _check_choice("freeze", freeze, FREEZE)
        self.save_hyperparameters()
        self.backbone, embed_dim = build_backbone(backbone, pretrained, backbone_weights)
        self.head = build_head(head, embed_dim, head_hidden)
        self.loss_fn = LOSSES[loss]()
        frozen = self._frozen_part()
        if frozen is not None:
            frozen.requires_grad_(False)
        # FR loaders return eval-mode nets and Lightning keeps each module's mode at fit start.
        self.train()
        self._val_outputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        """Quality of float (N, 3, 112, 112) RGB faces in 0..255; returns (N,)."""
        return self.head(self.backbone(faces)).squeeze(-1)

    def train(self, mode: bool = True) -> QualityRegressor:
        """Switch train/eval mode; a frozen backbone always stays in eval mode."""
        super().train(mode)
        frozen = self._frozen_part()
        if frozen is not None:
            frozen.eval()
        return self

    def _frozen_part(self) -> nn.Module | None:
        """The module that ``freeze`` keeps fixed (None when everything trains)."""
        if self.hparams.freeze == "backbone":
            return self.backbone
        if self.hparams.freeze == "trunk":
            if not hasattr(self.backbone, "trunk"):
                raise ValueError(f"backbone {self.hparams.backbone!r} has no `trunk` to freeze")
            return self.backbone.trunk
        return None

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """One optimisation step on a batch {"image", "quality", "sample_id"}."""
        pred = self(batch["image"])
        loss = self.loss_fn(pred, batch["quality"])
        if not torch.isfinite(loss):
            ids = batch["sample_id"][:8].tolist()
            raise FloatingPointError(
                f"non-finite training loss {loss.item()} at epoch {self.current_epoch}, "
                f"batch {batch_idx} (first sample_ids {ids}); check the labels for NaN/inf "
                "and lower the learning rates"
            )
        self.log("train/loss", loss, on_step=True, on_epoch=False, batch_size=len(pred))
        return loss

    def on_validation_epoch_start(self) -> None:
        """Start a fresh collection of validation predictions."""
        self._val_outputs = []

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Collect predictions; metrics are computed over the whole epoch."""
        pred = self(batch["image"])
        self._val_outputs.append(
            (pred.detach().float(), batch["quality"].float(), batch["sample_id"].long())
        )

    def on_validation_epoch_end(self) -> None:
        """Log val/loss, val/spearman, val/pearson and val/mae over all validation samples."""
        if not self._val_outputs:
            return
        preds, target, ids = (torch.cat(parts) for parts in zip(*self._val_outputs, strict=True))
        self._val_outputs = []
        if self.trainer.world_size > 1:
            # Every rank sees all samples; DistributedSampler padding duplicates are dropped.
            preds, target, ids = (self.all_gather(t).flatten() for t in (preds, target, ids))
            _, first = np.unique(ids.cpu().numpy(), return_index=True)
            keep = torch.as_tensor(first, device=preds.device)
            preds, target = preds[keep], target[keep]
        metrics = {
            "val/loss": float(self.loss_fn(preds, target).item()),
            "val/spearman": spearman(preds, target),
            "val/pearson": pearson(preds, target),
            "val/mae": mean_absolute_error(preds, target),
        }
        self.log_dict(metrics, on_step=False, on_epoch=True, batch_size=len(preds))

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Quality of a batch (for ``Trainer.predict``)."""
        return self(batch["image"])

    def configure_optimizers(self) -> Any:
        """AdamW with separate head/backbone learning rates; optional per-step cosine decay."""
        hp = self.hparams
        groups = _param_groups(self.head, hp.lr, hp.weight_decay)
        if hp.freeze != "backbone":
            groups += _param_groups(self.backbone, hp.backbone_lr, hp.weight_decay)
        optimizer = torch.optim.AdamW(groups, lr=hp.lr)
        if hp.scheduler == "none":
            return optimizer
        total = self.trainer.estimated_stepping_batches
        if not np.isfinite(total):
            raise ValueError(
                "scheduler='cosine' needs a finite run length: set trainer max_epochs or "
                "max_steps, or use model.scheduler=none"
            )
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, int(total)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": cosine, "interval": "step"}}
