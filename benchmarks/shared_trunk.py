"""Scoring k quality models that share SFace's frozen trunk: one ONNX file each vs one FR pass.

One run, N synthetic faces in a prepared directory (PNG shards, decoded as ``evaluate`` decodes
them), k regressors (SFace with its weights, ``freeze=trunk``, MLP heads initialised from their own
seeds: the cost does not depend on training) saved as checkpoints and exported to ONNX. Both paths start from a cold
cache (temporary directories) and include loading the models:

- ONNX: ``fiqa.eval.qualities.cached_scores`` of each ONNX file, one after the other (what
  ``evaluate`` does for a quality model given as ONNX): k trunk passes and k decodings per face;
- shared: ``fiqa.eval.qualities.shared_trunk_scores`` of the k checkpoints: each loaded and
  checked against the FR network, then one extraction pass of SFace whose batches feed every
  model's head (``fiqa.quality.trunk``).

Prints both wall times, their ratio, a cache-hit re-run of the shared path (a new evaluation:
the checkpoints are loaded and checked again, the scores read back), and the largest
difference between the two paths' scores. onnxruntime keeps its default thread pool (one
thread per physical core) whatever ``OMP_NUM_THREADS`` says to torch.

    OMP_NUM_THREADS=1 python benchmarks/shared_trunk.py [--n 256] [--k 7] [--batch 64]
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
import pytorch_lightning as pl
import torch

from fiqa.config.defaults import regressor_arguments
from fiqa.core.pairs import all_pairs
from fiqa.data.preparation import write_prepared
from fiqa.eval.qualities import QualitySources, cached_scores, shared_trunk_scores
from fiqa.eval.sets import EvalSet
from fiqa.extract import ExtractionSettings, Extractor, FaceSource, FREntry
from fiqa.quality.export import export_onnx
from fiqa.quality.model import QualityRegressor


def faces(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([cv2.GaussianBlur(rng.integers(0, 256, (112, 112, 3), np.uint8), (0, 0), 2.0)
                     for _ in range(n)])  # fmt: skip


def regressor(directory: Path, seed: int) -> tuple[Path, Path]:
    """A ``freeze=trunk`` SFace regressor with a head initialised from ``seed``: its checkpoint
    (as a Trainer writes it) and ONNX file."""
    pl.seed_everything(seed, verbose=False)
    model = QualityRegressor(**regressor_arguments(freeze="trunk", head_hidden=256))
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.strategy.connect(model)
    ckpt = directory / f"model{seed}.ckpt"
    trainer.save_checkpoint(ckpt, weights_only=True)
    export_onnx(model.eval(), directory / f"model{seed}.onnx", dynamo=False)
    return ckpt, directory / f"model{seed}.onnx"


def sources(root: Path, models: dict[str, Path], batch: int, cache: str) -> QualitySources:
    settings = ExtractionSettings(accelerator="cpu", devices=1, num_nodes=1, strategy="auto",
                                  precision="32-true", num_workers=0, part_rows=8192,
                                  progress=False)  # fmt: skip
    return QualitySources(methods=list(models), model_path=None,
                          quality_models={m: {"path": str(p)} for m, p in models.items()},
                          label_frs={}, label_settings={}, seed=0,
                          fr_defaults=FREntry("sface", None, batch, False, {}),
                          extractor=Extractor(root / cache, settings),
                          cache_dir=root / cache / "quality")  # fmt: skip


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256, help="faces")
    parser.add_argument("--k", type=int, default=7, help="quality models sharing the trunk")
    parser.add_argument("--batch", type=int, default=64, help="faces per SFace pass")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        prepared = write_prepared(root / "prepared", faces(args.n),
                                  [f"id{i % 32}" for i in range(args.n)])  # fmt: skip
        source = FaceSource.from_prepared(prepared)
        rows = np.arange(args.n)
        data = EvalSet("bench", args.n, all_pairs(rows % 32), source, rows)
        files = {f"m{i}": regressor(root, i) for i in range(args.k)}

        def onnx() -> dict[str, np.ndarray]:
            cache = root / "onnx-cache"
            return {m: cached_scores(data, o, {}, cache) for m, (_, o) in files.items()}

        checkpoints = {m: c for m, (c, _) in files.items()}
        shared = sources(root, checkpoints, args.batch, "shared-cache")
        by_onnx, onnx_s = timed(onnx)
        by_trunk, shared_s = timed(lambda: shared_trunk_scores(data, shared))
        again = sources(root, checkpoints, args.batch, "shared-cache")  # a new evaluate run
        _, hit_s = timed(lambda: shared_trunk_scores(data, again))
    assert sorted(by_trunk) == sorted(files), "every model must share the trunk"
    diff = max(float(np.max(np.abs(by_trunk[m] - by_onnx[m]))) for m in files)
    print(f"{args.k} SFace freeze=trunk regressors on {args.n} faces (PNG shards), batch "
          f"{args.batch}, torch threads {torch.get_num_threads()}")  # fmt: skip
    print(f"ONNX files one by one (cold cache):   {onnx_s:6.2f} s")
    print(f"shared trunk, one pass (cold cache):  {shared_s:6.2f} s")
    print(f"speed-up:                             {onnx_s / shared_s:6.2f}x")
    print(f"shared trunk, new run (cache hit):    {hit_s:6.2f} s")
    print(f"max |shared - ONNX| score difference: {diff:.2e}")


if __name__ == "__main__":
    main()
