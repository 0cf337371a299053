"""evaluate: the cross-model EDC matrix, benchmarks x FR models x quality methods.

For every evaluation set (``eval.benchmark`` + ``eval.benchmarks``) and FR model
(``eval.fr_models``): cosine comparison scores of the set's pairs, the EDC of every quality
method (``fiqa.eval.qualities``) and of the random and oracle baselines at ``eval.fmr`` (and
``eval.extra_fmrs``), pAUC at ``eval.discard_limits``. Writes metrics/eval.json (benchmark ->
FR model -> method -> metrics, with ``same_model``), plots/edc/<benchmark>__<fr>.json (DVC
plots), reports/edc_<benchmark>__<fr>.png/.svg and reports/eval.md/.html (one table per FR
model, as the seed's eDifFIQA tables), and the same to W&B.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from fiqa.atomic import write_json_atomic
from fiqa.eval.edc import EDCCurve, edc_curves, oracle_curve, pair_quality, pauc, random_baseline
from fiqa.eval.figures import PLOT_GRID, plot_edc, sampled_curves
from fiqa.eval.pairs import pair_scores
from fiqa.eval.qualities import MethodQuality, method_qualities
from fiqa.eval.report import metric_key, write_eval_report
from fiqa.eval.sets import EvalSet, load_eval_sets
from fiqa.extract import Request, unit_rows
from fiqa.extract.configured import FRModels, extract_outputs, fr_entries
from fiqa.stages import StageError
from fiqa.tracking import stage_run

log = logging.getLogger(__name__)

FIGURE_FORMATS = ("png", "svg")


def _embeddings(cfg: DictConfig, data: EvalSet, fr, models: FRModels) -> np.ndarray:
    """Unit float32 embeddings of ``data``'s faces by one FR model (from the extraction cache)."""
    out = extract_outputs(cfg, models.get(fr), fr, data.source, Request())
    return unit_rows(out["embedding"], data.rows)


def _metrics(curves: dict[float, EDCCurve], limits: list[float], primary: float) -> dict:
    """pAUC (normalised and raw), FNMR(0), threshold and pair counts at every FMR; keys of the
    primary FMR plain, others suffixed ``/fmr=<fmr>`` (``fiqa.eval.report.metric_key``)."""
    out: dict[str, float] = {"fmr": primary}
    for fmr, curve in curves.items():
        at = None if fmr == primary else fmr
        for lim in limits:
            out[metric_key(f"pauc@{lim:g}", at)] = pauc(curve, lim)
            out[metric_key(f"pauc_raw@{lim:g}", at)] = pauc(curve, lim, normalise=False)
        out[metric_key("fnmr@0", at)] = float(curve.fnmr[0])
        out[metric_key("threshold", at)] = curve.threshold
    first = curves[primary]
    return out | {"n_genuine": first.n_genuine, "n_impostor": first.n_impostor}


def _cell_curves(
    qualities: dict[str, MethodQuality], data: EvalSet, scores: np.ndarray, fmrs: list[float],
    how: str,
) -> dict[str, dict[float, EDCCurve]]:  # fmt: skip
    """``{method: {fmr: curve}}`` of every method and both baselines on one FR model's scores."""
    pairs = data.pairs
    genuine, impostor = scores[pairs.genuine], scores[~pairs.genuine]
    curves = {
        name: edc_curves(
            genuine,
            pair_quality(q.values[pairs.a], q.values[pairs.b], how=how)[pairs.genuine],
            impostor,
            fmrs,
        )
        for name, q in qualities.items()
    }
    curves["oracle"] = {fmr: oracle_curve(genuine, impostor, fmr) for fmr in fmrs}
    curves["random"] = {fmr: random_baseline(curves["oracle"][fmr]) for fmr in fmrs}
    return curves


def run(cfg: DictConfig) -> dict[str, float]:
    """Write metrics/eval.json, plots/edc/*.json and reports/ (figures, eval.md, eval.html)."""
    e = cfg.eval
    limits = [float(x) for x in e.discard_limits]
    fmrs = list(dict.fromkeys([float(e.fmr), *map(float, e.extra_fmrs)]))
    try:
        sets = load_eval_sets(cfg)
    except (FileNotFoundError, ValueError) as err:
        raise StageError(f"evaluate: {err}") from err
    frs = fr_entries(cfg, e.fr_models, "eval.fr_models")
    models = FRModels()  # each FR model loaded once for all benchmarks
    results: dict = {}
    summary: dict[str, float] = {}
    figures: list[str] = []
    rows: list[dict] = []
    with stage_run(cfg, "evaluate") as run_:
        for data in sets:
            if not data.pairs.genuine.any() or data.pairs.genuine.all():
                raise StageError(f"{data.name}: needs genuine and impostor pairs, got "
                                 f"{len(data.pairs)} pairs")  # fmt: skip
            try:
                qualities = method_qualities(cfg, data, models)
            except ValueError as err:
                raise StageError(f"evaluate on {data.name}: {err}") from err
            if not qualities:
                raise StageError(f"eval.methods={list(e.methods)} leaves no method on {data.name}")
            summary[f"eval/{data.name}/dropped_images"] = float(data.n_dropped)
            results[data.name] = {}
            for fr_name, fr in frs.items():
                scores = pair_scores(_embeddings(cfg, data, fr, models), data.pairs)
                curves = _cell_curves(qualities, data, scores, fmrs, e.pair_quality)
                cell = {}
                for method, per_fmr in curves.items():
                    cell[method] = _metrics(per_fmr, limits, fmrs[0])
                    if method in qualities:
                        cell[method]["same_model"] = fr_name in qualities[method].fr_models
                    rows.append({"benchmark": data.name, "fr_model": fr_name, "method": method,
                                 **cell[method]})  # fmt: skip
                    summary |= {f"eval/{data.name}/{fr_name}/{method}/pauc@{lim:g}":
                                float(cell[method][f"pauc@{lim:g}"]) for lim in limits}  # fmt: skip
                results[data.name][fr_name] = cell
                primary = {m: c[fmrs[0]] for m, c in curves.items()}
                stem = f"{data.name}__{fr_name}"
                figures.append(_write_curves(cfg, stem, primary, cell, limits, run_))
        write_json_atomic(Path(cfg.paths.metrics) / "eval.json", results)
        write_eval_report(results, Path(cfg.paths.reports) / "eval", limits, figures)
        if run_ is not None:
            import wandb

            run_.log({"eval/matrix": wandb.Table(dataframe=pd.DataFrame(rows))})
            run_.summary.update(summary)
    log.info("evaluate: %d benchmarks x %d FR models -> %s", len(sets), len(frs), cfg.paths.metrics)
    return summary


def _write_curves(cfg: DictConfig, stem: str, curves: dict[str, EDCCurve], cell: dict,
                  limits: list[float], run_) -> str:  # fmt: skip
    """DVC plot JSON, PNG/SVG figures and W&B panels of one (benchmark, FR model) cell; returns
    the PNG's path relative to the reports directory."""
    write_json_atomic(Path(cfg.paths.plots) / "edc" / f"{stem}.json", sampled_curves(curves))
    paucs = {name: m[f"pauc@{limits[-1]:g}"] for name, m in cell.items()}
    title = f"EDC {stem.replace('__', ', ')}, FMR={cfg.eval.fmr:g}"
    for fmt in FIGURE_FORMATS:
        plot_edc(curves, paucs, title, Path(cfg.paths.reports) / f"edc_{stem}.{fmt}")
    if run_ is not None:
        import wandb

        records = sampled_curves(curves)
        run_.log({
            f"eval/edc/{stem}": wandb.plot.line_series(
                xs=PLOT_GRID.tolist(), ys=[[r[name] for r in records] for name in curves],
                keys=list(curves), title=f"EDC {stem}", xname="discard fraction"),
            f"eval/pauc/{stem}": wandb.Table(
                dataframe=pd.DataFrame(cell).T.reset_index(names="method")),
        })  # fmt: skip
    return f"edc_{stem}.png"
