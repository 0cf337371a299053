"""Teacher-student distillation of an FR model (Huo et al. 2022, eq. 6), then a small student.

``Loss = a * MSE(P(F_s), F_t) + b * CE(C_s, C_t) + c * CE(C_s, C_l)``, (a, b, c) = (0.4, 0.2, 0.4):

- ``F_t``: raw (unnormalised) embedding of the teacher, a registry FR model that stays frozen, in
  eval mode and without gradients. FR nets end in BatchNorm1d, so its entries are ~unit scale.
- ``F_s``: raw student embedding; ``P`` is a bias-free ``Linear(D_s, D_t)`` when the dimensions
  differ (identity otherwise). ``P`` and the student head exist only during distillation: the
  student saved by ``save_student`` maps faces to ``F_s``.
- ``C_s = s * cos(F_s, w_k)``: a cosine head (learnable ``w``, no margin) so student and teacher
  logits live on the same scale ``s`` (default 64, as ArcFace).
- ``C_t``: the teacher's own head when ``teacher_class_weights`` is given (``"cosine"``:
  ``s * cos(F_t, w_k)``, ArcFace / partial-FC weights; ``"linear"``: ``F_t W^T + b``), else
  ``s * cos(F_t, centre_k)`` with ``centre_k`` the mean L2-normalised teacher embedding of class k
  over the train loader, computed once at fit start and stored in the checkpoint.
- ``CE(C_s, C_t) = -T^2 * sum_k softmax(C_t / T)_k log softmax(C_s / T)_k`` (soft targets; the
  ``T^2`` keeps gradients comparable across temperatures, Hinton et al.); T = 1 is eq. 6.
- ``CE(C_s, C_l)``: hard-label cross entropy; label -1 (an identity outside the training classes,
  e.g. the identity-disjoint val split) is skipped, and the term is 0 when no label is known.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from fiqa.core.atomic import atomic_path
from fiqa.core.containers import plain_container
from fiqa.fr import load_fr_model
from fiqa.quality.model import build_backbone, check_choice
from fiqa.quality.optim import SCHEDULERS, param_groups, with_schedule

log = logging.getLogger(__name__)

TEACHER_HEADS = ("cosine", "linear")
STUDENT_FILE_KEY = "fr_model"  # what a save_student file holds, next to its "state_dict"


def cosine_logits(embeddings: torch.Tensor, weights: torch.Tensor, scale: float) -> torch.Tensor:
    """``scale * cos(embedding_i, weight_k)``: ``(N, D)``, ``(K, D)`` -> ``(N, K)``."""
    return scale * F.normalize(embeddings, dim=1) @ F.normalize(weights, dim=1).T


def class_sums(
    embeddings: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class sums of L2-normalised embeddings ``(K, D)`` and counts ``(K,)``; labels < 0 skipped."""
    keep = labels >= 0
    unit, labels = F.normalize(embeddings[keep].float(), dim=1), labels[keep].long()
    sums = unit.new_zeros(num_classes, unit.shape[1]).index_add_(0, labels, unit)
    counts = unit.new_zeros(num_classes).index_add_(
        0, labels, torch.ones_like(labels, dtype=unit.dtype)
    )
    return sums, counts


def class_mean_embeddings(
    embeddings: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """Mean L2-normalised embedding per class ``(K, D)`` (zeros for a class without samples)."""
    sums, counts = class_sums(embeddings, labels, num_classes)
    return sums / counts.clamp(min=1)[:, None]


def distillation_losses(
    student_emb: torch.Tensor,
    teacher_emb: torch.Tensor,
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    weights: Sequence[float],
    temperature: float,
) -> dict[str, torch.Tensor]:
    """Eq. 6 and its terms: ``{"loss", "mse", "kd", "ce"}``.

    Args:
        student_emb: ``(N, D_t)`` student embedding, already projected to the teacher's D.
        teacher_emb: ``(N, D_t)`` teacher embedding.
        student_logits: ``(N, K)``.
        teacher_logits: ``(N, K)``.
        labels: ``(N,)`` class ids; -1 = unknown (skipped by the hard-label term).
        weights: ``(a, b, c)`` of the MSE, soft-target CE and hard-label CE terms ((0.4, 0.2,
            0.4) in Huo et al.).
        temperature: Softmax temperature T of the soft-target term (scaled by T^2).
    """
    mse = F.mse_loss(student_emb, teacher_emb)
    targets = F.softmax(teacher_logits / temperature, dim=1)
    log_probs = F.log_softmax(student_logits / temperature, dim=1)
    kd = -(targets * log_probs).sum(dim=1).mean() * temperature**2
    known = labels >= 0
    ce = F.cross_entropy(student_logits[known], labels[known]) if known.any() else mse.new_zeros(())
    a, b, c = weights
    return {"loss": a * mse + b * kd + c * ce, "mse": mse, "kd": kd, "ce": ce}


class DistillationModule(pl.LightningModule):
    """Distil a frozen registry FR teacher into a small registry FR student (see module doc).

    Batches are dicts with ``image`` (float (N, 3, 112, 112) RGB 0..255) and ``label`` (int
    class id, -1 unknown), e.g. from ``IdentityFacesDataModule``. The teacher is rebuilt from
    its name and weights and is left out of checkpoints.

    Args:
        num_classes: Number of training identities K.
        teacher: The teacher FR model ``{name, weights, options}`` (``load_fr_model``; weights
            None: the model's bundled file).
        teacher_class_weights: File with the teacher's head, a ``(K, D_t)`` tensor or a dict
            with ``weight`` (and ``bias`` for ``"linear"``); None: identity centres.
        teacher_head: ``"cosine"`` or ``"linear"``: how ``teacher_class_weights`` make logits.
        student: The student ``{name, pretrained, weights, options}``: a PyTorch FR model of
            ``fiqa.fr``, started from FR weights when ``pretrained`` (else random init), with
            its architecture options (e.g. MobileFaceNet ``blocks``).
        loss_weights: ``(a, b, c)`` of eq. 6.
        temperature: Soft-target temperature T.
        scale: Cosine-logit scale s of the student head and the teacher's cosine logits.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay (weight matrices only).
        scheduler: ``"cosine"`` (per step over the fit), ``"step"`` (x ``lr_gamma`` every
            ``lr_step_epochs`` epochs, the paper's schedule) or ``"none"``.
        lr_step_epochs: Epochs between ``"step"`` decays.
        lr_gamma: ``"step"`` decay factor.
    """

    def __init__(
        self,
        num_classes: int,
        teacher: Mapping[str, Any],
        teacher_class_weights: str | None,
        teacher_head: str,
        student: Mapping[str, Any],
        loss_weights: Sequence[float],
        temperature: float,
        scale: float,
        lr: float,
        weight_decay: float,
        scheduler: str,
        lr_step_epochs: int,
        lr_gamma: float,
    ) -> None:
        super().__init__()
        check_choice("teacher_head", teacher_head, TEACHER_HEADS)
        check_choice("scheduler", scheduler, SCHEDULERS)
        if len(loss_weights) != 3 or num_classes < 1 or temperature <= 0:
            raise ValueError("need 3 loss_weights, num_classes >= 1 and temperature > 0")
        if teacher_head == "linear" and teacher_class_weights is None:
            raise ValueError("teacher_head='linear' needs teacher_class_weights (W and b)")
        # save_hyperparameters reads these locals: store plain values, not Hydra containers.
        teacher = {"options": {}, **plain_container(teacher)}
        student = {"options": {}, **plain_container(student)}
        loss_weights = [float(w) for w in loss_weights]
        self.save_hyperparameters()
        fr = load_fr_model({k: teacher.get(k) for k in ("name", "weights", "options")})
        self.teacher = fr.net.requires_grad_(False)
        self.teacher_info = fr.info
        teacher_dim = fr.embedding_size
        self.student, info = build_backbone(
            student["name"], student["pretrained"], student.get("weights"), student["options"]
        )
        self.student_info = info
        self.student_dim = info.embedding_size
        self.projection = (
            nn.Identity()
            if self.student_dim == teacher_dim
            else nn.Linear(self.student_dim, teacher_dim, bias=False)
        )
        self.student_head = nn.Parameter(torch.randn(num_classes, self.student_dim) * 0.01)
        self.register_buffer("teacher_class_weights", torch.zeros(num_classes, teacher_dim))
        self.register_buffer("teacher_class_bias", torch.zeros(num_classes))
        self.register_buffer("class_weights_ready", torch.tensor(False))
        if teacher_class_weights is not None:
            self._load_teacher_head(Path(teacher_class_weights))
        self.train()

    def _load_teacher_head(self, path: Path) -> None:
        head = torch.load(path, map_location="cpu", weights_only=True)
        weight = head.get("weight") if isinstance(head, Mapping) else head
        bias = head.get("bias") if isinstance(head, Mapping) else None
        shape = tuple(self.teacher_class_weights.shape)
        if not isinstance(weight, torch.Tensor) or tuple(weight.shape) != shape:
            got = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
            raise ValueError(f"{path}: teacher class weights must be a {shape} tensor, got {got}")
        self.teacher_class_weights.copy_(weight)
        if bias is not None:
            self.teacher_class_bias.copy_(bias.reshape(-1))
        self.class_weights_ready.fill_(True)

    def train(self, mode: bool = True) -> DistillationModule:
        """Switch train/eval mode; the frozen teacher always stays in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        """Student embedding ``(N, D_s)`` of float (N, 3, 112, 112) RGB 0..255 faces."""
        return self.student(faces)

    def teacher_logits(self, teacher_emb: torch.Tensor) -> torch.Tensor:
        """``C_t`` from the teacher's head or identity centres."""
        if self.hparams.teacher_head == "linear":
            return teacher_emb @ self.teacher_class_weights.T + self.teacher_class_bias
        return cosine_logits(teacher_emb, self.teacher_class_weights, self.hparams.scale)

    @torch.no_grad()
    def set_teacher_centres(self, loader: Any) -> None:
        """Identity centres of the teacher over ``loader`` (summed over DDP ranks)."""
        sums = self.teacher_class_weights.new_zeros(self.teacher_class_weights.shape)
        counts = sums.new_zeros(len(sums))
        for batch in tqdm(
            loader, desc="teacher centres", mininterval=2, disable=self.global_rank != 0
        ):
            emb = self.teacher(batch["image"].to(self.device)).float()
            batch_sums, batch_counts = class_sums(emb, batch["label"].to(self.device), len(sums))
            sums, counts = sums + batch_sums, counts + batch_counts
        if self._trainer is not None:
            sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
            counts = self.trainer.strategy.reduce(counts, reduce_op="sum")
        if (empty := int((counts == 0).sum())) > 0:
            log.warning(
                "%d of %d classes have no training face: their logit is 0", empty, len(sums)
            )
        self.teacher_class_weights.copy_(sums / counts.clamp(min=1)[:, None])
        self.class_weights_ready.fill_(True)

    def on_fit_start(self) -> None:
        """Compute the identity centres once, before the first (sanity) validation."""
        if not bool(self.class_weights_ready):
            self.trainer.fit_loop.setup_data()  # what fit does next anyway; idempotent
            self.set_teacher_centres(self.trainer.train_dataloader)

    def _losses(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        if not bool(self.class_weights_ready):
            raise RuntimeError(
                "teacher class weights are not set: fit computes identity centres at start, "
                "or pass teacher_class_weights"
            )
        with torch.no_grad():
            teacher_emb = self.teacher(batch["image"]).float()
            teacher_logits = self.teacher_logits(teacher_emb)
        student_emb = self.student(batch["image"])
        projected = self.projection(student_emb)
        hp = self.hparams
        terms = distillation_losses(
            projected,
            teacher_emb,
            cosine_logits(student_emb, self.student_head, hp.scale),
            teacher_logits,
            batch["label"],
            hp.loss_weights,
            hp.temperature,
        )
        cos = F.cosine_similarity(projected, teacher_emb, dim=1).mean()
        return terms, cos

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Log ``train/loss`` and its terms ``train/loss_{mse,kd,ce}``."""
        terms, _ = self._losses(batch)
        if not torch.isfinite(terms["loss"]):
            raise FloatingPointError(
                f"non-finite distillation loss {terms} at step {self.global_step}; lower the lr"
            )
        names = {
            "loss": "train/loss",
            "mse": "train/loss_mse",
            "kd": "train/loss_kd",
            "ce": "train/loss_ce",
        }
        self.log_dict({names[k]: v for k, v in terms.items()}, batch_size=len(batch["image"]))
        return terms["loss"]

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Epoch means of ``val/loss``, ``val/loss_{mse,kd}`` and ``val/student_teacher_cos``."""
        terms, cos = self._losses(batch)
        metrics = {
            "val/loss": terms["loss"],
            "val/loss_mse": terms["mse"],
            "val/loss_kd": terms["kd"],
        }
        metrics["val/student_teacher_cos"] = cos
        self.log_dict(metrics, on_epoch=True, sync_dist=True, batch_size=len(batch["image"]))

    def configure_optimizers(self) -> Any:
        """AdamW over student, projection and student head; cosine / step / no decay."""
        hp = self.hparams
        optimizer = torch.optim.AdamW(
            param_groups(list(self.parameters()), hp.lr, hp.weight_decay), lr=hp.lr
        )
        return with_schedule(optimizer, hp.scheduler, lambda: self.trainer.estimated_stepping_batches,
                             step_epochs=hp.lr_step_epochs, gamma=hp.lr_gamma)  # fmt: skip

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Leave the teacher out: it is rebuilt from its registry name and weights file."""
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith("teacher.")]:
            del state[key]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Fill the teacher's keys from the rebuilt teacher so strict loading works."""
        teacher = {f"teacher.{k}": v for k, v in self.teacher.state_dict().items()}
        checkpoint["state_dict"].update(teacher)

    def student_backbone(self) -> nn.Module:
        """The trained student FR network: float RGB 0..255 faces -> ``(N, D_s)`` embedding."""
        return self.student

    def save_student(self, path: str | Path) -> Path:
        """Write the student as ``{"state_dict": <student keys, upstream layout>, "fr_model":
        {"name", "options", "embedding_size"}}``: ``load_fr_model({"name": <student>,
        "weights": path, "options": <student options>})`` loads it like any FR checkpoint (and
        ``QualityRegressor(backbone=<student>, backbone_weights=path, ...)`` trains on it).
        """
        state = {k: v.detach().cpu().clone() for k, v in self.student.state_dict().items()}
        spec = {
            "name": self.hparams.student["name"],
            "options": dict(self.hparams.student["options"] or {}),
            "embedding_size": int(self.student_dim),
        }
        with atomic_path(path) as tmp:
            torch.save({"state_dict": state, STUDENT_FILE_KEY: spec}, tmp)
        return Path(path)
