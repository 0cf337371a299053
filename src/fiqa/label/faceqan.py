"""FaceQAN (Babnik, Peer, Struc, ICPR 2022): quality from how hard an embedding is to perturb.

For a face x with embedding y = M(x), k copies x_j = x + u_j (u_j ~ U(-eps, eps) per pixel) are
attacked for l iterations of the basic iterative method (BIM) in embedding space:

    loss_j = 1 - cos(M(x_j), y),   x_j <- clip(x_j + eps * sign(d loss_j / d x_j))

Every iteration records S = cos(y, M(x_j)) of the copies before their step (l * k values per
face). With the symmetry term s_f = cos(y, M(flip(x))):

    q_adv = (1 + mean S) / 2 * clip(1 - std S, 0, 1),   Q = (q_adv * s_f) ^ p

Defaults as the paper and its code: eps = 0.001 (in [0, 1] pixel units, i.e. 0.255 grey levels),
l = 5, k = 10, p = 5; std over all l * k similarities (ddof 0). Pixels are clipped to the valid
range [0, 255] (the public code clips to [-1, 1] in [0, 1] units, i.e. effectively only below at
-1). A negative base q_adv * s_f (a mirror embedding pointing away) is clipped at 0, so Q is in
[0, 1] for any p.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fiqa.extract.products import Batch, BatchProduct

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 30.0  # a line while one extraction batch is attacked (minutes on a CPU)

PIXEL_RANGE = 255.0  # eps is given in [0, 1] image units; the networks take 0..255


@dataclass
class FaceQanSettings:
    """FaceQAN settings (``label.methods.faceqan``; the paper's values are in its config).

    Attributes:
        eps: Noise spread and BIM step, in [0, 1] pixel units.
        iterations: l, BIM iterations.
        copies: k, noisy copies attacked per face.
        power: p.
        batch_size: Faces attacked together (``batch_size * copies`` images per pass).
    """

    eps: float
    iterations: int
    copies: int
    power: float
    batch_size: int

    def __post_init__(self) -> None:
        if not 0.0 < self.eps < 1.0:
            raise ValueError(f"label.methods.faceqan.eps must be in (0, 1), got {self.eps}")
        if self.iterations < 1 or self.copies < 2:
            raise ValueError(
                "label.methods.faceqan needs iterations >= 1 and copies >= 2, got "
                f"{self.iterations} and {self.copies}"
            )
        if self.power <= 0 or self.batch_size < 1:
            raise ValueError(
                f"label.methods.faceqan needs power > 0 and batch_size >= 1, got {self.power} "
                f"and {self.batch_size}"
            )


def faceqan_quality(similarities: np.ndarray, symmetry: np.ndarray, power: float) -> np.ndarray:
    """Q = ((1 + mean S) / 2 * clip(1 - std S, 0, 1) * s_f) ^ p.

    Args:
        similarities: ``(n, l * k)`` adversarial similarities S of each face.
        symmetry: ``(n,)`` s_f, cosine of each face's embedding to its mirror's.
        power: p.

    Returns:
        ``(n,)`` float64 scores in [0, 1].
    """
    s = np.asarray(similarities, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] < 1 or len(s) != len(symmetry):
        raise ValueError(
            f"expected (n, m) similarities and (n,) symmetry, got {s.shape} and "
            f"{np.shape(symmetry)}"
        )
    q_adv = (1.0 + s.mean(axis=1)) / 2.0 * np.clip(1.0 - s.std(axis=1), 0.0, 1.0)
    base = np.clip(q_adv * np.asarray(symmetry, dtype=np.float64), 0.0, None)
    return base**power


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a.float(), b.float(), dim=1)


def attack_similarities(
    net: nn.Module, x: torch.Tensor, params: FaceQanSettings, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """BIM similarities and symmetry of a batch of faces.

    Args:
        net: FR network, float ``(N, 3, H, W)`` RGB 0..255 -> ``(N, D)`` raw embeddings; must be
            differentiable (a PyTorch model; BatchNorm in eval mode).
        x: ``(n, 3, H, W)`` faces, float 0..255.
        params: FaceQAN settings.
        generator: Source of the start noise (None = torch's global RNG).

    Returns:
        ``(n, l * k)`` similarities S and ``(n,)`` symmetry s_f, float32 on the input's device.
    """
    n, k, step = len(x), params.copies, params.eps * PIXEL_RANGE
    with torch.no_grad():
        base = net(torch.cat([x, x.flip(3)])).float()
        y, symmetry = base[:n], _cosine(base[:n], base[n:])
    target = y.repeat_interleave(k, dim=0)
    noise = torch.rand(n * k, *x.shape[1:], generator=generator, device=x.device)
    copies = (x.repeat_interleave(k, dim=0) + (2.0 * noise - 1.0) * step).clamp(0.0, PIXEL_RANGE)
    copies = copies.contiguous(memory_format=torch.channels_last)  # faster CPU convolutions
    similarities = []
    for _ in range(params.iterations):
        copies.requires_grad_(True)
        cos = _cosine(net(copies), target)
        (grad,) = torch.autograd.grad((1.0 - cos).sum(), copies)
        similarities.append(cos.detach().view(n, k))
        copies = (copies.detach() + step * grad.sign()).clamp(0.0, PIXEL_RANGE)
    return torch.cat(similarities, dim=1), symmetry


def faceqan_batch(
    net: nn.Module, x: torch.Tensor, params: FaceQanSettings, generator: torch.Generator | None
) -> torch.Tensor:
    """FaceQAN scores ``(n,)`` float64 of ``x`` (float 0..255 faces), ``params.batch_size`` faces
    per attack pass so memory stays bounded whatever the size of ``x``; a progress line every
    ``PROGRESS_EVERY_S`` seconds, since one extraction batch takes minutes on a CPU."""
    scores = []
    trainable = [p for p in net.parameters() if p.requires_grad]
    started = last = time.monotonic()
    try:
        for p in trainable:  # only input gradients are needed: skip the weight gradients
            p.requires_grad_(False)
        with torch.inference_mode(False), torch.enable_grad():
            for start in range(0, len(x), params.batch_size):
                # clone: a normal tensor even when x was made in inference mode
                chunk = x[start : start + params.batch_size].clone()
                s, s_f = attack_similarities(net, chunk, params, generator)
                scores.append(faceqan_quality(s.cpu().numpy(), s_f.cpu().numpy(), params.power))
                done, now = start + len(chunk), time.monotonic()
                if now - last >= PROGRESS_EVERY_S and done < len(x):
                    log.info("faceqan: %d/%d faces of this batch attacked, %.2f faces/s", done,
                             len(x), done / (now - started))  # fmt: skip
                    last = now
    finally:
        for p in trainable:
            p.requires_grad_(True)
    return torch.from_numpy(np.concatenate(scores) if scores else np.zeros(0))


@dataclass(frozen=True)
class FaceQanProduct(BatchProduct):
    """FaceQAN scores as an extraction product (gradients on inside the predict loop)."""

    params: FaceQanSettings
    seed: int

    name: ClassVar[str] = "faceqan"
    white_box: ClassVar[str | None] = "FaceQAN"
    gradients: ClassVar[bool] = True
    seeded: ClassVar[bool] = True
    stream: ClassVar[int] = 1  # random stream of the batch generator

    def compute(self, batch: Batch) -> torch.Tensor:
        return faceqan_batch(
            batch.net, batch.x, self.params, batch.generator(self.seed, self.stream)
        )
