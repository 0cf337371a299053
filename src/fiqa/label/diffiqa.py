"""DifFIQA (Babnik et al., IJCB 2023): quality = how stable the embedding stays when a face
DDPM perturbs the face.

For a face x and its mirror x_f, n times: forward diffusion to step t gives x_t (and x_f,t), a
DDIM pass back gives the reconstruction x_hat (and x_f,hat); with e the FR embedding,

    q = mean over the n repeats of 1/5 [cos(e(x), e(x_t)) + cos(e(x), e(x_hat))
          + cos(e(x), e(x_f,t)) + cos(e(x), e(x_f,hat)) + cos(e(x), e(x_f))]

(the public code: n = 10, t = 5, a DDIM reconstruction in t + 1 steps). Only embeddings are
needed, so any FR model (ONNX, dlib) can score; the DDPM is ``fiqa.diffusion``'s, trained by the
``ddpm`` stage or given as ``label.methods.diffiqa.ddpm``, and its content digest is part of
the cached product's key.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F

from fiqa.core.provenance import digest
from fiqa.diffusion.settings import ScheduleSettings, UNetSettings
from fiqa.extract.products import Batch, BatchProduct

if TYPE_CHECKING:  # diffusers loads only when a DDPM is used, not with the registry
    from fiqa.diffusion.model import FaceDDPM

METHOD = "diffiqa"  # the registry name of the one label method that reads a face DDPM


@dataclass
class DiffiqaSettings:
    """DifFIQA settings (``label.methods.diffiqa``).

    Attributes:
        ddpm: The DDPM: a DDPMPipeline or UNet2DModel folder, or a state-dict file
            (default: the ``ddpm`` stage's output, ``paths.ddpm``).
        unet: Architecture of a state-dict ``ddpm`` (default: the ``ddpm`` group's).
        schedule: Noise schedule of a ``ddpm`` without a scheduler config.
        repeats: n, the number of noise draws per face.
        t: Forward-diffusion step (the reconstruction takes t + 1 DDIM steps).
    """

    ddpm: str
    unet: UNetSettings
    schedule: ScheduleSettings
    repeats: int
    t: int


def diffiqa_from_embeddings(
    e: torch.Tensor,
    e_flip: torch.Tensor,
    e_noisy: torch.Tensor,
    e_recon: torch.Tensor,
    e_flip_noisy: torch.Tensor,
    e_flip_recon: torch.Tensor,
) -> torch.Tensor:
    """DifFIQA quality from embeddings (normalised here).

    Args:
        e: ``(n, d)`` embeddings of the faces.
        e_flip: ``(n, d)`` of their mirrors.
        e_noisy, e_recon, e_flip_noisy, e_flip_recon: ``(n, r, d)`` of the r repeats' x_t,
            x_hat, x_f,t and x_f,hat.

    Returns:
        ``(n,)`` scores in [-1, 1].
    """
    if e_noisy.ndim != 3 or e_noisy.shape[1] < 1:
        raise ValueError(f"expected (n, r >= 1, d) embeddings, got {tuple(e_noisy.shape)}")
    ref = F.normalize(e.double(), dim=-1)

    def cos(x: torch.Tensor) -> torch.Tensor:  # (n, r) cosines to e(x)
        return torch.einsum("nd,nrd->nr", ref, F.normalize(x.double(), dim=-1))

    flip = (ref * F.normalize(e_flip.double(), dim=-1)).sum(-1)
    per_repeat = cos(e_noisy) + cos(e_recon) + cos(e_flip_noisy) + cos(e_flip_recon)
    return (per_repeat.mean(dim=1) + flip) / 5.0


@functools.lru_cache(maxsize=4)
def _loaded(path: str, digest_: str, unet: str, schedule: str) -> FaceDDPM:
    """The DDPM of ``path`` (loaded once per process and content; settings as JSON)."""
    from fiqa.diffusion.model import load_ddpm

    return load_ddpm(
        path, UNetSettings(**json.loads(unet)), ScheduleSettings(**json.loads(schedule))
    )


@dataclass(frozen=True)
class DiffiqaProduct(BatchProduct):
    """DifFIQA scores as an extraction product: the DDPM perturbs the batch's faces, the
    batch's FR network embeds them (``Batch.raw`` is e(x))."""

    params: DiffiqaSettings
    seed: int

    name: ClassVar[str] = METHOD
    seeded: ClassVar[bool] = True
    stream: ClassVar[int] = 2  # random stream of the batch generator (serfiq 0, faceqan 1)

    def __post_init__(self) -> None:
        if self.params.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.params.repeats}")
        if not 0 <= self.params.t < self.params.schedule.timesteps:
            raise ValueError(f"t must be in [0, T), got {self.params.t}")

    def stem(self, batch_size: int) -> str:
        """The key holds the DDPM's content digest, not its path (a state dict's
        architecture too)."""
        p = self.params
        path = Path(p.ddpm)
        settings = {"ddpm": self.ddpm_digest(), "repeats": p.repeats, "t": p.t,
                    "seed": self.seed, "batch_size": batch_size}  # fmt: skip
        if path.is_file():
            settings |= {"unet": asdict(p.unet), "schedule": asdict(p.schedule)}
        return f"{self.name}-{digest(settings, 12)}"

    def ddpm_digest(self) -> str:
        """Content digest of the DDPM (the error says how to get one)."""
        from fiqa.diffusion.model import ddpm_digest

        try:
            return ddpm_digest(self.params.ddpm)
        except FileNotFoundError as err:
            raise FileNotFoundError(
                f"label.methods.diffiqa.ddpm={self.params.ddpm}: no DDPM there; train one "
                "with `fiqa ddpm` (dvc repro ddpm) or give a DDPM folder or state dict"
            ) from err

    def ddpm(self, device: torch.device) -> FaceDDPM:
        """The loaded DDPM, on ``device``."""
        p = self.params
        ddpm = _loaded(str(p.ddpm), self.ddpm_digest(), json.dumps(asdict(p.unet)),
                       json.dumps(asdict(p.schedule)))  # fmt: skip
        ddpm.unet.to(device)
        return ddpm

    def compute(self, batch: Batch) -> torch.Tensor:
        from fiqa.diffusion.sampling import perturb

        p = self.params
        ddpm = self.ddpm(batch.x.device)
        ddim = ddpm.ddim()
        generator = batch.generator(self.seed, self.stream)
        x, x_flip = batch.x, batch.x.flip(3)
        n = x.shape[0]
        e_flip = batch.net(x_flip).float()
        perturbed: list[torch.Tensor] = []  # per repeat: (4n, d) for x_t, x_hat, x_f,t, x_f,hat
        for _ in range(p.repeats):
            noisy, recon = perturb(ddpm, ddim, torch.cat([x, x_flip]), p.t, generator)
            images = torch.cat([noisy[:n], recon[:n], noisy[n:], recon[n:]])
            perturbed.append(batch.net(images).float().reshape(4, n, -1))
        stack = torch.stack(perturbed, dim=2)  # (4, n, r, d)
        scores = diffiqa_from_embeddings(batch.raw, e_flip, *stack)
        return scores.float()
