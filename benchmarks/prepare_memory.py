"""prepare memory: peak RSS of ``fiqa prepare`` on a small versus a 10x larger MS1M RecordIO.

Writes, in a temporary directory, one insightface RecordIO (``write_ms1m``) per size from
distinct 112x112 JPEGs: a pool of aligned astronaut faces (``skimage.data.astronaut()``
detected once, then aligned with jittered landmarks), each image with its own brightness shift
and pixel noise, 20 images per identity. MS1M images are pre-aligned, so prepare only reads,
decodes, checks the size and writes shards: the run is dominated by the stage's own
bookkeeping, which is what must not grow with the dataset.

Each size runs ``python -m fiqa.cli.main prepare data=ms1m ... prepare.num_workers=0`` in its
own child process; its peak RSS is the ``ru_maxrss`` that ``os.wait4`` returns for that child
alone. A child that only imports the prepare stage gives the fixed baseline (Python, torch,
OpenCV). Target: peak(large) / peak(small) <= 1.3.

Usage:
    python benchmarks/prepare_memory.py [--sizes 2000 20000] [--per-identity 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import skimage.data

from fiqa.core.align import align_face
from fiqa.data.detect import YuNetDetector
from fiqa.data.ms1m import write_ms1m

TARGET = 1.3


def aligned_pool(n_base: int, seed: int) -> list[np.ndarray]:
    """``n_base`` 112x112 BGR faces: the astronaut aligned with jittered landmarks."""
    rng = np.random.default_rng(seed)
    astronaut = skimage.data.astronaut()
    found = YuNetDetector().detect(astronaut)
    if found is None:
        raise RuntimeError("YuNet found no face in skimage.data.astronaut()")
    landmarks = np.asarray(found.landmarks, dtype=np.float64)
    pool = []
    for _ in range(n_base):
        jitter = rng.normal(0.0, 2.0, (5, 2)) + rng.normal(0.0, 3.0, (1, 2))
        face = align_face(astronaut, landmarks + jitter)
        pool.append(np.ascontiguousarray(face[:, :, ::-1]))
    return pool


def face_jpegs(n: int, n_base: int, seed: int) -> list[bytes]:
    """``n`` distinct 112x112 JPEGs: a pool face plus per-image brightness shift and noise."""
    rng = np.random.default_rng(seed)
    pool = [f.astype(np.int16) for f in aligned_pool(n_base, seed)]
    noise = rng.integers(-12, 13, (64, 112, 112, 3), dtype=np.int16)
    shifts = rng.integers(-40, 41, n)
    out = []
    for i in range(n):
        pixels = pool[i % n_base] + noise[(i * 7) % 64] + shifts[i]
        ok, buf = cv2.imencode(".jpg", np.clip(pixels, 0, 255).astype(np.uint8))
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        out.append(buf.tobytes())
    return out


def run_child(command: list[str], cwd: Path, log_path: Path) -> tuple[float, float]:
    """Run ``command``; return (its own peak RSS in MB, wall seconds). Exits on failure."""
    start = time.perf_counter()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's rusage, not a running max
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        sys.exit(f"{' '.join(command[:4])} ... failed with exit code {proc.returncode}:\n{tail}")
    return usage.ru_maxrss * 1024 / 1e6, wall  # Linux reports KiB


def main() -> None:
    """Write the RecordIOs, run prepare on each in a child, print peak RSS, ratio, speed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[2000, 20000], metavar="N")
    parser.add_argument("--per-identity", type=int, default=20, help="images per identity")
    parser.add_argument("--pool", type=int, default=300, help="distinct aligned base faces")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        start = time.perf_counter()
        jpegs = face_jpegs(max(args.sizes), args.pool, args.seed)
        for n in args.sizes:
            labelled = ((i // args.per_identity, jpegs[i]) for i in range(n))
            write_ms1m(tmp / f"ms1m_{n}", labelled)
        print(
            f"wrote RecordIOs of {' and '.join(map(str, args.sizes))} 112x112 JPEGs "
            f"({np.mean([len(j) for j in jpegs]) / 1e3:.1f} KB mean, {args.per_identity} per "
            f"identity) in {time.perf_counter() - start:.1f} s"
        )

        base_mb, _ = run_child(
            [sys.executable, "-c", "import fiqa.cli.main, fiqa.stages.prepare"],
            tmp,
            tmp / "import.log",
        )
        peaks = []
        for n in args.sizes:
            run_root = tmp / f"run_{n}"
            command = [
                sys.executable,
                "-m",
                "fiqa.cli.main",
                "prepare",
                "data=ms1m",
                f"data.root={tmp / f'ms1m_{n}'}",
                f"paths.root={run_root}",
                "logger=none",
                "prepare.num_workers=0",
                "prepare.max_failure_rate=0.5",
                f"hydra.run.dir={run_root / 'hydra'}",
            ]
            peak, wall = run_child(command, tmp, tmp / f"prepare_{n}.log")
            summary = json.loads((run_root / "data" / "prepared" / "summary.json").read_text())
            peaks.append(peak)
            print(
                f"prepare {n:>6d} images: peak RSS {peak:7.1f} MB "
                f"(+{peak - base_mb:6.1f} over imports), "
                f"{summary['prepare/images_per_s']:7.1f} img/s in the stage, "
                f"{n / wall:7.1f} img/s wall ({wall:.1f} s), "
                f"{summary['prepare/aligned']:.0f} aligned"
            )
    ratio = peaks[1] / peaks[0]
    verdict = "meets" if ratio <= TARGET else "MISSES"
    print(f"import-only child (python + torch + OpenCV): peak RSS {base_mb:.1f} MB")
    print(
        f"peak RSS ratio {args.sizes[1]} / {args.sizes[0]} images: {ratio:.3f} "
        f"({verdict} the <= {TARGET} target)"
    )


if __name__ == "__main__":
    main()
