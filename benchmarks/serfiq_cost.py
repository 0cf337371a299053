"""SER-FIQ cost: m stochastic last-layer passes vs one plain embedding pass, same model and batch.

The SER-FIQ README reports +10% over one embedding for ResNet-100 (24.2 vs 26.8 GFLOPs), because
the dropout passes only repeat the last layer. The relative cost depends on how large that layer
is next to the backbone: SFace's trunk is light (~0.6 GMAC) and its last Linear is 50176 x 128,
so expect a larger ratio here than on ResNet-100.

    python benchmarks/serfiq_cost.py [--batch 64] [--passes 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from fiqa.fr import load_fr_model
from fiqa.label.serfiq import serfiq_scores


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--passes", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    model = load_fr_model("sface")
    faces = np.random.default_rng(0).integers(0, 256, (args.batch, 112, 112, 3), dtype=np.uint8)
    model.embed(faces[:2])  # warm-up

    embed_s = best_of(lambda: model.embed(faces, batch_size=args.batch), args.repeats)
    features = model.features(faces, batch_size=args.batch)
    heads_s = best_of(
        lambda: serfiq_scores(model, features, passes=args.passes, dropout=0.5), args.repeats
    )
    features_s = best_of(lambda: model.features(faces, batch_size=args.batch), args.repeats)
    serfiq_s = features_s + heads_s

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}")
    print(f"one plain embedding pass          {embed_s * 1e3 / args.batch:8.2f} ms/face")
    print(f"SER-FIQ backbone (features once)  {features_s * 1e3 / args.batch:8.2f} ms/face")
    print(f"SER-FIQ {args.passes} head passes            {heads_s * 1e3 / args.batch:8.2f} ms/face")
    print(f"SER-FIQ total / plain embedding   {serfiq_s / embed_s:8.2f}x")
    naive = args.passes * embed_s
    print(
        f"naive (m full forward passes)     {naive / embed_s:8.2f}x  -> speed-up {naive / serfiq_s:.1f}x"
    )


if __name__ == "__main__":
    main()
