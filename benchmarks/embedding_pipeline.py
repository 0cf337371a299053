"""Embedding pipeline throughput: ``fiqa.extract.extract`` end to end vs the bare forward pass.

Builds, in a temporary directory, a prepared set of N faces (PNG-encoded in shards, like
``prepare`` writes them), then measures in one run:

(a) bare: ``net(x)`` over pre-loaded float tensors in batches (the network alone);
(b) pipeline: ``extract`` with an empty cache: shard reads, PNG decoding, batching, the
    Lightning predict loop, float16 part files and the merge.

The ratio bare / pipeline is the share of the forward pass's speed the pipeline keeps (target
>= 0.8). Faces are smoothed noise; the cost of decoding and of the network does not depend on
what the faces show.

    python benchmarks/embedding_pipeline.py [--n 2048] [--batch 64] [--workers 0]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from fiqa.data.preparation import write_prepared
from fiqa.extract import FaceSource, extract
from fiqa.fr import load_fr_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--model", default="sface")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    faces = np.stack(
        [
            cv2.GaussianBlur(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8), (0, 0), 1.5)
            for _ in range(args.n)
        ]
    )
    model = load_fr_model(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = write_prepared(Path(tmp) / "prepared", faces, ["x"] * args.n)
        source = FaceSource.from_prepared(prepared)

        tensor = torch.from_numpy(faces).permute(0, 3, 1, 2).float()
        with torch.inference_mode():
            model.net(tensor[: args.batch])  # warm-up
            start = time.perf_counter()
            for i in range(0, args.n, args.batch):
                model.net(tensor[i : i + args.batch])
            bare = time.perf_counter() - start

        start = time.perf_counter()
        extract(model, source, cache_root=Path(tmp) / "cache", batch_size=args.batch,
                num_workers=args.workers)  # fmt: skip
        pipeline = time.perf_counter() - start

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.model}, "
          f"{args.n} faces, batch {args.batch}, {args.workers} workers")  # fmt: skip
    print(f"bare forward on loaded tensors  {args.n / bare:8.1f} faces/s")
    print(f"extract (read, decode, predict)  {args.n / pipeline:8.1f} faces/s")
    print(f"pipeline / bare throughput       {bare / pipeline:8.2f}  (target >= 0.8)")


if __name__ == "__main__":
    main()
