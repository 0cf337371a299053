"""The face DDPM: a ``diffusers`` U-Net and noise schedule, saved and loaded as a DDPM pipeline
folder (``model_index.json``, ``unet/``, ``scheduler/``; ``DDPMPipeline.from_pretrained`` reads it).

``load_ddpm`` also takes a bare ``UNet2DModel`` folder or a state-dict file (``.pt``, ``.pth``,
``.safetensors``) of the architecture the ``ddpm`` settings describe; ``ddpm_digest`` is the
content hash that keys everything computed with a DDPM (DifFIQA labels in the extraction cache).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler, UNet2DModel

from fiqa.core.artifacts import DDPM_RECORD
from fiqa.core.provenance import digest, sha256_now
from fiqa.diffusion.settings import ScheduleSettings, UNetSettings

STATE_DICT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
# From disk only (never the Hub); plain loading (no `accelerate`, which fiqa does not need).
_LOCAL = {"local_files_only": True, "low_cpu_mem_usage": False}


def build_unet(settings: UNetSettings) -> UNet2DModel:
    """A randomly initialised RGB U-Net of these settings."""
    levels = range(len(settings.channel_mults))
    attention = set(settings.attention_levels)
    if not attention <= set(levels):
        raise ValueError(
            f"ddpm.unet.attention_levels {sorted(attention)} must be levels of "
            f"channel_mults (0..{len(settings.channel_mults) - 1})"
        )
    down = tuple("AttnDownBlock2D" if i in attention else "DownBlock2D" for i in levels)
    up = tuple("AttnUpBlock2D" if i in attention else "UpBlock2D" for i in reversed(levels))
    return UNet2DModel(
        sample_size=settings.sample_size,
        in_channels=3,
        out_channels=3,
        layers_per_block=settings.layers_per_block,
        block_out_channels=tuple(settings.base_width * m for m in settings.channel_mults),
        down_block_types=down,
        up_block_types=up,
    )


def build_scheduler(schedule: ScheduleSettings) -> DDPMScheduler:
    """The forward-diffusion schedule (``add_noise`` is q(x_t | x_0))."""
    return DDPMScheduler(
        num_train_timesteps=schedule.timesteps,
        beta_start=schedule.beta_start,
        beta_end=schedule.beta_end,
        beta_schedule=schedule.beta_schedule,
        prediction_type=schedule.prediction,
    )


@dataclass
class FaceDDPM:
    """A trained DDPM: the denoising network and its schedule.

    Attributes:
        unet: ``(x_t, t) -> prediction`` (x0 or epsilon, as ``scheduler`` says).
        scheduler: The DDPM schedule it was trained with.
    """

    unet: UNet2DModel
    scheduler: DDPMScheduler

    @property
    def sample_size(self) -> int:
        size = self.unet.config.sample_size
        return int(size if isinstance(size, int) else size[0])

    def ddim(self) -> DDIMScheduler:
        """A DDIM sampler on this schedule with stride 1 (``timesteps`` = T-1, ..., 0), so a
        reconstruction from step t takes t + 1 network evaluations (DifFIQA's setting)."""
        ddim = DDIMScheduler.from_config(self.scheduler.config)
        ddim.set_timesteps(self.scheduler.config.num_train_timesteps)
        return ddim

    def save(self, directory: str | Path) -> None:
        """Write a ``DDPMPipeline`` folder (safetensors weights)."""
        DDPMPipeline(unet=self.unet, scheduler=self.scheduler).save_pretrained(str(directory))


def load_ddpm(path: str | Path, unet: UNetSettings, schedule: ScheduleSettings) -> FaceDDPM:
    """A DDPM from a pipeline folder, a ``UNet2DModel`` folder or a state-dict file.

    A folder brings its own architecture and, when it has ``scheduler/``, its schedule; a
    state dict is loaded into the architecture of ``unet``; otherwise ``schedule`` is used.

    Raises:
        FileNotFoundError: When ``path`` is none of these (the message names it).
    """
    path = Path(path)
    if (path / "unet" / "config.json").is_file():
        net = UNet2DModel.from_pretrained(str(path), subfolder="unet", **_LOCAL)
    elif (path / "config.json").is_file():
        net = UNet2DModel.from_pretrained(str(path), **_LOCAL)
    elif path.is_file() and path.suffix in STATE_DICT_SUFFIXES:
        net = build_unet(unet)
        net.load_state_dict(_state_dict(path))
    else:
        raise FileNotFoundError(
            f"{path}: not a DDPM (a DDPMPipeline or UNet2DModel folder, or a state-dict file "
            f"{'/'.join(STATE_DICT_SUFFIXES)}); train one with `fiqa ddpm` or give "
            "label.methods.diffiqa.ddpm"
        )
    if (path / "scheduler" / "scheduler_config.json").is_file():
        scheduler = DDPMScheduler.from_pretrained(
            str(path), subfolder="scheduler", local_files_only=True
        )
    else:
        scheduler = build_scheduler(schedule)
    return FaceDDPM(net.eval().requires_grad_(False), scheduler)


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def model_files(path: str | Path) -> list[Path]:
    """The files that make up the DDPM at ``path`` (weights and configs), sorted."""
    path = Path(path)
    if path.is_file():
        return [path]
    roots = [path / "unet", path / "scheduler"] if (path / "unet").is_dir() else [path]
    wanted = (".json", *STATE_DICT_SUFFIXES)
    ignored = ("model_index.json", DDPM_RECORD)  # the pipeline index, fiqa's training record
    return sorted(f for root in roots for f in root.iterdir() if f.suffix in wanted and f.is_file()
                  and f.name not in ignored)  # fmt: skip


def ddpm_digest(path: str | Path) -> str:
    """Content hash of the DDPM at ``path`` (its weight and config files), memoised per file
    state (size and modification time)."""
    files = model_files(path)
    if not files:
        raise FileNotFoundError(f"{path}: no DDPM weights or configs found")
    state = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _digest(state, str(Path(path)))


@functools.lru_cache(maxsize=16)
def _digest(state: tuple[tuple[str, int, int], ...], root: str) -> str:
    # a folder's files by their place in it and content; a lone file by content only
    parts = [(str(Path(name).relative_to(root)) if name != root else "", sha256_now(name))
             for name, _, _ in state]  # fmt: skip
    return digest(parts)
