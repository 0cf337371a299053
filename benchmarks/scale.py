"""fiqa at MS1M size: each stage's wall time, peak RSS and growth between two dataset sizes.

For each ``--rows`` size, in ``--work/<rows>/``:

1. **Build** (not a stage): an insightface RecordIO (``train.rec`` / ``.idx`` / ``property``, the
   MS1MV2 format) of N distinct 112x112 JPEGs in K identities (N // K or N // K + 1 each). Each
   image is a real aligned face (LFW faces from ``../shared/data/faces/lfw_dev`` aligned once by
   fiqa's YuNet + ArcFace alignment, or the scikit-image astronaut with jittered landmarks when
   that folder is absent) with its own sub-pixel shift, brightness and noise, re-encoded as JPEG:
   decoding is real work. ``write_ms1m`` streams it to disk.
2. **Stages**, each run as a user runs it, ``python -m fiqa.cli.main <stage> ...`` in a child
   process whose own peak RSS is the ``ru_maxrss`` ``os.wait4`` returns:

   - ``prepare``  ``data=ms1m``: index, read, decode and check every record, write the shards.
   - ``embed``    SIMULATED, and marked so in the table: real FR embedding of millions of faces
     is GPU work (``benchmarks/gpu_throughput.py`` measures it). Unit float16 embeddings
     (d = 512, identity centre plus a per-face noise level, so the labels have something to
     rank) are written into SFace's extraction-cache entry of the prepared faces in the
     cache's real format (``key.json`` + ``embedding.npy``), so the label and evaluate stages
     read them as a cache hit, exactly as after a GPU extraction.
   - ``label``    target CR-FIQA, also FaceQnet (proxy references: decodes every face), SDD-FIQA
     and ``fused`` (rank mean of FaceQnet and CR-FIQA): the identity-based methods, from the
     cache. CR-FIQA's nearest negative centre is an N x K product, linear in N for fixed K.
   - ``loader``   one epoch (or ``--loader-faces``) of the train stage's DataLoader
     (``QualityDataModule``: shard reads, JPEG decode, augmentation, ``--workers`` workers).
   - ``evaluate`` the prepared ``val`` split (``prepare.val_max_faces``; pairs by ``eval.pairs``)
     with the label columns and the sharpness baseline, SFace scores from the cache.

Prints one row per stage and size (wall s, peak RSS, faces/s) and, for the first and last size,
the growth of each: time ratio divided by the size ratio (1.0 = linear) and the RSS ratio.
Everything must fit this machine's memory and grow at most linearly.

    python benchmarks/scale.py --rows 100000 1000000 --identities 85742 --work /data/scale \
        --out benchmarks/results/scale.json
    python benchmarks/scale.py --rows 20000 --identities 2000      # a quick look (~2 min)
    python benchmarks/scale.py growth a.json b.json [--from ROWS]  # across runs of one machine
    python benchmarks/scale.py --rows 5800000 --work /data/scale --keep --resume   # continue one

Each size's ``figures.json`` records every step as it ends; ``--resume`` continues an
interrupted size after its last recorded step (kept with ``--keep``, or left by the failure).

Disk: about 2 x 4.4 KB per face (RecordIO + prepared shards) plus 1 KB of embeddings, per size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import skimage.data

from fiqa.core.align import align_face
from fiqa.core.atomic import atomic_path, write_json_atomic
from fiqa.data.detect import YuNetDetector
from fiqa.data.ms1m import write_ms1m

SHARED_FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces" / "lfw_dev"
DIM = 512
COMMON = ["logger=none", "fr=sface", "label.fr_models=[sface]"]  # every stage's run


def aligned_pool(size: int, seed: int) -> tuple[list[np.ndarray], str]:
    """``size`` aligned 112x112 BGR faces and where they come from."""
    detector = YuNetDetector()
    pool: list[np.ndarray] = []
    if SHARED_FACES.is_dir():
        for path in sorted(SHARED_FACES.rglob("*.jpg"))[: size * 2]:
            image = cv2.imread(str(path))
            padded = cv2.copyMakeBorder(image, 70, 70, 70, 70, cv2.BORDER_CONSTANT)  # tight crops
            found = detector.detect(cv2.cvtColor(padded, cv2.COLOR_BGR2RGB))
            if found is not None:
                pool.append(align_face(padded, np.asarray(found.landmarks, np.float64)))
            if len(pool) == size:
                return pool, f"{size} real LFW faces ({SHARED_FACES})"
    rng = np.random.default_rng(seed)
    astronaut = skimage.data.astronaut()
    found = detector.detect(astronaut)
    landmarks = np.asarray(found.landmarks, np.float64)
    for _ in range(size - len(pool)):
        jitter = rng.normal(0.0, 2.0, (5, 2)) + rng.normal(0.0, 3.0, (1, 2))
        pool.append(np.ascontiguousarray(align_face(astronaut, landmarks + jitter)[:, :, ::-1]))
    return pool, f"{size} aligned faces (astronaut; {SHARED_FACES} absent)"


def face_records(n: int, k: int, pool: list[np.ndarray], seed: int) -> Iterator[tuple[int, bytes]]:
    """``n`` distinct JPEGs in ``k`` identities, identity by identity."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(-10, 11, (64, 112, 112, 3), dtype=np.int16)
    per = np.full(k, n // k) + (np.arange(k) < n % k)
    i = 0
    for identity, count in enumerate(per):
        base = pool[identity % len(pool)]
        for _ in range(count):
            shift = np.float32([[1, 0, rng.uniform(-1.5, 1.5)], [0, 1, rng.uniform(-1.5, 1.5)]])
            moved = cv2.warpAffine(base, shift, (112, 112), borderMode=cv2.BORDER_REFLECT)
            pixels = moved.astype(np.int16) + noise[i % 64] + int(rng.integers(-30, 31))
            ok, buf = cv2.imencode(".jpg", np.clip(pixels, 0, 255).astype(np.uint8),
                                   [cv2.IMWRITE_JPEG_QUALITY, 90])  # fmt: skip
            if not ok:
                raise RuntimeError("JPEG encoding failed")
            i += 1
            yield identity, buf.tobytes()


def run_child(command: list[str], log_path: Path) -> tuple[float, float]:
    """Run ``command``; return (wall seconds, its own peak RSS in MB). Exits on failure."""
    start = time.perf_counter()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        sys.exit(f"{' '.join(command[:5])} ... failed with exit code {code}:\n{tail}")
    return wall, usage.ru_maxrss * 1024 / 1e6  # Linux reports KiB


def stage(name: str, root: Path, *overrides: str) -> list[str]:
    """The command line of ``fiqa <name>`` on the run ``root``."""
    return [sys.executable, "-m", "fiqa.cli.main", name, "data=ms1m",
            f"data.root={root / 'raw'}", f"paths.root={root}", *COMMON, *overrides,
            f"hydra.run.dir={root / 'hydra' / name}"]  # fmt: skip


LABEL = [
    "label.target=crfiqa",
    "label.compute=[faceqnet,sddfiqa,fused]",
    "~label.methods.fused.weights",
    "+label.methods.fused.weights={faceqnet:0.5,crfiqa:0.5}",
]


def simulate_embeddings(root: Path, seed: int) -> None:
    """Unit float16 embeddings of the prepared faces in SFace's cache entry (its real format)."""
    from fiqa.config import compose_config
    from fiqa.config.validate import load_settings
    from fiqa.data.face_store import PreparedFaces
    from fiqa.extract import Extractor, FaceSource, FREntry

    settings = load_settings(compose_config(["data=ms1m", f"paths.root={root}", *COMMON]))
    prepared = PreparedFaces(settings.paths.prepared)
    source = FaceSource.from_prepared(prepared)
    extractor = Extractor(settings.paths.cache, settings.extract)
    entry = extractor.cache_entry(FREntry.from_mapping({"name": "sface"}, settings.fr), source)
    entry.open()
    codes = prepared.manifest["identity"].astype("category").cat.codes.to_numpy()
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((codes.max() + 1, DIM), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    with atomic_path(entry.path("embedding")) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(len(codes), DIM))
        for start in range(0, len(codes), 65_536):
            rows = codes[start : start + 65_536]
            spread = rng.uniform(0.4, 1.6, (len(rows), 1)).astype(np.float32) / np.sqrt(DIM)
            emb = centres[rows] + spread * rng.standard_normal((len(rows), DIM), np.float32)
            out[start : start + len(rows)] = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        out.flush()
        del out


def loader_epoch(root: Path, workers: int, limit: int | None) -> None:
    """One epoch (or ``limit`` faces) of the train stage's DataLoader; prints faces/s."""
    from fiqa.core.artifacts import LABELS
    from fiqa.train.datamodule import QualityDataModule

    data = QualityDataModule(root / "data" / "prepared", root / "data" / "labels" / LABELS,
                             batch_size=256, num_workers=workers, seed=0, augment=True,
                             target_scaling="rank")  # fmt: skip
    data.setup()
    start, seen = time.perf_counter(), 0
    for batch in data.train_dataloader():
        seen += len(batch["image"])
        if limit is not None and seen >= limit:
            break
    wall = time.perf_counter() - start
    print(json.dumps({"faces": seen, "seconds": wall}))


def measure(rows: int, args: argparse.Namespace, pool: list[np.ndarray]) -> dict[str, dict]:
    """Build the set of ``rows`` faces and run every stage on it; return their figures."""
    root = args.work / str(rows)
    record = root / "figures.json"  # each step's figures as soon as it ends (--resume)
    if args.resume and record.is_file():
        figures: dict[str, dict] = json.loads(record.read_text())
        print(f"  resumed after {', '.join(figures)} ({record})", flush=True)
    else:
        if root.exists():
            shutil.rmtree(root)
        (root / "logs").mkdir(parents=True)
        figures = {}
    if "build" not in figures:
        start = time.perf_counter()
        write_ms1m(root / "raw", face_records(rows, args.identities, pool, args.seed))
        rec_gb = (root / "raw" / "train.rec").stat().st_size / 1e9
        figures["build"] = {"seconds": time.perf_counter() - start, "rss_mb": None}  # in-process
        write_json_atomic(record, figures)
        print(f"  build     {rows:,} faces, {rec_gb:.2f} GB RecordIO in "
              f"{figures['build']['seconds']:.0f} s", flush=True)  # fmt: skip

    def child(name: str, command: list[str]) -> None:
        if name in figures:
            return
        wall, rss = run_child(command, root / "logs" / f"{name}.log")
        figures[name] = {"seconds": wall, "rss_mb": rss}
        if name == "loader":  # the epoch's own count and time, after start-up (its last line)
            epoch = json.loads((root / "logs" / "loader.log").read_text().strip().splitlines()[-1])
            figures[name].update(epoch_faces=epoch["faces"], epoch_seconds=epoch["seconds"])
        write_json_atomic(record, figures)
        print(f"  {name:<9} {wall:8.1f} s  peak RSS {rss:8.1f} MB  {rows / wall:9.0f} faces/s",
              flush=True)  # fmt: skip

    child("prepare", stage("prepare", root, f"prepare.num_workers={args.workers}"))
    child("embed", [sys.executable, __file__, "embed", str(root), str(args.seed)])
    child("label", stage("label", root, *LABEL))
    loader = [sys.executable, __file__, "loader", str(root), str(args.workers)]
    child("loader", loader + ([str(args.loader_faces)] if args.loader_faces else []))
    epoch = figures["loader"]
    print(f"{'':12}{epoch['epoch_faces']:,} training faces in {epoch['epoch_seconds']:.1f} s "
          f"after start-up: {epoch['epoch_faces'] / epoch['epoch_seconds']:.0f} faces/s",
          flush=True)  # fmt: skip
    child("evaluate", stage("evaluate", root, *LABEL, "eval.fr_models=[sface]",
                            "eval.methods=[faceqnet,crfiqa,sddfiqa,sharpness]"))  # fmt: skip
    summary = json.loads((root / "data" / "prepared" / "summary.json").read_text())
    figures["prepare"]["aligned"] = summary["prepare/aligned"]
    if not args.keep:
        shutil.rmtree(root)
    return figures


def print_growth(results: dict[int, dict[str, dict]]) -> None:
    """Each stage's growth from the smallest to the largest size of ``results``."""
    small, large = min(results), max(results)
    if small == large:
        return
    print(f"growth {small:,} -> {large:,} rows ({large / small:.1f}x): time ratio / size "
          "ratio (1.0 = linear; loader: seconds per face), peak RSS ratio")  # fmt: skip
    for name in results[large]:
        t = results[large][name]["seconds"] / results[small][name]["seconds"] / (large / small)
        if name == "loader":  # its epochs differ in faces (unlabelled faces are left out)
            t = (results[large][name]["epoch_seconds"] / results[large][name]["epoch_faces"]) / (
                results[small][name]["epoch_seconds"] / results[small][name]["epoch_faces"]
            )
        peaks = results[large][name]["rss_mb"], results[small][name]["rss_mb"]
        rss = f"{peaks[0] / peaks[1]:5.2f}" if peaks[0] else "    -"
        print(f"  {name:<9} time {t:5.2f}   RSS {rss}")


def main() -> None:
    """Run the sizes and print the per-stage table and the growth."""
    if len(sys.argv) > 1 and sys.argv[1] == "embed":  # a child of `measure`
        simulate_embeddings(Path(sys.argv[2]), int(sys.argv[3]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "growth":  # growth across earlier --out files
        files, low = sys.argv[2:], 0
        if "--from" in files:  # growth from this size up (e.g. 1 M -> 5.8 M)
            at = files.index("--from")
            low, files = int(files[at + 1]), files[:at] + files[at + 2 :]
        sizes = (json.loads(Path(f).read_text())["sizes"] for f in files)
        print_growth({int(rows): v for file in sizes for rows, v in file.items()
                      if int(rows) >= low})  # fmt: skip
        return
    if len(sys.argv) > 1 and sys.argv[1] == "loader":
        limit = int(sys.argv[4]) if len(sys.argv) > 4 else None
        loader_epoch(Path(sys.argv[2]), int(sys.argv[3]), limit)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--identities", type=int, default=85_742)
    parser.add_argument("--workers", type=int, default=2, help="prepare and DataLoader workers")
    parser.add_argument(
        "--loader-faces",
        type=int,
        default=None,
        help="faces of the DataLoader pass (default: one whole epoch)",
    )
    parser.add_argument("--pool", type=int, default=400, help="distinct real base faces")
    parser.add_argument("--work", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--keep", action="store_true", help="keep each size's folder")
    parser.add_argument("--resume", action="store_true",
                        help="continue a size's interrupted run: the steps its figures.json "
                        "records are not run again (their figures are kept)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="also write the figures (JSON)")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "disabled")
    temporary = args.work is None
    args.work = Path(tempfile.mkdtemp(prefix="fiqa-scale-")) if temporary else args.work
    pool, origin = aligned_pool(args.pool, args.seed)
    print(f"base faces: {origin}; {args.identities:,} identities; {args.workers} workers; "
          f"{os.cpu_count()} CPUs", flush=True)  # fmt: skip
    results = {}
    for rows in args.rows:
        print(f"{rows:,} rows:", flush=True)
        results[rows] = measure(rows, args, pool)
    if temporary:
        shutil.rmtree(args.work, ignore_errors=True)
    print_growth(results)
    record = {"machine": {"cpus": os.cpu_count(), "workers": args.workers},
              "identities": args.identities, "base_faces": origin, "embeddings": "simulated",
              "sizes": {str(k): v for k, v in results.items()}}  # fmt: skip
    print(json.dumps(record))
    if args.out is not None:
        write_json_atomic(args.out, record)


if __name__ == "__main__":
    main()
