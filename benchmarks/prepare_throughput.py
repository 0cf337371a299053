"""prepare throughput: bare decode + warp, the per-image FaceAligner work, and the whole stage.

Builds N synthetic ~300x300 JPEGs of a real face (``skimage.data.astronaut()`` crops jittered
in rotation, scale and shift; a few identity folders) in a temporary directory, then measures
in one run:

(a) bare cost: ``read_image`` + ``align_face`` with landmarks detected once per image beforehand
    (outside the timed loop), single process; best of ``--repeats`` passes;
(b) the FaceAligner work in-process, no DataLoader: file read + decode + YuNet detection + align
    + PNG encode; one pass after one untimed warm-up image (the network is built lazily), with
    OpenCV's default thread count and again with one OpenCV thread (b1), as in a worker;
(c) the full ``prepare`` stage (``run_stage("prepare", cfg)``) on the same folder with
    ``prepare.num_workers`` = 0, 1, 2: wall time of the call (source listing, worker spawn,
    shards, manifest) and the stage's own ``prepare/images_per_s`` (from the DataLoader start).

DataLoader workers use one OpenCV thread each (``worker_init``), so the workers are the only
parallelism in (c) with workers; num_workers=0 runs in this process with the default threads.
The spawn start-up of the workers is timed apart: the same DataLoader (PrepareDataset, spawn,
``worker_init``) over one image per worker, so (c) can be read as start-up + steady state.
A CPU probe (a busy loop in one process, then in two at once) shows how much parallel compute
the machine really gives: cores the OS lists can share physical cores or a CPU quota.

Usage:
    python benchmarks/prepare_throughput.py [--n 600] [--identities 6] [--workers 0 1 2]
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import skimage.data
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from fiqa.config.typed import typed
from fiqa.core.align import align_face
from fiqa.core.images import read_image
from fiqa.data.detect import YuNetDetector
from fiqa.data.face_pipeline import PrepareDataset, worker_init
from fiqa.data.preparation import PrepareSettings
from fiqa.data.sources import FileBytes
from fiqa.stages.runner import run_stage

CONF = Path(__file__).resolve().parents[1] / "conf"
FACE_CENTRE = (255.0, 135.0)  # (x, y) of the astronaut's face in the 512x512 image
SIDE = 300


def make_folder_dataset(root: Path, n: int, identities: int, seed: int) -> list[Path]:
    """``n`` jittered astronaut face JPEGs under ``root/id<k>/``; returns the file paths."""
    rng = np.random.default_rng(seed)
    astronaut = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    paths = []
    for i in range(n):
        ident = i % identities
        angle, scale = rng.uniform(-12, 12), rng.uniform(0.85, 1.15)
        shift = rng.uniform(-20, 20, 2)
        m = cv2.getRotationMatrix2D(FACE_CENTRE, angle, scale)
        m[:, 2] += np.array([SIDE / 2, SIDE / 2]) + shift - np.array(FACE_CENTRE)
        img = cv2.warpAffine(astronaut, m, (SIDE, SIDE), borderMode=cv2.BORDER_REFLECT)
        if ident % 2:  # identities differ by mirror and tint, enough for a folder layout
            img = img[:, ::-1]
        tint = 0.8 + 0.4 * np.random.default_rng(ident).random(3)
        img = np.clip(img * tint, 0, 255).astype(np.uint8)
        path = root / f"id{ident}" / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(path)
    return paths


def prepare_config(raw: Path, out_root: Path, workers: int) -> DictConfig:
    """The composed repository config for a prepare run of ``raw`` into ``out_root``."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose(
            "config",
            overrides=[
                "data=folder",
                f"data.root={raw}",
                f"paths.root={out_root}",
                "logger=none",
                f"prepare.num_workers={workers}",
            ],
        )


def time_bare(paths: list[Path], landmarks: list[np.ndarray], repeats: int) -> float:
    """(a) best seconds per pass of read_image + align_face over ``paths``."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for path, points in zip(paths, landmarks, strict=True):
            align_face(read_image(path), points)
        best = min(best, time.perf_counter() - start)
    return best


def time_aligner(raw: Path, paths: list[Path], cfg: DictConfig) -> tuple[float, int]:
    """(b) seconds of one in-process FaceAligner pass over ``paths`` and its failure count."""
    aligner = typed(cfg.prepare, PrepareSettings).aligner()
    rows = [{"path": str(path.relative_to(raw)), "identity": path.parent.name} for path in paths]
    aligner(0, rows[0], paths[0].read_bytes())  # warm-up: builds the YuNet network
    start = time.perf_counter()
    failed = sum(
        aligner(i, row, path.read_bytes()).data is None
        for i, (row, path) in enumerate(zip(rows, paths, strict=True))
    )
    return time.perf_counter() - start, failed


def row(label: str, rate: float, note: str = "") -> None:
    """One table line: label, images/s, ms/image and an optional note."""
    print(f"{label:54s} {rate:8.1f} {1e3 / rate:8.2f}" + (f"   ({note})" if note else ""))


def time_worker_startup(raw: Path, paths: list[Path], cfg: DictConfig, workers: int) -> float:
    """Seconds for the stage's DataLoader with ``workers`` spawned workers to yield one image
    per worker (process start, imports, YuNet build): the fixed cost of a run with workers."""
    aligner = typed(cfg.prepare, PrepareSettings).aligner()
    table = pd.DataFrame({"path": [str(q.relative_to(raw)) for q in paths], "identity": "x"})
    loader = DataLoader(
        PrepareDataset(table, np.arange(workers), FileBytes(raw), aligner),
        batch_size=None,
        num_workers=workers,
        worker_init_fn=worker_init,
        multiprocessing_context="spawn",
    )
    start = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - start


def busy_loop(seconds: float) -> int:
    """Loop iterations done in ``seconds`` of wall time (a CPU-bound unit of work)."""
    end, count = time.perf_counter() + seconds, 0
    while time.perf_counter() < end:
        count += 1
    return count


def parallel_capacity(seconds: float = 1.0) -> float:
    """Work of two concurrent busy processes over the work of one: ~2 with 2 real cores."""
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.map(busy_loop, [0.1, 0.1])  # start both workers before timing
        single = pool.apply(busy_loop, (seconds,))
        both = sum(pool.map(busy_loop, [seconds, seconds]))
    return both / single


def main() -> None:
    """Build the dataset, time (a), (b) and (c), print images/s and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=600, help="number of images")
    parser.add_argument("--identities", type=int, default=6)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--repeats", type=int, default=3, help="passes of (a); best is kept")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        paths = make_folder_dataset(raw, args.n, args.identities, args.seed)
        detector = YuNetDetector()
        found = [(p, detector.detect(read_image(p))) for p in paths]
        with_face = [(p, d.landmarks) for p, d in found if d is not None]
        cores, capacity = len(os.sched_getaffinity(0)), parallel_capacity()
        print(
            f"{args.n} JPEGs {SIDE}x{SIDE} in {args.identities} identities "
            f"({len(with_face)} with a detected face); this machine has {cores} CPU cores "
            f"(OpenCV threads in-process: {cv2.getNumThreads()}); CPU probe: 2 busy processes "
            f"do {capacity:.2f}x the work of 1"
        )

        bare = time_bare([p for p, _ in with_face], [lm for _, lm in with_face], args.repeats)
        bare_rate = len(with_face) / bare
        cfg = prepare_config(raw, Path(tmp) / "run", 0)
        detect_s, detect_failed = time_aligner(raw, paths, cfg)
        detect_rate = args.n / detect_s
        threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        detect1_s, _ = time_aligner(raw, paths, cfg)
        detect1_rate = args.n / detect1_s
        cv2.setNumThreads(threads)  # num_workers=0 runs in this process, as the stage does

        stage = {}
        for workers in args.workers:
            cfg = prepare_config(raw, Path(tmp) / f"run{workers}", workers)
            start = time.perf_counter()
            summary = run_stage("prepare", cfg)
            wall = time.perf_counter() - start
            startup = time_worker_startup(raw, paths, cfg, workers) if workers else 0.0
            stage[workers] = (args.n / wall, summary["prepare/images_per_s"], wall, startup)
        capacity_end = parallel_capacity()  # other load on the machine can change it

    print(f"{'measurement':54s} {'img/s':>8s} {'ms/img':>8s}")
    row("(a) read_image + align_face (given landmarks)", bare_rate)
    row("(b) FaceAligner: read+decode+YuNet+align+PNG", detect_rate, f"{detect_failed} failed")
    row("(b1) the same, 1 OpenCV thread (as in a worker)", detect1_rate)
    for workers, (wall_rate, own_rate, wall, startup) in stage.items():
        row(
            f"(c) prepare stage, num_workers={workers}, wall {wall:.1f} s",
            wall_rate,
            f"stage's own: {own_rate:.1f} img/s"
            + (f"; worker start-up {startup:.1f} s" if workers else ""),
        )
    print(
        f"(b)/(a) throughput: {detect_rate / bare_rate:.3f}x "
        f"(detection + PNG make an image {bare_rate / detect_rate:.1f}x as costly as decode+warp)"
    )
    for workers, (wall_rate, own_rate, _, _) in stage.items():
        print(
            f"(c)/(b) num_workers={workers}: {wall_rate / detect_rate:.2f}x wall, "
            f"{own_rate / detect_rate:.2f}x stage's own; (c)/(b1): {wall_rate / detect1_rate:.2f}x "
            f"wall, {own_rate / detect1_rate:.2f}x own"
        )
    print(
        f"note: {cores} cores listed; CPU probe at start {capacity:.2f}x, at end "
        f"{capacity_end:.2f}x: workers cannot beat (b1) by more, and pay their start-up"
    )


if __name__ == "__main__":
    main()
