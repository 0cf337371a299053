"""RecordIO read throughput: ``RecordIOReader`` versus plain seek + read of the same bytes.

Writes, in a temporary directory, N records of ~6 KB random bytes (JPEG-sized; random bytes are
enough for I/O throughput) with ``RecordIOWriter``, plus one plain file holding the same
payloads back to back with precomputed offsets. Then measures, in one run:

(a) ``RecordIOReader.scan()`` (sequential), against plain sequential ``f.seek`` + ``f.read``;
(b) ``RecordIOReader.read(key)`` in a shuffled order, against plain reads in the same order.

Each measurement is the best of ``--repeats`` passes; the files sit in the page cache, so the
figures are the parsing/syscall overhead of the reader, not disk speed.

Usage:
    python benchmarks/recordio_read.py [--n 20000] [--size 6000] [--repeats 5] [--seed 0]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fiqa.data.recordio import RecordIOReader, RecordIOWriter


def best_time(fn: Callable[[], int], repeats: int) -> tuple[float, int]:
    """Fastest wall time of ``repeats`` calls of ``fn`` and the byte count it returned."""
    best, nbytes = float("inf"), 0
    for _ in range(repeats):
        start = time.perf_counter()
        nbytes = fn()
        best = min(best, time.perf_counter() - start)
    return best, nbytes


def main() -> None:
    """Build the files, time the four readers, print records/s, MB/s and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="number of records")
    parser.add_argument("--size", type=int, default=6000, help="mean payload bytes")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    sizes = rng.integers(args.size // 2, args.size * 3 // 2, args.n)
    order = rng.permutation(args.n).tolist()
    with tempfile.TemporaryDirectory() as tmp:
        rec, plain = Path(tmp) / "bench.rec", Path(tmp) / "bench.bin"
        offsets, lengths = [], sizes.tolist()
        with RecordIOWriter(rec) as writer, plain.open("wb") as out:
            for key, size in enumerate(lengths):
                payload = rng.bytes(size)
                writer.write(key, payload)
                offsets.append(out.tell())
                out.write(payload)
        total_mb = sum(lengths) / 1e6
        print(
            f"{args.n} records, {total_mb:.1f} MB payload; .rec {rec.stat().st_size / 1e6:.1f} MB"
        )

        reader = RecordIOReader(rec)

        def rec_scan() -> int:
            return sum(len(p) for _, p in reader.scan())

        def rec_random() -> int:
            return sum(len(reader.read(k)) for k in order)

        def plain_reads(keys: list[int]) -> Callable[[], int]:
            def run() -> int:
                with plain.open("rb") as f:
                    n = 0
                    for k in keys:
                        f.seek(offsets[k])
                        n += len(f.read(lengths[k]))
                    return n

            return run

        results = {
            "(a) RecordIOReader.scan": best_time(rec_scan, args.repeats),
            "(c) plain seek+read, sequential": best_time(
                plain_reads(list(range(args.n))), args.repeats
            ),
            "(b) RecordIOReader.read, shuffled": best_time(rec_random, args.repeats),
            "(c) plain seek+read, shuffled": best_time(plain_reads(order), args.repeats),
        }
        reader.close()

    for name, (seconds, nbytes) in results.items():
        assert nbytes == sum(lengths), name
        print(f"{name:36s} {args.n / seconds:>10,.0f} rec/s {nbytes / 1e6 / seconds:>8,.0f} MB/s")
    times = [seconds for seconds, _ in results.values()]
    print(f"scan / plain sequential:        {times[1] / times[0]:.2f}x the plain throughput")
    print(f"read(key) / plain shuffled:     {times[3] / times[2]:.2f}x the plain throughput")


if __name__ == "__main__":
    main()
