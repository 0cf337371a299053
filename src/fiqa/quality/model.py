"""The quality regressor: an FR backbone (knowledge transfer) plus a small regression head.

The LightningModule takes plain values only, so ``save_hyperparameters()`` and
``QualityRegressor.load_from_checkpoint(path)`` work without Hydra. The backbone is any PyTorch
model of the FR zoo (``fiqa.fr``: sface, iresnet18..200, mobilefacenet, adaface_ir*, ...; a
distilled student is one of them with the student's weights file), initialised from its FR
weights or from scratch.

eDifFIQA's representation-consistency term keeps the backbone's embedding close to the original
FR model's: with ``consistency_weight`` = theta > 0 the loss is, as in the public eDifFIQA code,
``(1 - theta) * L_quality + theta * (1 - cos(backbone(x), FR(x)))`` (theta = 0.5 there); the original
model is rebuilt from the registry for training only and is not part of the checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from fiqa.core.containers import plain_container
from fiqa.fr import FRModelInfo, load_fr_model
from fiqa.quality.calibration import CHECKPOINT_KEY as CALIBRATION_KEY
from fiqa.quality.metrics import mean_absolute_error, pearson, spearman
from fiqa.quality.optim import SCHEDULERS, param_groups, with_schedule

log = logging.getLogger(__name__)

HEADS = ("linear", "mlp")
LOSSES: dict[str, Callable[[], nn.Module]] = {
    "l1": nn.L1Loss,
    "smooth_l1": nn.SmoothL1Loss,
    "mse": nn.MSELoss,
}
# What stays fixed: nothing, the trunk (everything but the embedding layers of forward_head), or
# the whole backbone.
FREEZE = ("none", "trunk", "backbone")
TARGET_SCALING_KEY = "fiqa_target_scaling"  # checkpoint entry of QualityRegressor.target_scaling


def check_choice(key: str, value: str, choices: Any) -> None:
    if value not in choices:
        raise ValueError(f"unknown model.{key} {value!r}; choose one of {sorted(choices)}")


def build_backbone(
    name: str,
    pretrained: bool = True,
    weights: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> tuple[nn.Module, FRModelInfo]:
    """A PyTorch FR network of the zoo as a trainable backbone (quality model, student).

    Args:
        name: FR registry name.
        pretrained: Load the FR weights (False: random initialisation).
        weights: Weights file; None = the model's bundled weights (sface only).
        options: Architecture options (e.g. MobileFaceNet ``blocks``).

    Returns:
        The network (float NCHW RGB 0..255 -> (N, D) raw embedding) and the model's info
        (embedding size, input size, template).
    """
    config = {"name": name, "weights": weights, "options": dict(options or {})}
    model = load_fr_model(config, pretrained=pretrained)
    model.require_white_box(f"a trainable backbone ({name})")
    return model.net, model.info


def head_parameter_names(net: nn.Module, input_size: tuple[int, int]) -> set[str]:
    """Names of the parameters ``net.forward_head`` uses (its embedding layers), found by which
    parameters receive a gradient from the head on a dummy input: no per-architecture list."""
    was_training = net.training
    named = list(net.named_parameters())
    flags = [p.requires_grad for _, p in named]
    net.eval()
    try:
        with torch.no_grad():
            features = net.forward_features(torch.zeros(2, 3, *input_size))
        features.requires_grad_(True)
        for _, p in named:
            p.requires_grad_(True)
        with torch.enable_grad():
            out = net.forward_head(features).sum()
            grads = torch.autograd.grad(out, [p for _, p in named], allow_unused=True)
    finally:
        for (_, p), flag in zip(named, flags, strict=True):
            p.requires_grad_(flag)
        net.train(was_training)
    return {n for (n, _), g in zip(named, grads, strict=True) if g is not None}


def build_head(name: str, in_dim: int, hidden: int) -> nn.Module:
    """Regression head ``in_dim -> 1``: "linear", or "mlp" (in -> hidden -> 1, GELU)."""
    check_choice("head", name, HEADS)
    if name == "linear":
        return nn.Linear(in_dim, 1)
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, 1))


class QualityRegressor(pl.LightningModule):
    """Face image quality regressor: ``forward(faces) -> (N,)`` quality, higher = better.

    Args:
        backbone: FR registry name of a PyTorch model (see ``fiqa.fr``).
        pretrained: Initialise the backbone from the FR weights (False: from scratch).
        backbone_weights: FR weights file (or a distilled student's); None = the bundled
            default (sface).
        backbone_options: Architecture options of the backbone (e.g. a student's ``blocks``).
        head: "linear" or "mlp".
        head_hidden: Hidden width of the MLP head (eDifFIQA: 1024).
        loss: "l1", "smooth_l1" or "mse".
        lr: Learning rate of the head.
        backbone_lr: Learning rate of the backbone.
        weight_decay: AdamW weight decay (weight matrices only).
        scheduler: "cosine" (per step over the run), "step" (x0.1 at 60% and 85%) or "none".
        freeze: "none", "trunk" (everything but the backbone's embedding layers is fixed: no
            backward pass through the convolutions, affordable on a CPU) or "backbone" (only the
            head trains). Frozen parts get no gradients and keep their BatchNorm statistics.
        unfreeze_at_epoch: With ``freeze`` != "none": the epoch at which the frozen part joins
            training at ``backbone_lr`` (``fiqa.train.callbacks.UnfreezeBackbone``); None = never.
        consistency_weight: theta of eDifFIQA's representation-consistency term, in [0, 1): the
            loss is (1 - theta) L_quality + theta (1 - cos(backbone(x), FR(x))) (0 = off).
    """

    def __init__(
        self,
        backbone: str,
        pretrained: bool,
        backbone_weights: str | None,
        backbone_options: dict[str, Any] | None,
        head: str,
        head_hidden: int,
        loss: str,
        lr: float,
        backbone_lr: float,
        weight_decay: float,
        scheduler: str,
        freeze: str,
        unfreeze_at_epoch: int | None,
        consistency_weight: float,
    ) -> None:
        super().__init__()
        for key, value, choices in (("head", head, HEADS), ("loss", loss, LOSSES),
                                    ("scheduler", scheduler, SCHEDULERS),
                                    ("freeze", freeze, FREEZE)):  # fmt: skip
            check_choice(key, value, choices)
        if not 0 <= consistency_weight < 1:
            raise ValueError(
                f"model.consistency_weight must be in [0, 1), got {consistency_weight}"
            )
        backbone_options = plain_container(backbone_options)  # stored as plain values
        self.save_hyperparameters()
        self.backbone, self.backbone_info = build_backbone(
            backbone, pretrained, backbone_weights, backbone_options
        )
        self.head = build_head(head, self.backbone_info.embedding_size, head_hidden)
        self.loss_fn = LOSSES[loss]()
        self._frozen_names = self._names_to_freeze()
        for param in self.frozen_parameters():
            param.requires_grad_(False)
        # FR loaders return eval-mode nets and Lightning keeps each module's mode at fit start.
        self.train()
        self._fr_reference: tuple[nn.Module, ...] = ()  # the consistency term's FR model
        # How labels became the targets it predicts (fiqa.quality.targets), set by the training
        # chain and kept in the checkpoint.
        self.target_scaling: dict[str, Any] | None = None
        # Raw output -> 0-100 (fiqa.quality.calibration), fitted after training on the best
        # model and kept in the checkpoint; None before (and in older checkpoints).
        self.calibration: dict[str, Any] | None = None

    @property
    def input_size(self) -> tuple[int, int]:
        """Face ``(height, width)`` the backbone takes (its FR model's)."""
        return self.backbone_info.input_size

    @property
    def template(self) -> str:
        """Alignment template of the backbone's FR model."""
        return self.backbone_info.template

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        """Quality of float (N, 3, H, W) RGB faces in 0..255; returns (N,)."""
        return self.head(self.backbone(faces)).squeeze(-1)

    def _names_to_freeze(self) -> set[str]:
        names = {n for n, _ in self.backbone.named_parameters()}
        if self.hparams.freeze == "backbone":
            return names
        if self.hparams.freeze == "trunk":
            return names - head_parameter_names(self.backbone, self.input_size)
        return set()

    def frozen_parameters(self) -> list[nn.Parameter]:
        """The backbone parameters ``freeze`` keeps fixed (empty for "none")."""
        return [p for n, p in self.backbone.named_parameters() if n in self._frozen_names]

    def train(self, mode: bool = True) -> QualityRegressor:
        """Switch train/eval mode; modules whose parameters are all frozen stay in eval mode
        (their BatchNorm statistics do not drift)."""
        super().train(mode)
        for module in self.backbone.modules():
            params = list(module.parameters())
            if params and not any(p.requires_grad for p in params):
                module.eval()
        return self

    def setup(self, stage: str) -> None:
        """Build the original FR model for the consistency term (training only)."""
        if stage == "fit" and self.hparams.consistency_weight > 0 and not self._fr_reference:
            hp = self.hparams
            fr = load_fr_model(
                {
                    "name": hp.backbone,
                    "weights": hp.backbone_weights,
                    "options": hp.backbone_options,
                }
            )
            fr.net.requires_grad_(False)
            self._fr_reference = (fr.net.to(self.device).eval(),)

    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The backbone's embedding of a batch of ``image`` s, or of cached frozen-part
        ``features`` (``fiqa.train.frozen``: the trunk's output for ``freeze=trunk``, the
        backbone's embedding for ``freeze=backbone``)."""
        if "features" not in batch:
            return self.backbone(batch["image"])
        if self.hparams.freeze == "backbone":
            return batch["features"]
        return self.backbone.forward_head(batch["features"])

    def predict_batch(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Quality of a batch of images or cached features, ``(N,)``."""
        return self.head(self.embed(batch)).squeeze(-1)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """One optimisation step on a batch {"image" or "features", "quality", "sample_id"}."""
        embedding = self.embed(batch)
        pred = self.head(embedding).squeeze(-1)
        loss = self.loss_fn(pred, batch["quality"])
        self.log("train/quality_loss", loss, on_step=True, on_epoch=False, batch_size=len(pred))
        if self._fr_reference:
            (reference,) = self._fr_reference
            with torch.no_grad():
                target = reference.to(embedding.device)(batch["image"])
            consistency = (1 - F.cosine_similarity(embedding, target, dim=1)).mean()
            self.log("train/consistency", consistency, on_step=True, batch_size=len(pred))
            theta = self.hparams.consistency_weight
            loss = (1 - theta) * loss + theta * consistency
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
        self._val_outputs: list[tuple[torch.Tensor, ...]] = []

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict:
        """Collect predictions (metrics over the whole epoch); returned for callbacks."""
        pred = self.predict_batch(batch).detach().float()
        self._val_outputs.append((pred, batch["quality"].float(), batch["sample_id"].long()))
        return {"pred": pred, "sample_id": batch["sample_id"]}

    def on_validation_epoch_end(self) -> None:
        """Log val/loss, val/spearman, val/pearson and val/mae over all validation samples."""
        if not self._val_outputs:
            return
        preds, target, ids = (torch.cat(parts) for parts in zip(*self._val_outputs, strict=True))
        self._val_outputs = []
        if self.trainer.world_size > 1:
            # Every rank sees all samples; DistributedSampler padding duplicates are dropped.
            preds, target, ids = (self.all_gather(t).flatten() for t in (preds, target, ids))
            keep = torch.as_tensor(_first_occurrences(ids), device=preds.device)
            preds, target = preds[keep], target[keep]
        metrics = {
            "val/loss": float(self.loss_fn(preds, target).item()),
            "val/spearman": spearman(preds, target),
            "val/pearson": pearson(preds, target),
            "val/mae": mean_absolute_error(preds, target),
        }
        self.log_dict(metrics, on_step=False, on_epoch=True, batch_size=len(preds))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the target scaling and the calibration with the weights."""
        checkpoint[TARGET_SCALING_KEY] = self.target_scaling
        checkpoint[CALIBRATION_KEY] = self.calibration

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the target scaling and calibration (None in checkpoints from before)."""
        self.target_scaling = checkpoint.get(TARGET_SCALING_KEY)
        self.calibration = checkpoint.get(CALIBRATION_KEY)

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Quality of a batch (for ``Trainer.predict``)."""
        return self.predict_batch(batch)

    def configure_optimizers(self) -> Any:
        """AdamW with separate head/backbone learning rates; cosine or step decay per step."""
        hp = self.hparams
        groups = param_groups(list(self.head.parameters()), hp.lr, hp.weight_decay)
        groups += param_groups(list(self.backbone.parameters()), hp.backbone_lr, hp.weight_decay)
        optimizer = torch.optim.AdamW(groups, lr=hp.lr)
        return with_schedule(
            optimizer, hp.scheduler, lambda: self.trainer.estimated_stepping_batches
        )


def _first_occurrences(ids: torch.Tensor) -> list[int]:
    """Index of the first occurrence of each id (order of first appearance)."""
    seen: dict[int, int] = {}
    for index, value in enumerate(ids.tolist()):
        seen.setdefault(value, index)
    return sorted(seen.values())
