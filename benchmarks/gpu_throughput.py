"""GPU throughput of fiqa's heavy steps, faces/s, against the CPU measured in the same run.

Figures (random weights where the cost does not depend on them, the bundled SFace otherwise):

- SFace embedding, network: ``net(x)`` on a batch already on the device (the ceiling);
- SFace embedding, extraction: ``fiqa.extract.extract`` (the Lightning predict loop: row batches
  from a face source, the transfer, float16 embeddings written to a temporary cache);
- SER-FIQ: the label as the extraction loop makes it, per batch: the backbone once, then
  ``label.methods.serfiq``'s m dropout passes of the head (``SerFiqProduct``);
- DifFIQA: ``DiffiqaProduct`` per batch (face and mirror, n forward diffusions to t and DDIM
  reconstructions, 4n + 1 more SFace passes) with a DDPM of the ``--ddpm`` preset (default: the
  paper's U-Net at 112 px on cuda, the ``cpu`` preset on the CPU) and ``label.methods.diffiqa``'s
  n and t;
- training step: ``QualityRegressor`` fitted by a Lightning Trainer with the composed config of
  each size: ``model=regressor`` (SFace, trunk frozen) and ``experiment=ediffiqa_s/m/l``
  (iResNet-18/50/100, full fine-tuning with the consistency term), with the precision and
  gradient clipping of ``trainer=gpu`` on cuda (``trainer=cpu`` on the CPU);
- quality scoring: ``QualityScorer.from_path(...).score`` at batch ``--batch`` (256) of each
  size's checkpoint (torch) and of eDifFIQA(S)'s ONNX export (onnxruntime: its CUDA provider on
  cuda, when the installed onnxruntime has one).

A warm-up call (warm-up steps for training) precedes the clock, ``torch.cuda.synchronize()``
brackets every timed call, and each figure is the best of ``--repeats`` calls (DifFIQA: one
call; training: the steps after the warm-up). The CPU baseline runs the same code with all CPU
threads on ``--cpu-faces`` faces, one call after the warm-up (training: 2 steps of the same batch
size after one); it is left out (``-``) where it would take minutes: DifFIQA, eDifFIQA(M/L).

    python benchmarks/gpu_throughput.py [--device cuda] [--faces 4096] [--batch 256]
        [--cpu-faces 128] [--diffiqa-faces 16] [--sizes regressor s m l] [--train-batch 64]
        [--ddpm paper]
    python benchmarks/gpu_throughput.py --device cpu --faces 16 --batch 8 --train-batch 4 \
        --diffiqa-faces 2 --sizes regressor s      # a smoke run on a laptop
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from fiqa.config.defaults import default_settings
from fiqa.diffusion.model import FaceDDPM, build_scheduler, build_unet
from fiqa.extract import Batch, FaceSource, extract
from fiqa.fr import load_fr_model
from fiqa.label.diffiqa import DiffiqaProduct
from fiqa.label.serfiq import SerFiqProduct
from fiqa.quality.export import export_onnx
from fiqa.quality.model import QualityRegressor
from fiqa.quality.scoring import QualityScorer

SIZES = {"regressor": ("model=regressor", "SFace regressor"),
         "s": ("experiment=ediffiqa_s", "eDifFIQA(S)"),
         "m": ("experiment=ediffiqa_m", "eDifFIQA(M)"),
         "l": ("experiment=ediffiqa_l", "eDifFIQA(L)")}  # fmt: skip
CHEAP_ON_CPU = ("regressor", "s")  # sizes whose CPU baseline takes seconds, not minutes
ONNX_SIZE = "s"  # the eDifFIQA paper's anchor: eDifFIQA(S) 0.36 ms/image on an RTX 3090
WIDTH = 72  # of the figure names


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_rate(run: Callable[[], object], faces: int, device: torch.device, repeats: int) -> float:
    """faces/s of the fastest of ``repeats`` calls of ``run`` (``faces`` each), after one
    warm-up call."""
    run()
    best = math.inf
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        run()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return faces / best


def random_faces(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 112, 112, 3), dtype=np.uint8)


def on_device(faces: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(faces).to(device).permute(0, 3, 1, 2).float()


def row_batches(n: int, batch: int) -> list[tuple[int, int]]:
    return [(start, min(start + batch, n)) for start in range(0, n, batch)]


def time_network(device: torch.device, n: int, batch: int, repeats: int) -> float:
    net = load_fr_model("sface", device=device).net
    x = on_device(random_faces(batch), device)

    @torch.inference_mode()
    def run() -> None:
        for start, end in row_batches(n, batch):
            net(x[: end - start])

    return best_rate(run, n, device, repeats)


def time_extraction(device: torch.device, n: int, batch: int, repeats: int) -> float:
    model = load_fr_model("sface")
    pool = random_faces(batch)
    source = FaceSource("benchmark", n, "arcface_112", "", lambda rows: pool[rows % len(pool)])
    trainer = {"accelerator": "gpu" if device.type == "cuda" else "cpu", "devices": 1}
    calls = iter(range(repeats + 1))
    with tempfile.TemporaryDirectory() as cache:

        def run() -> None:  # a new fingerprint per call: every call misses the cache
            extract(model, replace(source, fingerprint=f"call-{next(calls)}"),
                    cache_root=cache, batch_size=batch, trainer=trainer)  # fmt: skip

        return best_rate(run, n, device, repeats)


def time_serfiq(device: torch.device, n: int, batch: int, repeats: int) -> float:
    net = load_fr_model("sface", device=device).net
    product = SerFiqProduct(default_settings("logger=none").label.methods.serfiq, seed=0)
    x = on_device(random_faces(batch), device)

    @torch.inference_mode()
    def run() -> None:
        for index, (start, end) in enumerate(row_batches(n, batch)):
            features = net.forward_features(x[: end - start])
            raw = net.forward_head(features)
            product.compute(Batch(net, x[: end - start], raw, features, index))

    return best_rate(run, n, device, repeats)


def time_diffiqa(device: torch.device, n: int, preset: str) -> tuple[float, str]:
    """faces/s of one batch of ``n`` (one timed call: a call takes seconds on a GPU) and what
    was measured."""
    settings = default_settings(f"ddpm={preset}", "logger=none")
    unet, schedule = settings.ddpm.unet, settings.ddpm.schedule
    method = settings.label.methods.diffiqa
    net = load_fr_model("sface", device=device).net
    x = on_device(random_faces(n), device)
    with tempfile.TemporaryDirectory() as tmp:
        FaceDDPM(build_unet(unet), build_scheduler(schedule)).save(tmp)
        product = DiffiqaProduct(replace(method, ddpm=tmp), seed=0)

        @torch.inference_mode()
        def run() -> None:
            product.compute(Batch(net, x, net(x), None, 0))

        rate = best_rate(run, n, device, 1)
    return rate, f"ddpm={preset} {unet.sample_size} px, n={method.repeats}, t={method.t}"


class StepClock(pl.Callback):
    """Times from the end of step ``warmup`` (>= 1) to the end of the last step."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end = warmup, 0.0, 0.0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           *args: object) -> None:  # fmt: skip
        synchronize(pl_module.device)
        now = time.perf_counter()
        if trainer.global_step == self.warmup:
            self.start = now
        self.end = now


def build_regressor(size: str, device: torch.device, tmp: Path) -> tuple[QualityRegressor, dict]:
    """The size's ``QualityRegressor`` and the Trainer options of ``trainer=gpu`` (cuda) or
    ``trainer=cpu``. Where the config wants a weights file (eDifFIQA: the consistency term's FR
    model reads it), random weights are written to ``tmp``."""
    trainer_group = "trainer=gpu" if device.type == "cuda" else "trainer=cpu"
    settings = default_settings(SIZES[size][0], trainer_group, "logger=none")
    args = {k: v for k, v in asdict(settings.model).items() if k != "name"}
    if args["pretrained"] and args["backbone_weights"] is None and args["backbone"] != "sface":
        path = tmp / f"{args['backbone']}.pth"
        if not path.is_file():
            spec = {"name": args["backbone"], "options": args["backbone_options"]}
            torch.save(load_fr_model(spec, pretrained=False).net.state_dict(), path)
        args["backbone_weights"] = str(path)
    torch.manual_seed(0)
    options = {k: settings.trainer[k] for k in ("precision", "gradient_clip_val")}
    return QualityRegressor(**args), options


def time_training(model: QualityRegressor, options: dict, device: torch.device, batch: int,
                  warmup: int, steps: int) -> float:  # fmt: skip
    faces = torch.from_numpy(random_faces(batch)).permute(0, 3, 1, 2).float()
    quality = torch.rand(batch)
    samples = [{"image": faces[i % batch], "quality": quality[i % batch],
                "sample_id": torch.tensor(i)} for i in range(batch * (warmup + steps))]  # fmt: skip
    clock = StepClock(warmup)
    trainer = pl.Trainer(accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
                         max_steps=warmup + steps, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, callbacks=[clock], **options)  # fmt: skip
    trainer.fit(model, train_dataloaders=DataLoader(samples, batch_size=batch))
    return steps * batch / (clock.end - clock.start)


def save_checkpoint(model: QualityRegressor, path: Path) -> None:
    """The fields ``load_from_checkpoint`` reads (the weights alone, no optimizer state)."""
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                "pytorch-lightning_version": pl.__version__}, path)  # fmt: skip


def time_scoring(path: Path, device: torch.device, n: int, batch: int, repeats: int) -> float:
    scorer = QualityScorer.from_path(path, device=str(device))
    faces = random_faces(n)
    return best_rate(lambda: scorer.score(faces, batch), n, device, repeats)


def print_figure(name: str, rate: float, cpu_rate: float | None) -> None:
    cpu = f"{cpu_rate:10.1f}" if cpu_rate else f"{'-':>10}"
    ratio = f"{rate / cpu_rate:8.1f}x" if cpu_rate else f"{'-':>9}"
    print(f"{name:<{WIDTH}} {rate:10.1f} {cpu} {ratio}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (cuda:N) or cpu")
    parser.add_argument("--faces", type=int, default=4096, help="faces per timed call")
    parser.add_argument("--batch", type=int, default=256, help="faces per forward pass")
    parser.add_argument("--cpu-faces", type=int, default=128, help="faces of the CPU baseline")
    parser.add_argument("--diffiqa-faces", type=int, default=16, help="DifFIQA's batch")
    parser.add_argument("--ddpm", help="conf/ddpm preset (default: paper on cuda, cpu on cpu)")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--train-batch", type=int, default=64)
    parser.add_argument("--train-steps", type=int, default=10, help="timed steps")
    parser.add_argument("--train-warmup", type=int, default=3, help="steps before the clock")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if min(args.train_warmup, args.train_steps, args.repeats) < 1:
        parser.error("--train-warmup, --train-steps and --repeats must be >= 1")
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    for message in ("does not have many workers", "module\\(s\\) in eval mode", "LeafSpec",
                    "Couldn't infer the batch indices", "defined a `validation_step`"):  # fmt: skip
        warnings.filterwarnings("ignore", message=f".*{message}")
    warnings.filterwarnings("ignore", category=DeprecationWarning)

    device, cpu = torch.device(args.device), torch.device("cpu")
    baseline = device.type == "cuda"  # on a CPU device the figures are the baseline
    if baseline:
        props = torch.cuda.get_device_properties(device)
        print(f"device: {props.name} ({props.multi_processor_count} SMs, "
              f"{props.total_memory / 2**30:.0f} GiB), torch {torch.__version__}, CUDA "
              f"{torch.version.cuda}, TF32 convolutions {torch.backends.cudnn.allow_tf32}, "
              f"float32 matmul precision {torch.get_float32_matmul_precision()}")  # fmt: skip
    cpu_note = f"; CPU baseline: {args.cpu_faces} faces, one call" if baseline else ""
    print(f"CPU: {os.cpu_count()} cores, torch {torch.get_num_threads()} threads; {args.device}: "
          f"{args.faces} faces per call, best of {args.repeats}{cpu_note}")  # fmt: skip
    print(f"{'figure':<{WIDTH}} {'faces/s':>10} {'CPU':>10} {'vs CPU':>9}")
    cpu_faces, cpu_batch = args.cpu_faces, min(args.batch, args.cpu_faces)

    def both(figure: Callable[[torch.device, int, int, int], float]) -> tuple[float, float | None]:
        rate = figure(device, args.faces, args.batch, args.repeats)
        return rate, figure(cpu, cpu_faces, cpu_batch, 1) if baseline else None

    print_figure(f"SFace embedding, network (batch {args.batch})", *both(time_network))
    print_figure(f"SFace embedding, extraction loop (batch {args.batch})", *both(time_extraction))
    passes = default_settings("logger=none").label.methods.serfiq.passes
    print_figure(f"SER-FIQ label, m={passes} (batch {args.batch})", *both(time_serfiq))
    preset = args.ddpm or ("paper" if device.type == "cuda" else "cpu")
    rate, what = time_diffiqa(device, args.diffiqa_faces, preset)
    print_figure(f"DifFIQA label, {what} (batch {args.diffiqa_faces})", rate, None)

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        for size in args.sizes:
            name, cheap = SIZES[size][1], baseline and size in CHEAP_ON_CPU
            model, options = build_regressor(size, device, tmp)
            steps = (args.train_warmup, args.train_steps)
            rate = time_training(model, options, device, args.train_batch, *steps)
            cpu_rate = None
            if cheap:
                cpu_model, cpu_options = build_regressor(size, cpu, tmp)
                cpu_rate = time_training(cpu_model, cpu_options, cpu, args.train_batch, 1, 2)
            hp = model.hparams
            print_figure(f"train step {name} ({hp.backbone}, freeze={hp.freeze}, batch "
                         f"{args.train_batch}, {options['precision']})", rate, cpu_rate)  # fmt: skip

            checkpoint = tmp / f"{size}.ckpt"
            save_checkpoint(model, checkpoint)
            rate = time_scoring(checkpoint, device, args.faces, args.batch, args.repeats)
            cpu_rate = time_scoring(checkpoint, cpu, cpu_faces, cpu_batch, 1) if cheap else None
            print_figure(f"scoring {name}, torch .ckpt (batch {args.batch})", rate, cpu_rate)
            if size == ONNX_SIZE:
                time_onnx_scoring(model.eval(), tmp, device, args)
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()


def time_onnx_scoring(model: QualityRegressor, tmp: Path, device: torch.device,
                      args: argparse.Namespace) -> None:  # fmt: skip
    """Print the onnxruntime scoring figure of the exported model (its CUDA provider on cuda,
    when the installed onnxruntime has one)."""
    import onnxruntime as ort

    path = Path(export_onnx(model.cpu(), tmp / "model.onnx", dynamo=False)["path"])
    name = f"scoring {SIZES[ONNX_SIZE][1]}, onnxruntime .onnx (batch {args.batch})"
    available = ort.get_available_providers()
    if device.type == "cuda" and "CUDAExecutionProvider" not in available:
        print(f"{name:<{WIDTH}} skipped: onnxruntime has no CUDA provider "
              f"({', '.join(available)})")  # fmt: skip
        return
    rate = time_scoring(path, device, args.faces, args.batch, args.repeats)
    cpu_faces, cpu_batch = args.cpu_faces, min(args.batch, args.cpu_faces)
    cpu_rate = None
    if device.type == "cuda":
        cpu_rate = time_scoring(path, torch.device("cpu"), cpu_faces, cpu_batch, 1)
    print_figure(name, rate, cpu_rate)


if __name__ == "__main__":
    main()
