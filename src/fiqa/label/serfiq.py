"""SER-FIQ (Terhoerst et al., CVPR 2020): quality = robustness of the embedding under dropout.

For a face, m stochastic embeddings x_1..x_m are drawn with dropout active ONLY in the last layer
(the backbone runs once; the m passes reuse its features). With the x_i L2-normalised,

    q = 2 * sigmoid(-d) = 2 / (1 + exp(d)),   d = mean_{i<j} ||x_i - x_j||_2

so q is in (0, 1] and q = 1 when every pass gives the same embedding. The SER-FIQ repository also
offers a calibration q' = 1 / (1 + exp(-a (q - r))) with a = 130, r = 0.88.

Cost: pass k multiplies the features by one Bernoulli(1 - p) / (1 - p) mask drawn for the batch
(every face of the batch sees the same m masks; each face's m passes are still independent
dropout draws, so its score has the same distribution as with per-face masks). Drawing an
(n, F) mask per pass instead costs more than the head itself for wide features (SFace:
F = 50176); a shared (F,) mask is drawn in microseconds. Several passes go through the head in
one call (a (k n, F) batch): the head's weight matrix (SFace: 25 MB) is then read once per k
passes instead of once per pass, which is what bounds the speed of small batches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from fiqa.extract.products import Batch, BatchProduct

CALIBRATION_A = 130.0
CALIBRATION_R = 0.88

Head = Callable[[torch.Tensor], torch.Tensor]
PASS_GROUP_ELEMENTS = 2**25  # masked features per head call (128 MB of float32)


@dataclass
class SerFiqSettings:
    """SER-FIQ settings (``label.methods.serfiq``).

    Attributes:
        passes: m stochastic passes of the last layer.
        dropout: Drop probability p.
        calibrate: Apply the SER-FIQ repository's calibration (``calibrate``).
    """

    passes: int
    dropout: float
    calibrate: bool


def serfiq_from_embeddings(embeddings: torch.Tensor) -> torch.Tensor:
    """SER-FIQ score from stochastic embeddings of shape (n, m, d) (normalised here).

    The mean pairwise distance uses ||a - b|| = sqrt(2 - 2 a.b) for unit vectors, from the
    (m, m) Gram matrix of each face: O(n m^2 d), no (m^2, d) difference tensor.
    """
    if embeddings.ndim != 3 or embeddings.shape[1] < 2:
        raise ValueError(f"expected (n, m >= 2, d) embeddings, got {tuple(embeddings.shape)}")
    x = F.normalize(embeddings.double(), dim=-1)
    gram = x @ x.transpose(1, 2)
    m = x.shape[1]
    iu = torch.triu_indices(m, m, offset=1)
    dist = torch.sqrt(torch.clamp(2.0 - 2.0 * gram[:, iu[0], iu[1]], min=0.0))
    return 2.0 * torch.sigmoid(-dist.mean(dim=1))


def calibrate(q: np.ndarray, a: float = CALIBRATION_A, r: float = CALIBRATION_R) -> np.ndarray:
    """The SER-FIQ repository's calibration 1 / (1 + exp(-a (q - r)))."""
    return 1.0 / (1.0 + np.exp(-a * (np.asarray(q, dtype=np.float64) - r)))


@torch.inference_mode()
def serfiq_scores(
    head: Head,
    features: torch.Tensor,
    passes: int,
    dropout: float,
    generator: torch.Generator | None = None,
    calibrated: bool = False,
) -> np.ndarray:
    """SER-FIQ quality of a batch from its backbone ``features``.

    Args:
        head: ``features -> (n, d)`` deterministic embedding layers (``net.forward_head``).
        features: ``(n, F)`` backbone features (``net.forward_features``), computed once.
        passes: m stochastic head passes (100 in the paper).
        dropout: Drop probability p (0.5 in the paper).
        generator: Source of the masks; None = torch's global RNG.
        calibrated: Apply ``calibrate``.

    Returns:
        ``(n,)`` float64 scores.
    """
    if passes < 2:
        raise ValueError(f"label.methods.serfiq.passes must be >= 2, got {passes}")
    if not 0.0 < dropout < 1.0:
        raise ValueError(f"label.methods.serfiq.dropout must be in (0, 1), got {dropout}")
    keep, (n, width) = 1.0 - dropout, features.shape
    group = max(1, PASS_GROUP_ELEMENTS // max(n * width, 1))  # passes per head call
    stochastic = []
    for start in range(0, passes, group):
        k = min(group, passes - start)
        u = torch.rand(k, 1, width, generator=generator, device=features.device)
        masked = features.unsqueeze(0) * ((u < keep).to(features.dtype) / keep)
        stochastic.append(head(masked.reshape(k * n, width)).reshape(k, n, -1))
    q = serfiq_from_embeddings(torch.cat(stochastic).transpose(0, 1)).cpu().numpy()
    return calibrate(q) if calibrated else q


@dataclass(frozen=True)
class SerFiqProduct(BatchProduct):
    """SER-FIQ scores as an extraction product: the m passes reuse the batch's features."""

    params: SerFiqSettings
    seed: int

    name: ClassVar[str] = "serfiq"
    white_box: ClassVar[str | None] = "SER-FIQ"
    seeded: ClassVar[bool] = True
    stream: ClassVar[int] = 0  # random stream of the batch generator

    def compute(self, batch: Batch) -> torch.Tensor:
        p = self.params
        scores = serfiq_scores(batch.net.forward_head, batch.features, p.passes, p.dropout,
                               batch.generator(self.seed, self.stream), p.calibrate)  # fmt: skip
        return torch.from_numpy(scores)
