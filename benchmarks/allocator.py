"""glibc's malloc thresholds (fiqa.cli.allocator) and the CPU cost of an FR forward pass.

Runs SFace on one batch of faces in two fresh processes, one with glibc's default thresholds
(freed activations go back to the kernel and are re-mapped and re-zeroed on the next batch) and
one with the thresholds the ``fiqa`` command and ``train.py`` set; prints the best time per face
of each, their page faults and the ratio.

    python benchmarks/allocator.py [--faces 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from fiqa.cli.allocator import MALLOC_ENV, OPT_OUT


def child(faces: int, repeats: int) -> None:
    """Time the forward passes in this process; print a JSON line."""
    import resource

    import torch

    from fiqa.fr import load_fr_model

    net = load_fr_model("sface").net
    x = torch.rand(faces, 3, 112, 112, generator=torch.Generator().manual_seed(0)) * 255
    with torch.inference_mode():
        net(x)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            net(x)
            best = min(best, time.perf_counter() - start)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print(json.dumps({"ms_per_face": 1000 * best / faces, "faults_per_pass": faults / repeats}))


def measure(env: dict[str, str], faces: int, repeats: int) -> dict[str, float]:
    base = {k: v for k, v in os.environ.items() if k not in (*MALLOC_ENV, OPT_OUT)}
    out = subprocess.run([sys.executable, __file__, "--child", "--faces", str(faces),
                          "--repeats", str(repeats)], env=base | env, capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.faces, args.repeats)
        return
    default = measure({}, args.faces, args.repeats)
    kept = measure(MALLOC_ENV, args.faces, args.repeats)
    for name, row in (("glibc defaults", default), ("fiqa's thresholds", kept)):
        print(f"SFace, batch {args.faces}, {name:18s} {row['ms_per_face']:6.1f} ms per face, "
              f"{row['faults_per_pass']:9.0f} page faults per pass")  # fmt: skip
    print(f"speed-up: {default['ms_per_face'] / kept['ms_per_face']:.2f}x")


if __name__ == "__main__":
    main()
