"""Training callbacks: the frozen-then-unfrozen backbone schedule and pAUC on validation pairs."""

from __future__ import annotations

import logging

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BaseFinetuning
from torch.optim import Optimizer

from fiqa.core.edc import pauc, quality_curves
from fiqa.core.pairs import PairSampling, pair_scores
from fiqa.quality.model import QualityRegressor
from fiqa.quality.optim import param_groups

log = logging.getLogger(__name__)


class UnfreezeBackbone(BaseFinetuning):
    """Train the head (and what ``model.freeze`` leaves trainable) first, then, from epoch
    ``epoch`` on, the frozen part too, at ``backbone_lr``.

    The module freezes its parameters itself (``QualityRegressor.frozen_parameters``);
    BaseFinetuning records the added parameter groups, so a resumed run restores them.
    """

    def __init__(self, epoch: int) -> None:
        super().__init__()
        if epoch < 1:
            raise ValueError(f"model.unfreeze_at_epoch must be >= 1, got {epoch}")
        self.epoch = epoch

    def freeze_before_training(self, pl_module: pl.LightningModule) -> None:
        """Nothing to do: the module was built with its frozen part frozen."""

    def finetune_function(
        self, pl_module: pl.LightningModule, current_epoch: int, optimizer: Optimizer
    ) -> None:
        """At ``epoch`` (or on resuming later), unfreeze and add what the optimiser lacks."""
        assert isinstance(pl_module, QualityRegressor)
        frozen = [p for p in pl_module.frozen_parameters() if not p.requires_grad]
        if current_epoch < self.epoch or not frozen:
            return
        for param in frozen:
            param.requires_grad_(True)
        pl_module.train(pl_module.training)  # their BatchNorm layers now follow the mode
        in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
        new = [p for p in frozen if id(p) not in in_optimizer]
        hp = pl_module.hparams
        for group in param_groups(new, hp.backbone_lr, hp.weight_decay):
            optimizer.add_param_group(group)
        log.info("epoch %d: %d backbone tensors unfrozen", current_epoch, len(frozen))


class ValidationEDC(pl.Callback):
    """Normalised pAUC of the model's validation predictions on the validation pairs.

    The pairs are those of the validation faces by the rule ``pairs`` (all of them on a small
    split, a bounded seeded sample on a large one); the comparison scores come from an FR
    model's embeddings of those faces (the "teacher", computed once by the caller); quality of a
    pair = min of the two predictions; threshold fixed once at ``fmr`` (``fiqa.core.edc``).
    Logs ``val/pauc@<limit>`` for each limit.

    Args:
        sample_ids: ``(n,)`` sample ids of the validation faces.
        identities: ``(n,)`` their identities.
        embeddings: ``(n, D)`` unit FR embeddings of those faces.
        fmr: Target false match rate of the threshold.
        limits: Discard fractions of the pAUCs.
        pairs: The pair rule (``eval.pairs``).
    """

    def __init__(
        self,
        sample_ids: np.ndarray,
        identities: np.ndarray,
        embeddings: np.ndarray,
        fmr: float,
        limits: tuple[float, ...],
        pairs: PairSampling,
    ) -> None:
        super().__init__()
        self.rows = {int(s): i for i, s in enumerate(sample_ids)}
        self.pairs = pairs.pairs(identities)
        if self.pairs.n_genuine == 0 or self.pairs.n_impostor == 0:
            raise ValueError("the validation split needs genuine and impostor pairs for its EDC")
        self.scores = pair_scores(embeddings, self.pairs)
        self.fmr, self.limits = fmr, tuple(limits)
        self._preds: list[tuple[torch.Tensor, torch.Tensor]] = []

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._preds = []

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                outputs: dict, batch: dict, batch_idx: int,
                                dataloader_idx: int = 0) -> None:  # fmt: skip
        self._preds.append((outputs["sample_id"].detach(), outputs["pred"].detach()))

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._preds or trainer.sanity_checking:
            return
        ids, preds = (torch.cat(parts) for parts in zip(*self._preds, strict=True))
        if trainer.world_size > 1:
            ids, preds = (pl_module.all_gather(t).flatten() for t in (ids, preds))
        quality = np.full(len(self.rows), np.nan)
        for sample_id, value in zip(ids.tolist(), preds.float().cpu().numpy(), strict=True):
            quality[self.rows[int(sample_id)]] = value
        if np.isnan(quality).any():
            log.warning("validation EDC skipped: predictions for only part of the split")
            return
        curve = quality_curves(self.scores, self.pairs, quality, (self.fmr,))[self.fmr]
        for limit in self.limits:
            pl_module.log(f"val/pauc@{limit:g}", pauc(curve, limit), on_epoch=True, batch_size=1)
