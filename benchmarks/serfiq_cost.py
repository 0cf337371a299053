"""SER-FIQ cost: m stochastic last-layer passes vs one plain embedding pass, same model and batch.

What the extraction loop runs for SER-FIQ: the backbone once (``forward_features``), then m
dropout passes of the embedding layer (``serfiq_scores`` over ``forward_head``), against one
plain embedding (``net(x)``). The SER-FIQ README reports +10% for ResNet-100 (24.2 vs 26.8
GFLOPs), because only the last layer repeats. The ratio depends on how large that layer is next to
the backbone, so two architectures are measured (random weights: the cost does not depend on them):

- SFace: a light trunk (~0.6 GMAC) and a 50176 x 128 last layer (6.4 MMAC per pass);
- iResNet-100 (ArcFace): a 12 GMAC trunk and a 25088 x 512 last layer (12.8 MMAC per pass).

    python benchmarks/serfiq_cost.py [--batch 32] [--passes 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import nn

from fiqa.fr.iresnet import IResNet
from fiqa.fr.sface import SFaceNet
from fiqa.label.serfiq import serfiq_scores


def best_of(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(name: str, net: nn.Module, batch: int, passes: int, repeats: int) -> None:
    net.eval()
    x = torch.rand(batch, 3, 112, 112) * 255
    x = x.contiguous(memory_format=torch.channels_last)  # as the extraction loop feeds it
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        net(x[:2])  # warm-up
        embed_s = best_of(lambda: net(x), repeats)
        features_s = best_of(lambda: net.forward_features(x), repeats)
        features = net.forward_features(x)
        heads_s = best_of(
            lambda: serfiq_scores(net.forward_head, features, passes, 0.5, generator), repeats
        )
    serfiq_s = features_s + heads_s
    per_face = 1e3 / batch
    print(f"{name}: batch {batch}, m = {passes}")
    print(f"  one plain embedding pass       {embed_s * per_face:8.2f} ms/face")
    print(f"  SER-FIQ backbone once          {features_s * per_face:8.2f} ms/face")
    print(f"  SER-FIQ {passes} head passes        {heads_s * per_face:8.2f} ms/face")
    print(f"  SER-FIQ / plain embedding      {serfiq_s / embed_s:8.2f}x   (seed: 1.1x on R100)")
    print(f"  m full forward passes instead  {passes * embed_s / serfiq_s:8.1f}x slower")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--passes", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    measure("SFace", SFaceNet(), args.batch, args.passes, args.repeats)
    measure("iResNet-100", IResNet(100), args.batch, args.passes, args.repeats)


if __name__ == "__main__":
    main()
