"""Training throughput: the Lightning ``Trainer`` fitting ``QualityRegressor`` vs a hand-written
PyTorch loop doing the same work.

Both sides, in one run, get a freshly built model (same seed, ``pretrained=False``: random
weights, no weight files), the same DataLoader (``QualityDataModule.train_dataloader()`` over a
prepared directory of N synthetic faces in a temporary directory: shard reads, PNG decoding,
augmentation), the same AdamW parameter groups (``configure_optimizers``, no scheduler), the same
loss, batch size and number of steps. The hand-written loop is forward, loss, ``zero_grad``,
``backward``, ``step``; Lightning adds its loop, hooks and ``self.log`` calls.

Warm-up steps are excluded from both the same way: the clock starts when the last warm-up step
has finished (after its optimizer step; for Lightning in ``on_train_batch_end``) and stops when
the last measured step has finished, so each figure covers loading and training of the measured
batches only. Each side runs ``--repeats`` times, alternating; the best run counts. The ratio
Lightning / hand-written is the share of the plain loop's throughput Lightning keeps (target
>= 0.9).

    python benchmarks/train_throughput.py [--backbone sface] [--freeze trunk] [--n 256]
        [--batch 32] [--steps 6] [--warmup 2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from fiqa.config.defaults import datamodule_arguments, regressor_arguments
from fiqa.data.preparation import write_prepared
from fiqa.quality.model import QualityRegressor
from fiqa.train.datamodule import QualityDataModule

N_VAL = 8  # the datamodule needs a val split; limit_val_batches=0 never reads it


class StepClock(pl.Callback):
    """Times from the end of step ``warmup`` - 1 to the end of the last step."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end = warmup, 0.0, 0.0

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        now = time.perf_counter()
        if trainer.global_step == self.warmup:
            self.start = now
        self.end = now


def build_model(args: argparse.Namespace) -> QualityRegressor:
    torch.manual_seed(0)
    return QualityRegressor(**regressor_arguments(
        backbone=args.backbone, pretrained=False, freeze=args.freeze, head=args.head,
        scheduler="none"))  # fmt: skip


def run_lightning(args: argparse.Namespace, datamodule: QualityDataModule) -> float:
    clock = StepClock(args.warmup)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=args.warmup + args.steps,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0, callbacks=[clock])  # fmt: skip
    trainer.fit(build_model(args), datamodule=datamodule)
    return clock.end - clock.start


def endless(loader: DataLoader) -> Iterator[dict[str, torch.Tensor]]:
    while True:  # a new epoch, like Lightning, when the loader runs out
        yield from loader


def run_plain(args: argparse.Namespace, datamodule: QualityDataModule) -> float:
    model = build_model(args)
    model.train()  # frozen modules stay in eval mode (QualityRegressor.train)
    optimizer = model.configure_optimizers()  # with scheduler="none": the AdamW alone
    batches = endless(datamodule.train_dataloader())
    start = time.perf_counter()
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            start = time.perf_counter()
        batch = next(batches)
        loss = model.loss_fn(model(batch["image"]), batch["quality"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="sface", help="FR registry name")
    parser.add_argument("--freeze", default="trunk", choices=["none", "trunk", "backbone"])
    parser.add_argument("--head", default="mlp", choices=["linear", "mlp"])
    parser.add_argument("--n", type=int, default=256, help="train faces")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6, help="measured steps")
    parser.add_argument("--warmup", type=int, default=2, help="steps before the clock starts")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    args = parser.parse_args()
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    # Expected here: 0 workers by default, frozen trunk modules kept in eval mode on purpose.
    for message in ("does not have many workers", "module\\(s\\) in eval mode", "LeafSpec"):
        warnings.filterwarnings("ignore", message=f".*{message}")

    rng = np.random.default_rng(0)
    faces = np.stack(
        [
            cv2.GaussianBlur(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8), (0, 0), 1.5)
            for _ in range(args.n + N_VAL)
        ]
    )
    splits = ["train"] * args.n + ["val"] * N_VAL
    best = {"lightning": 0.0, "plain": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        prepared = write_prepared(Path(tmp) / "prepared", faces, [str(i % 16) for i in
                                  range(len(faces))], splits)  # fmt: skip
        labels = Path(tmp) / "labels.parquet"
        quality = rng.random(len(faces)).astype(np.float32)
        pd.DataFrame({"sample_id": prepared.manifest["sample_id"], "quality": quality}).to_parquet(
            labels
        )
        datamodule = QualityDataModule(prepared.directory, labels, **datamodule_arguments(
            batch_size=args.batch, num_workers=args.workers))  # fmt: skip
        images = args.steps * args.batch
        for _ in range(args.repeats):
            best["lightning"] = max(best["lightning"], images / run_lightning(args, datamodule))
            best["plain"] = max(best["plain"], images / run_plain(args, datamodule))

    print(f"torch {torch.__version__}, lightning {pl.__version__}, "
          f"{torch.get_num_threads()} threads, {args.backbone} freeze={args.freeze} "
          f"head={args.head}, {args.n} faces, batch {args.batch}, {args.steps} steps after "
          f"{args.warmup} warm-up, {args.workers} workers, best of {args.repeats}")  # fmt: skip
    print(f"Lightning Trainer.fit        {best['lightning']:8.1f} images/s")
    print(f"hand-written PyTorch loop    {best['plain']:8.1f} images/s")
    ratio = best["lightning"] / best["plain"]
    print(f"Lightning / hand-written     {ratio:8.2f}  (target >= 0.9)")


if __name__ == "__main__":
    main()
