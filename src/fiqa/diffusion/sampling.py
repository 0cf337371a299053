"""Forward diffusion and DDIM reconstruction of faces, and the move between an FR model's face
images (0..255 at its input size) and the DDPM's space ([-1, 1] at its sample size).

DifFIQA (Babnik et al., IJCB 2023) perturbs a face by forward diffusion to a small step t,

    x_t = sqrt(abar_t) x + sqrt(1 - abar_t) eps,   eps ~ N(0, I),

and reconstructs it with a deterministic DDIM pass back to step 0 (t + 1 network evaluations).
When the FR model's input and the DDPM differ in size, the perturbation is made at the DDPM's
size and carried over as a change of the full-size face: ``x + up(y - down(x))``. The FR model
then sees the DDPM's change, not a resampling loss that would penalise sharp faces; at equal
sizes this is exactly the DDPM's output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler

from fiqa.diffusion.model import FaceDDPM


def q_sample(
    scheduler: DDPMScheduler, x0: torch.Tensor, t: int, noise: torch.Tensor
) -> torch.Tensor:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise (step ``t``, 0-based as in diffusers)."""
    steps = torch.full((x0.shape[0],), int(t), dtype=torch.long, device=x0.device)
    return scheduler.add_noise(x0, noise, steps)


def ddim_reconstruct(
    unet: torch.nn.Module, ddim: DDIMScheduler, x_t: torch.Tensor, t: int
) -> torch.Tensor:
    """Deterministic DDIM (eta = 0) from ``x_t`` at step ``t`` down to step 0.

    ``ddim`` must have stride 1 (``FaceDDPM.ddim``): steps t, t - 1, ..., 0, each one network
    evaluation; the last returns the predicted x0.
    """
    x = x_t
    for step in range(int(t), -1, -1):
        steps = torch.full((x.shape[0],), step, dtype=torch.long, device=x.device)
        out = unet(x, steps).sample
        x = ddim.step(out, step, x, eta=0.0).prev_sample
    return x


def to_ddpm(faces: torch.Tensor, size: int) -> torch.Tensor:
    """``(n, 3, H, W)`` 0..255 faces as ``(n, 3, size, size)`` in [-1, 1] (area resampling)."""
    if faces.shape[-2:] != (size, size):
        faces = F.interpolate(faces, size=(size, size), mode="area")
    return faces / 127.5 - 1.0


def from_ddpm(y: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """The DDPM-space image ``y`` as a change of the full-size 0..255 ``faces``."""
    if y.shape[-2:] == faces.shape[-2:]:
        return ((y + 1.0) * 127.5).clamp(0.0, 255.0)
    size = y.shape[-1]
    change = (y - to_ddpm(faces, size)) * 127.5
    up = F.interpolate(change, size=faces.shape[-2:], mode="bilinear", align_corners=False)
    return (faces + up).clamp(0.0, 255.0)


@torch.inference_mode()
def perturb(
    ddpm: FaceDDPM,
    ddim: DDIMScheduler,
    faces: torch.Tensor,
    t: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The noised faces x_t and their DDIM reconstructions, both as 0..255 at the faces' size.

    Args:
        ddpm: The DDPM (on the faces' device).
        ddim: ``ddpm.ddim()``.
        faces: ``(n, 3, H, W)`` float 0..255 RGB.
        t: Forward-diffusion step.
        generator: Source of the noise.
    """
    x0 = to_ddpm(faces, ddpm.sample_size)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_t = q_sample(ddpm.scheduler, x0, t, noise)
    x_hat = ddim_reconstruct(ddpm.unet, ddim, x_t, t)
    return from_ddpm(x_t, faces), from_ddpm(x_hat, faces)
