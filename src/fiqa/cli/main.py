"""The ``fiqa`` command: pipeline stages (Hydra apps) plus scoring and reporting tools.

fiqa prepare|label|train|evaluate [hydra overrides...]   e.g. fiqa label label=serfiq trainer=cpu
fiqa score --checkpoint models/quality.ckpt faces/ --out scores.csv
fiqa report metrics/eval.json [other/eval.json ...] --out reports/compare
fiqa demo-data --out data/raw
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from fiqa.stages import STAGES

USAGE = __doc__ or ""
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def _expand_inputs(inputs: list[str]) -> list[Path]:
    """Files as given; folders expanded to their image files (recursive, sorted); lists read."""
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            paths.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.suffix.lower() == ".txt":
            lines = path.read_text(encoding="utf-8").splitlines()
            paths.extend(Path(line.strip()) for line in lines if line.strip())
        else:
            paths.append(path)
    return paths


def _score(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="fiqa score", description="Score aligned 112x112 face images with a quality model."
    )
    parser.add_argument("inputs", nargs="+", help="image files, folders, or .txt lists of paths")
    parser.add_argument("--checkpoint", required=True, help="Lightning .ckpt or exported .onnx")
    parser.add_argument("--out", default="scores.csv", help="output .csv or .parquet")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (torch checkpoints)")
    args = parser.parse_args(argv)

    from fiqa.atomic import atomic_path
    from fiqa.train.scoring import QualityScorer

    paths = _expand_inputs(args.inputs)
    if not paths:
        parser.error(f"no image files found in {args.inputs}")
    scorer = QualityScorer.from_path(args.checkpoint, device=args.device)
    table = scorer.score_files(paths, batch_size=args.batch_size)
    out = Path(args.out)
    with atomic_path(out) as tmp:
        if out.suffix == ".parquet":
            table.to_parquet(tmp, index=False)
        else:
            table.to_csv(tmp, index=False)
    n_failed = int(table["failure"].notna().sum())
    logging.getLogger("fiqa").info("scored %d images (%d failed) -> %s", len(table), n_failed, out)
    return 0


def _report(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="fiqa report", description="Compare evaluation outputs (metrics/eval.json files)."
    )
    parser.add_argument("evals", nargs="+", help="eval.json files (one per run or experiment)")
    parser.add_argument("--out", default="reports/compare", help="output stem (.md and .html)")
    args = parser.parse_args(argv)

    from fiqa.eval.report import write_comparison

    md, html = write_comparison([Path(p) for p in args.evals], Path(args.out))
    logging.getLogger("fiqa").info("wrote %s and %s", md, html)
    return 0


def _demo_data(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="fiqa demo-data", description="Build the embedded demo dataset (no network)."
    )
    parser.add_argument("--out", default="data/raw")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--portrait-images", type=int, default=30, help="images per portrait")
    parser.add_argument("--lfw-identities", type=int, default=17, help="LFW-subset identities")
    parser.add_argument("--lfw-images", type=int, default=10, help="images per LFW identity")
    args = parser.parse_args(argv)

    from fiqa.data.demo import build_demo

    summary = build_demo(
        Path(args.out),
        seed=args.seed,
        portrait_images=args.portrait_images,
        lfw_identities=args.lfw_identities,
        lfw_images=args.lfw_images,
    )
    logging.getLogger("fiqa").info("demo data in %s: %s", args.out, summary)
    return 0


TOOLS = {"score": _score, "report": _report, "demo-data": _demo_data}


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``fiqa <command> ...``."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in {"-h", "--help", "help"}:
        sys.stdout.write(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    if command in STAGES:
        from fiqa.cli.hydra_entry import run_hydra_stage

        run_hydra_stage(command, rest)
        return 0
    if command in TOOLS:
        logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
        return TOOLS[command](rest)
    sys.stderr.write(f"fiqa: unknown command {command!r}\n\n{USAGE}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
