"""DifFIQA's cost: labelling one face vs one embedding vs the DifFIQA(R) regressor, and the
face DDPM's training throughput, measured in one run on this machine.

- embedding: one SFace forward pass per face (batch of B);
- DifFIQA label: ``DiffiqaProduct`` (face and mirror, n repeats of forward diffusion to t and a
  DDIM reconstruction in t + 1 U-Net steps, 4n + 1 further SFace passes) with a DDPM of the
  given preset (random weights: the cost does not depend on training);
- DifFIQA(R): the quality regressor (SFace trunk, MLP head) forward pass, what scoring costs
  once the labels have been distilled into it;
- DDPM training: optimiser steps of the preset's U-Net, images/s.

The DifFIQA / eDifFIQA papers' anchor (RTX 3090): DifFIQA 1,074 ms vs DifFIQA(R) 1.24 ms per image, ~870x.

    python benchmarks/diffiqa_cost.py [--faces 32] [--repeats 10] [--t 5] [--preset cpu]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings

import numpy as np
import torch

from fiqa.config import compose_config
from fiqa.config.defaults import regressor_arguments
from fiqa.config.validate import load_settings
from fiqa.diffusion.model import FaceDDPM, build_scheduler, build_unet
from fiqa.diffusion.module import DDPMModule
from fiqa.extract.products import Batch
from fiqa.fr import load_fr_model
from fiqa.label.diffiqa import DiffiqaProduct, DiffiqaSettings
from fiqa.quality.model import QualityRegressor


def timed(fn, repeat: int = 3) -> float:
    """Best wall time of ``repeat`` calls (after one warm-up), seconds."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=32, help="faces per batch (B)")
    parser.add_argument("--repeats", type=int, default=10, help="DifFIQA's n")
    parser.add_argument("--t", type=int, default=5, help="forward-diffusion step")
    parser.add_argument("--preset", default="cpu", help="conf/ddpm/ preset")
    parser.add_argument("--train-steps", type=int, default=10)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    settings = load_settings(compose_config([f"ddpm={args.preset}", "logger=none"])).ddpm
    faces = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (args.faces, 3, 112, 112))
                             ).float()  # fmt: skip
    fr = load_fr_model({"name": "sface", "weights": None, "options": {}}).net.eval()
    regressor = QualityRegressor(**regressor_arguments()).eval()
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        FaceDDPM(build_unet(settings.unet), build_scheduler(settings.schedule)).save(tmp)
        params = DiffiqaSettings(tmp, settings.unet, settings.schedule, args.repeats, args.t)
        product = DiffiqaProduct(params, seed=0)
        raw = fr(faces)
        embed = timed(lambda: fr(faces)) / args.faces
        label = timed(lambda: product.compute(Batch(fr, faces, raw, None, 0)), 1) / args.faces
        score = timed(lambda: regressor(faces)) / args.faces
    module = DDPMModule.of(settings.unet, settings.schedule, settings.train_t_max, settings.lr)
    optimiser = torch.optim.Adam(module.parameters(), lr=settings.lr)
    size = settings.unet.sample_size
    batch = torch.rand(settings.batch_size, 3, size, size) * 2 - 1

    def steps() -> None:
        for _ in range(args.train_steps):
            optimiser.zero_grad()
            module.loss(batch).backward()
            optimiser.step()

    train = timed(steps, 1)
    params_m = sum(p.numel() for p in module.parameters()) / 1e6
    print(f"ddpm={args.preset} ({size} px, {params_m:.2f} M parameters), n={args.repeats}, "
          f"t={args.t}, batch {args.faces}, {torch.get_num_threads()} threads")  # fmt: skip
    print(f"embedding (SFace)      {embed * 1e3:9.2f} ms/face")
    print(f"DifFIQA label          {label * 1e3:9.2f} ms/face  ({label / embed:.0f}x an embedding)")
    print(f"DifFIQA(R) regressor   {score * 1e3:9.2f} ms/face  (label/regressor: "
          f"{label / score:.0f}x; seed, RTX 3090: 1074 / 1.24 = 866x)")  # fmt: skip
    print(f"DDPM training          {args.train_steps * settings.batch_size / train:9.1f} images/s "
          f"(batch {settings.batch_size}); {settings.max_steps} steps take "
          f"{settings.max_steps * train / args.train_steps / 60:.1f} min")  # fmt: skip


if __name__ == "__main__":
    main()
