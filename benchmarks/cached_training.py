"""Training on a frozen trunk: the image path vs cached trunk features (``fiqa.train.frozen``).

One run, the same N synthetic faces (a prepared directory in a temporary folder), the same
regressor (SFace with its weights, ``freeze=trunk``, MLP head) and the same number of epochs:

- images: every epoch decodes the faces and runs the trunk (the frozen part) forward;
- cached: the trunk's output for every face and its mirror is extracted once (timed), then the
  embedding layers and the head train on the cached features.

Prints wall times and the speed-up of the cached path, with and without its one-time
extraction (which every regressor trained on the same faces then shares: a study trains one per
label method).

    python benchmarks/cached_training.py [--n 512] [--epochs 3] [--batch 32]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytorch_lightning as pl

from fiqa.config import compose_config
from fiqa.config.defaults import datamodule_arguments, regressor_arguments
from fiqa.config.extraction import extractor
from fiqa.config.validate import load_settings
from fiqa.data.face_store import write_table
from fiqa.data.preparation import write_prepared
from fiqa.extract import FaceSource
from fiqa.quality.model import QualityRegressor
from fiqa.train.datamodule import QualityDataModule
from fiqa.train.frozen import frozen_features


def faces(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([cv2.GaussianBlur(rng.integers(0, 256, (112, 112, 3), np.uint8), (0, 0), 2.0)
                     for _ in range(n)])  # fmt: skip


def fit(root: Path, labels: Path, epochs: int, batch: int, features=None) -> float:
    pl.seed_everything(0, verbose=False)
    model = QualityRegressor(**regressor_arguments(freeze="trunk", scheduler="none"))
    data = QualityDataModule(root / "prepared", labels,
                             **datamodule_arguments(batch_size=batch, augment=True))  # fmt: skip
    data.setup()
    if features is not None:
        data.use_features(features)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=epochs, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0)  # fmt: skip
    start = time.perf_counter()
    trainer.fit(model, datamodule=data)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512, help="train faces")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    logging.disable(logging.INFO)
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        n = args.n + 16  # a small val split the datamodule needs
        splits = ["train"] * args.n + ["val"] * 16
        prepared = write_prepared(root / "prepared", faces(n), [f"id{i % 50}" for i in range(n)],
                                  splits)  # fmt: skip
        labels = root / "labels.parquet"
        table = prepared.manifest[["sample_id", "path", "identity"]]
        write_table(labels, table.assign(quality=np.random.default_rng(1).random(n)))
        images = fit(root, labels, args.epochs, args.batch)
        start = time.perf_counter()
        runner = extractor(load_settings(compose_config([f"paths.root={root}"])))
        cache = frozen_features(regressor_arguments(freeze="trunk"),
                                FaceSource.from_prepared(prepared), runner, args.batch)  # fmt: skip
        extraction = time.perf_counter() - start
        cached = fit(root, labels, args.epochs, args.batch, cache)
    rows = pd.DataFrame({
        "path": ["images", "cached: extraction (once)", "cached: training", "cached: total"],
        "seconds": [images, extraction, cached, extraction + cached],
    })  # fmt: skip
    print(f"SFace freeze=trunk, {args.n} train faces, {args.epochs} epochs, batch {args.batch}")
    print(rows.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    print(f"speed-up, extraction included:  {images / (extraction + cached):.1f}x")
    print(f"speed-up, extraction shared:    {images / cached:.1f}x  (every further regressor)")


if __name__ == "__main__":
    main()
