"""The ``fiqa`` command: pipeline stages (Hydra apps) plus scoring and reporting tools.

fiqa prepare|ddpm|label|train|evaluate [hydra overrides...]   e.g. fiqa label label=serfiq
fiqa study [hydra overrides...]     every label method's regressor, evaluated blind (conf/study/)
  (-v / --verbose: a config or stage error with its full traceback, as HYDRA_FULL_ERROR=1)
fiqa score --checkpoint models/quality.onnx faces/ --out scores.csv [--mode raw] [--scale 0-100]
fiqa report metrics/eval.json [other/eval.json ...] --out outputs/compare   (or --dvc, --wandb)
fiqa thresholds metrics/eval.json [--method model]       a method's quality thresholds (operating points)
fiqa study-tables studies/<name>/study.json --write docs/study.md README.md   (or --check) the study's tables
fiqa demo-data --out data/raw
fiqa dvc-yaml [--check]                                  write dvc.yaml from the stages' code
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from fiqa.stages import STAGES

USAGE = __doc__ or ""
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def _expand_inputs(inputs: list[str]) -> list[Path]:
    """Files as given; folders expanded to their image files (recursive, sorted); lists read.

    A path that does not exist (a missing list too) is kept as given: it is scored as a
    ``missing`` failure row.
    """
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            paths.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.suffix.lower() == ".txt" and path.is_file():
            lines = path.read_text(encoding="utf-8").splitlines()
            paths.extend(Path(line.strip()) for line in lines if line.strip())
        else:
            paths.append(path)
    return paths


def _score(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="fiqa score",
        description="Score face images with a quality model (.ckpt or .onnx): aligned faces, raw "
        "photos (detected and aligned first) or every face of a prepared directory.",
    )
    parser.add_argument("inputs", nargs="*", help="image files, folders, or .txt lists of paths")
    parser.add_argument("--prepared", help="score every face of this prepared directory")
    parser.add_argument("--checkpoint", required=True, help="Lightning .ckpt or .onnx model")
    parser.add_argument("--out", default="scores.csv", help="output .csv or .parquet")
    parser.add_argument("--mode", default="auto", choices=["auto", "aligned", "raw"],
                        help="aligned faces, raw photos, or auto: aligned when the image has "
                        "the model's input size")  # fmt: skip
    parser.add_argument("--scale", default="raw", choices=["raw", "0-100"],
                        help="raw: `quality` is the model's output, `quality_0_100` its "
                        "calibrated score (when the model has one); 0-100: `quality` is the "
                        "calibrated integer (the training percentile), `quality_raw` the raw")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--template", help="external ONNX model: its alignment template")
    parser.add_argument("--colour", help="external ONNX model: RGB or BGR input")
    parser.add_argument("--mean", type=float, help="external ONNX model: input (x - mean) / std")
    parser.add_argument("--std", type=float, help="external ONNX model: input (x - mean) / std")
    args = parser.parse_args(argv)
    if bool(args.inputs) == bool(args.prepared):
        parser.error("give image inputs or --prepared DIR (one of the two)")

    from fiqa.core.atomic import atomic_path
    from fiqa.quality.scoring import QualityModelError, QualityScorer

    paths = _expand_inputs(args.inputs)
    if args.inputs and not paths:
        parser.error(f"no image files found in {args.inputs}")
    missing = [p for p in paths if not p.exists()]
    if paths and len(missing) == len(paths):  # checked before the model is loaded
        return _score_error(f"no such file or folder: {_listed(missing)}; nothing was scored")
    options = {k: getattr(args, k) for k in ("template", "colour", "mean", "std")}
    try:
        scorer = QualityScorer.from_path(
            args.checkpoint, device=args.device,
            onnx_options={k: v for k, v in options.items() if v is not None},
        )  # fmt: skip
        scorer.check_scale(args.scale)  # before any face is scored
    except (FileNotFoundError, QualityModelError) as err:
        return _score_error(str(err))
    if args.prepared:
        table = scorer.score_prepared(args.prepared, batch_size=args.batch_size)
    else:
        aligner = None if args.mode == "aligned" else _aligner(scorer.template)
        table = scorer.score_files(paths, batch_size=args.batch_size, mode=args.mode,
                                   aligner=aligner)  # fmt: skip
    table = scorer.with_scale(table, args.scale)
    out = Path(args.out)
    with atomic_path(out) as tmp:
        if out.suffix == ".parquet":
            table.to_parquet(tmp, index=False)
        else:
            table.to_csv(tmp, index=False)
    n_failed = int(table["failure"].notna().sum()) if "failure" in table else 0
    absent = f", {len(missing)} of them missing: {_listed(missing)}" if missing else ""
    logging.getLogger("fiqa").info(
        "scored %d images (%d failed%s) -> %s", len(table), n_failed, absent, out
    )
    return 0


def _aligner(template: str) -> Any:
    """How ``prepare`` detects and aligns (``conf/``'s ``prepare`` group), on ``template``."""
    from dataclasses import replace

    from fiqa.config import compose_config
    from fiqa.config.typed import typed
    from fiqa.data.preparation import PrepareSettings

    prepare = typed(compose_config().prepare, PrepareSettings)
    return replace(prepare, template=template).aligner()


def _score_error(message: str) -> int:
    sys.stderr.write(f"fiqa score: {message}\n")
    return 1


def _listed(paths: list[Path], most: int = 5) -> str:
    """``a, b, c`` (the first ``most`` paths, then how many more)."""
    shown = ", ".join(map(str, paths[:most]))
    return shown + (f" and {len(paths) - most} more" if len(paths) > most else "")


def _report(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="fiqa report",
        description="Compare evaluation outputs (metrics/eval.json files) in a local markdown/HTML "
        "report and, with --wandb, in a W&B Report of a run group (needs `wandb login`).",
    )
    parser.add_argument("evals", nargs="*", help="eval.json files (one per run or experiment)")
    parser.add_argument("--dvc", action="store_true",
                        help="compare the workspace and every DVC experiment of this repository "
                        "(dvc exp show) instead of files")  # fmt: skip
    parser.add_argument(
        "--out",
        default="outputs/compare",
        help="output stem (.md and .html; outside the DVC outputs)",
    )
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", help="also save a W&B Report there")
    parser.add_argument("--group", help="W&B run group to compare (the experiment name)")
    parser.add_argument(
        "--metric",
        action="append",
        default=[],
        help="summary metric for the W&B pAUC table, e.g. eval/lfw/sface/model/pauc@0.3 "
        "(repeatable; default: pauc@0.3 of every method in the given eval.json files)",
    )
    args = parser.parse_args(argv)
    if not args.evals and not args.wandb and not args.dvc:
        parser.error("give eval.json files, --dvc, or --wandb ENTITY/PROJECT --group G")
    if args.wandb and not args.group:
        parser.error("--wandb needs --group G (the W&B run group: the experiment name)")

    import json

    from fiqa.eval.report import write_comparison

    log = logging.getLogger("fiqa")
    evals = [Path(p) for p in args.evals]
    if evals:
        md, html = write_comparison(evals, Path(args.out))
        log.info("wrote %s and %s", md, html)
    if args.dvc:
        from fiqa.eval.dvc_experiments import dvc_experiment_results
        from fiqa.eval.report import write_comparison_of

        sources = dvc_experiment_results()
        if not sources:
            parser.error("no DVC experiment with metrics/eval.json here (run dvc exp run first)")
        md, html = write_comparison_of(sources, Path(args.out))
        log.info("wrote %s and %s (%d experiments)", md, html, len(sources))
    if not args.wandb:
        return 0

    from fiqa.eval.wandb_report import (
        ReportSaveError,
        build_report,
        parse_target,
        save_report,
        summary_metrics,
    )

    try:
        entity, project = parse_target(args.wandb)
    except ValueError as err:
        parser.error(str(err))
    metrics = list(args.metric)
    for path in evals if not metrics else []:
        metrics += [m for m in summary_metrics(json.loads(path.read_text())) if m not in metrics]
    if not metrics:
        parser.error(
            "--wandb needs eval.json files or --metric eval/<bench>/<fr>/<method>/pauc@0.3"
        )
    try:
        report = build_report(entity, project, args.group, metrics)
    except ValueError as err:
        parser.error(str(err))
    try:
        url = save_report(report)
    except ReportSaveError as err:
        sys.stderr.write(f"fiqa report: {err}\n")
        return 1
    log.info("saved the W&B report of group %s: %s", args.group, url)
    return 0


def _thresholds(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="fiqa thresholds",
        description="Print a method's operating points from an eval.json: the quality threshold "
        "that discards each share of the faces and the FNMR it leaves, and the lowest one that "
        "reaches the target FNMR (eval.discard_shares, eval.target_fnmr).",
    )
    parser.add_argument("eval_json", type=Path, help="metrics/eval.json of an evaluate run")
    parser.add_argument("--method", default="model", help="an eval.methods row (default: model)")
    args = parser.parse_args(argv)
    import json

    from fiqa.eval.report import thresholds_text

    if not args.eval_json.is_file():
        raise FileNotFoundError(f"{args.eval_json} not found (run `fiqa evaluate` first)")
    try:
        text = thresholds_text(json.loads(args.eval_json.read_text()), args.method)
    except (ValueError, KeyError) as err:  # not an eval.json, or no such method in it
        sys.stderr.write(f"fiqa thresholds: {args.eval_json}: {err}\n")
        return 1
    sys.stdout.write(text)
    return 0


def _study_tables(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="fiqa study-tables",
        description="Put a study's tables and headline (its study.json, written by fiqa study) "
        "into markdown pages, between their marker lines; --check only compares.",
    )
    parser.add_argument("summary", type=Path, help="studies/<name>/study.json")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", type=Path, nargs="+", metavar="PAGE", help="update the pages")
    action.add_argument("--check", type=Path, nargs="+", metavar="PAGE", help="fail if they differ")
    args = parser.parse_args(argv)
    from fiqa.eval.study_summary import refresh_page

    pages = args.write or args.check
    for path in (args.summary, *pages):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found")
    stale = []
    for page in pages:
        try:
            current = refresh_page(args.summary, page, check=args.check is not None)
        except ValueError as err:
            sys.stderr.write(f"fiqa study-tables: {page}: {err}\n")
            return 1
        stale += [] if current else [str(page)]
        logging.getLogger("fiqa").info("%s: %s", page, "current" if current else "updated")
    if args.check and stale:
        sys.stderr.write(f"fiqa study-tables: {', '.join(stale)} differs from {args.summary}; "
                         f"refresh: fiqa study-tables {args.summary} --write {' '.join(stale)}\n")  # fmt: skip
        return 1
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


def _dvc_yaml(argv: list[str]) -> int:
    from fiqa.cli.dvc_yaml import main as dvc_yaml

    return dvc_yaml(argv)


TOOLS = {"score": _score, "report": _report, "thresholds": _thresholds,
         "study-tables": _study_tables, "demo-data": _demo_data, "dvc-yaml": _dvc_yaml}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``fiqa <command> ...``."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in {"-h", "--help", "help"}:
        sys.stdout.write(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command in {"-v", "--verbose"} and rest:  # fiqa -v train ... = fiqa train -v ...
        command, rest = rest[0], [command, *rest[1:]]
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    if command in STAGES:
        from fiqa.cli.hydra_entry import stage_app

        stage_app(command, rest)
        return 0
    if command == "study":
        from fiqa.cli.study import run_study_app

        run_study_app(rest)
        return 0
    if command in TOOLS:
        from fiqa.cli.errors import reported_errors, verbose_errors

        logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
        rest = verbose_errors(rest)
        with reported_errors(f"fiqa {command}", command):
            return TOOLS[command](rest)
    sys.stderr.write(f"fiqa: unknown command {command!r}\n\n{USAGE}")
    return 2


def console() -> int:
    """The ``fiqa`` console script: ``main`` in a process with fiqa's malloc settings
    (``fiqa.cli.allocator``)."""
    from fiqa.cli.allocator import restart_with_malloc_env

    restart_with_malloc_env()
    return main()


if __name__ == "__main__":
    sys.exit(console())
