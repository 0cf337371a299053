"""CR-FIQA and SDD-FIQA at scale: label time and working memory at two sizes, fixed chunks.

Synthetic unit embeddings (d = 512, float16, memory-mapped from disk as the extraction cache
stores them) in K identities with a Gaussian spread around random identity centres. For N and
10 N samples (same K, same chunk sizes), prints the wall time and the peak memory the label
computation allocates on top of its input (``tracemalloc``, which counts numpy's buffers; the
memory-mapped input itself is page cache, not allocations). The ratio of the two peaks is the
memory growth for 10x more samples (target <= 1.3: no N x N or N x K matrix).

    python benchmarks/label_scale.py [--n 20000] [--identities 10000] [--dim 512]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fiqa.label.crfiqa import crfiqa_scores
from fiqa.label.sddfiqa import sddfiqa_scores


def synthetic_embeddings(path: Path, n: int, k: int, dim: int, seed: int = 0) -> np.ndarray:
    """Write (n, dim) float16 unit rows to ``path`` in blocks; return (memmap, identities)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, dim)).astype(np.float32)
    identities = np.sort(rng.integers(0, k, n))
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, dim))
    for start in range(0, n, 50_000):
        ids = identities[start : start + 50_000]
        block = centres[ids] + 1.5 * rng.standard_normal((len(ids), dim)).astype(np.float32)
        out[start : start + len(ids)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    out.flush()
    return np.load(path, mmap_mode="r"), identities


def measure(fn: Callable[[], np.ndarray]) -> tuple[float, float]:
    """(seconds, peak MB allocated while ``fn`` runs)."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="small size; the large is 10x")
    parser.add_argument("--identities", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=512)
    args = parser.parse_args()
    methods = {
        "CR-FIQA": lambda e, ids: crfiqa_scores(e, ids, form="paper"),
        "SDD-FIQA": lambda e, ids: sddfiqa_scores(e, ids, seed=0),
    }
    results: dict[tuple[str, int], tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (args.n, 10 * args.n):
            emb, ids = synthetic_embeddings(Path(tmp) / f"emb{n}.npy", n, args.identities, args.dim)
            for name, fn in methods.items():
                results[name, n] = measure(lambda fn=fn, emb=emb, ids=ids: fn(emb, ids))
                seconds, peak = results[name, n]
                print(f"{name:9s} N = {n:>9,d}  K = {args.identities:,d}: {seconds:7.2f} s, "
                      f"peak {peak:8.1f} MB allocated")  # fmt: skip
            del emb
    for name in methods:
        small, large = results[name, args.n][1], results[name, 10 * args.n][1]
        print(f"{name:9s} memory 10N / N = {large / small:.2f}  (target <= 1.3)")


if __name__ == "__main__":
    main()
