"""Writing the evaluation matrix: DVC metrics and plots, figures, reports, W&B panels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from fiqa.core.artifacts import EDC_PLOTS, EVAL_METRICS, EVAL_REPORT
from fiqa.core.atomic import write_json_atomic
from fiqa.eval.figures import PLOT_GRID, plot_edc, sampled_curves
from fiqa.eval.matrix import Cell, Matrix
from fiqa.eval.report import write_eval_report

FIGURE_FORMATS = ("png", "svg")


def write_matrix(
    matrix: Matrix, metrics_dir: str | Path, plots_dir: str | Path, reports_dir: str | Path,
    run: Any = None,
) -> None:  # fmt: skip
    """metrics/eval.json, plots/edc/<bench>__<fr>.json, reports/edc_*.png/.svg and
    reports/eval.md/.html; the same figures and tables to the W&B ``run`` when given."""
    figures = [
        _write_cell(cell, matrix, Path(plots_dir), Path(reports_dir), run) for cell in matrix.cells
    ]
    write_json_atomic(Path(metrics_dir) / EVAL_METRICS, matrix.results)
    write_eval_report(matrix.results, Path(reports_dir) / EVAL_REPORT, matrix.limits, figures)
    if run is not None:
        import wandb

        run.log({"eval/matrix": wandb.Table(dataframe=pd.DataFrame(matrix.rows()))})
        run.summary.update(matrix.summary())


def _write_cell(cell: Cell, matrix: Matrix, plots: Path, reports: Path, run: Any) -> str:
    """DVC plot JSON, PNG/SVG figures and W&B panels of one cell; returns the PNG's path
    relative to the reports directory."""
    stem = f"{cell.benchmark}__{cell.fr_model}"
    primary = {method: per_fmr[matrix.fmrs[0]] for method, per_fmr in cell.curves.items()}
    records = sampled_curves(primary)
    write_json_atomic(plots / EDC_PLOTS / f"{stem}.json", records)
    limit = matrix.limits[-1]
    paucs = {name: m[f"pauc@{limit:g}"] for name, m in cell.metrics.items()}
    title = f"EDC {cell.benchmark}, {cell.fr_model}, FMR={matrix.fmrs[0]:g}"
    for fmt in FIGURE_FORMATS:
        plot_edc(primary, paucs, limit, title, reports / f"edc_{stem}.{fmt}")
    if run is not None:
        import wandb

        run.log({
            f"eval/edc/{stem}": wandb.plot.line_series(
                xs=PLOT_GRID.tolist(),
                ys=[[r["fnmr"] for r in records if r["method"] == name] for name in primary],
                keys=list(primary), title=f"EDC {stem}", xname="discard fraction"),
            f"eval/pauc/{stem}": wandb.Table(
                dataframe=pd.DataFrame(cell.metrics).T.reset_index(names="method")),
        })  # fmt: skip
    return f"edc_{stem}.png"
