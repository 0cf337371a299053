"""The face DDPM (``diffusers`` U-Net and schedules): training on prepared faces, loading,
forward diffusion and DDIM reconstruction (DifFIQA's perturbations)."""

from fiqa.diffusion.model import FaceDDPM, build_scheduler, build_unet, ddpm_digest, load_ddpm
from fiqa.diffusion.sampling import ddim_reconstruct, perturb, q_sample
from fiqa.diffusion.settings import DDPMSettings, ScheduleSettings, UNetSettings

__all__ = [
    "DDPMSettings",
    "FaceDDPM",
    "ScheduleSettings",
    "UNetSettings",
    "build_scheduler",
    "build_unet",
    "ddim_reconstruct",
    "ddpm_digest",
    "load_ddpm",
    "perturb",
    "q_sample",
]
