"""evaluate: EDC curves and pAUC of every quality method, per benchmark and FR model."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from fiqa.atomic import write_json_atomic
from fiqa.data.prepared import PreparedFaces
from fiqa.eval.edc import EDCCurve, edc_curve, oracle_curve, pair_quality, pauc, random_baseline
from fiqa.eval.figures import PLOT_GRID, plot_edc, sampled_curves
from fiqa.eval.pairs import all_pairs, pair_scores
from fiqa.eval.report import write_eval_markdown
from fiqa.fr import load_fr_model
from fiqa.label.embeddings import embed_prepared, load_embeddings
from fiqa.stages import StageError
from fiqa.stages.label import LABELS, fr_config
from fiqa.tracking import stage_run

log = logging.getLogger(__name__)

SCORE_CHUNK = 1024  # faces read from the shards at a time when scoring with the trained model


def _method_qualities(
    cfg: DictConfig, prepared: PreparedFaces, rows: np.ndarray
) -> dict[str, np.ndarray]:
    labels = pd.read_parquet(Path(cfg.paths.labels) / LABELS).set_index("sample_id")
    sample_ids = prepared.manifest["sample_id"].to_numpy()[rows]
    qualities = {}
    for method in cfg.eval.methods:
        if method == "model":
            from fiqa.train.scoring import QualityScorer

            scorer = QualityScorer.from_path(Path(cfg.paths.models) / "quality.onnx")
            chunks = [rows[i : i + SCORE_CHUNK] for i in range(0, len(rows), SCORE_CHUNK)]
            qualities[method] = np.concatenate([scorer.score(prepared.faces(c)) for c in chunks])
        elif method in labels.columns:
            qualities[method] = labels.loc[sample_ids, method].to_numpy(dtype=np.float64)
        else:
            raise StageError(
                f"eval.methods: {method!r} is neither 'model' nor a column of the labels table "
                f"({', '.join(c for c in labels.columns if c not in ('path', 'identity', 'split'))})"
            )
    return qualities


def _embeddings(
    cfg: DictConfig, name: str, prepared: PreparedFaces, rows: np.ndarray
) -> np.ndarray:
    """Reuse the label stage's cached embeddings when present, else embed now."""
    try:
        return load_embeddings(Path(cfg.paths.labels) / "embeddings", name)[rows]
    except FileNotFoundError:
        model = load_fr_model(fr_config(cfg, name))
        return embed_prepared(model, prepared, batch_size=cfg.fr.batch_size)[rows]


def _curve_metrics(curve: EDCCurve, limits: list[float]) -> dict[str, float]:
    out = {f"pauc@{lim:g}": pauc(curve, lim) for lim in limits}
    out |= {f"pauc_raw@{lim:g}": pauc(curve, lim, normalise=False) for lim in limits}
    out |= {
        "fnmr@0": float(curve.fnmr[0]),
        "threshold": curve.threshold,
        "n_genuine": curve.n_genuine,
        "n_impostor": curve.n_impostor,
    }
    return out


def run(cfg: DictConfig) -> dict[str, float]:
    """Write metrics/eval.json, plots/edc/<benchmark>__<fr>.json, reports/ figures and table."""
    e = cfg.eval
    if e.benchmark != "prepared":
        raise StageError(f"eval.benchmark={e.benchmark!r} is not supported yet (use 'prepared')")
    prepared = PreparedFaces(cfg.paths.prepared)
    manifest = prepared.manifest
    rows = (
        np.arange(len(manifest))
        if e.split == "all"
        else np.flatnonzero(manifest["split"] == e.split)
    )
    if len(rows) < 2:
        raise StageError(f"eval.split={e.split!r} selects {len(rows)} faces; need at least 2")
    bench = f"{cfg.data.name}_{e.split}"
    pairs = all_pairs(manifest["identity"].to_numpy()[rows])
    if not pairs.genuine.any() or pairs.genuine.all():
        raise StageError(f"{bench}: needs both genuine and impostor pairs")
    qualities = _method_qualities(cfg, prepared, rows)
    limits = [float(x) for x in e.discard_limits]
    results: dict = {bench: {}}
    summary: dict[str, float] = {}

    with stage_run(cfg, "evaluate") as run_:
        for fr_name in e.fr_models:
            scores = pair_scores(_embeddings(cfg, fr_name, prepared, rows), pairs)
            genuine, impostor = scores[pairs.genuine], scores[~pairs.genuine]
            curves = {
                name: edc_curve(
                    genuine,
                    pair_quality(q[pairs.a], q[pairs.b], how=e.pair_quality)[pairs.genuine],
                    impostor,
                    fmr=e.fmr,
                )
                for name, q in qualities.items()
            }
            curves["random"] = random_baseline(next(iter(curves.values())))
            curves["oracle"] = oracle_curve(genuine, impostor, fmr=e.fmr)
            metrics = {name: _curve_metrics(c, limits) for name, c in curves.items()}
            results[bench][fr_name] = metrics
            for name, m in metrics.items():
                summary |= {
                    f"eval/{bench}/{fr_name}/{name}/{k}": float(m[k])
                    for k in m
                    if k.startswith("pauc@")
                }

            stem = f"{bench}__{fr_name}"
            write_json_atomic(
                Path(cfg.paths.plots) / "edc" / f"{stem}.json", sampled_curves(curves)
            )
            paucs = {name: m[f"pauc@{limits[-1]:g}"] for name, m in metrics.items()}
            title = f"EDC {bench}, {fr_name}, FMR={e.fmr:g}"
            plot_edc(curves, paucs, title, Path(cfg.paths.reports) / f"edc_{stem}.png")
            if run_ is not None:
                _log_wandb(run_, stem, curves, metrics)

        write_json_atomic(Path(cfg.paths.metrics) / "eval.json", results)
        write_eval_markdown(results, Path(cfg.paths.reports) / "eval.md", limits)
        if run_ is not None:
            run_.summary.update(summary)
    log.info("evaluate: %s", json.dumps(results, indent=1))
    return summary


def _log_wandb(run_, stem: str, curves: dict[str, EDCCurve], metrics: dict[str, dict]) -> None:
    import wandb

    records = sampled_curves(curves)
    run_.log(
        {
            f"eval/edc/{stem}": wandb.plot.line_series(
                xs=PLOT_GRID.tolist(),
                ys=[[r[name] for r in records] for name in curves],
                keys=list(curves),
                title=f"EDC {stem}",
                xname="discard fraction",
            ),
            f"eval/pauc/{stem}": wandb.Table(
                dataframe=pd.DataFrame(metrics).T.reset_index(names="method")
            ),
        }
    )
