"""evaluate: EDC curves and pAUC of every quality method, per benchmark and FR model."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from fiqa.atomic import write_json_atomic
from fiqa.eval.edc import EDCCurve, edc_curve, oracle_curve, pair_quality, pauc, random_baseline
from fiqa.eval.figures import PLOT_GRID, plot_edc, sampled_curves
from fiqa.eval.pairs import pair_scores
from fiqa.eval.report import write_eval_markdown
from fiqa.eval.sets import EvalSet, load_eval_set
from fiqa.extract import Request
from fiqa.extract.configured import extract_outputs, fr_entries
from fiqa.fr import load_fr_model
from fiqa.label.methods import METHODS, extraction_request
from fiqa.stages import StageError
from fiqa.tracking import stage_run
from fiqa.train.scoring import QualityScorer

log = logging.getLogger(__name__)

CHUNK = 1024  # faces decoded and scored or embedded at a time


def _chunks(n: int) -> list[np.ndarray]:
    return [np.arange(i, min(i + CHUNK, n)) for i in range(0, n, CHUNK)]


def _method_qualities(
    cfg: DictConfig, data: EvalSet, serfiq: np.ndarray | None
) -> dict[str, np.ndarray]:
    """Per-face quality of every method in ``eval.methods`` (skipping, with a warning, label
    methods that only exist for the prepared set). ``serfiq``: computed on these faces."""
    qualities = {}
    for method in cfg.eval.methods:
        if method == "model":
            scorer = QualityScorer.from_path(Path(cfg.paths.models) / "quality.onnx")
            qualities[method] = np.concatenate(
                [scorer.score(data.faces(c)) for c in _chunks(data.n)]
            )
        elif method in data.label_qualities:
            qualities[method] = data.label_qualities[method]
        elif method == "serfiq" and serfiq is not None:
            qualities[method] = serfiq
        elif method in METHODS:
            log.warning(
                "eval.methods: %r needs the labels of the prepared set; skipped on %s",
                method,
                data.name,
            )
        else:
            raise StageError(
                f"eval.methods: unknown method {method!r}; use model, {', '.join(METHODS)}"
            )
    if not qualities:
        raise StageError(
            f"eval.methods={list(cfg.eval.methods)} leaves no method to evaluate on {data.name}"
        )
    return qualities


def _embed_all(cfg: DictConfig, data: EvalSet) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Embeddings of every ``eval.fr_models`` model (from the extraction cache, which the label
    stage filled for the prepared set) and, when SER-FIQ has no label column here, SER-FIQ over
    ``label.fr_models`` from the same pass."""
    with_serfiq = "serfiq" in cfg.eval.methods and "serfiq" not in data.label_qualities
    serfiq_entries = fr_entries(cfg, cfg.label.fr_models) if with_serfiq else {}
    request = (
        Request(serfiq=extraction_request(cfg, ["serfiq"]).serfiq) if with_serfiq else Request()
    )
    entries = fr_entries(cfg, cfg.eval.fr_models)
    embeddings, serfiq = {}, []
    for name, fr in {**entries, **serfiq_entries}.items():
        wanted = request if name in serfiq_entries else Request()
        out = extract_outputs(cfg, load_fr_model(fr), fr, data.source, wanted)
        emb = np.asarray(out["embedding"][data.rows], dtype=np.float32)  # float16 in the cache
        embeddings[name] = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        if "serfiq" in out:
            serfiq.append(np.asarray(out["serfiq"][data.rows], dtype=np.float64))
    return embeddings, (np.mean(serfiq, axis=0) if serfiq else None)


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
    try:
        data = load_eval_set(cfg)
    except (FileNotFoundError, ValueError) as err:
        raise StageError(f"evaluate: {err}") from err
    pairs = data.pairs
    if not pairs.genuine.any() or pairs.genuine.all():
        raise StageError(
            f"{data.name}: needs both genuine and impostor pairs, got {len(pairs)} pairs"
        )
    embeddings, serfiq = _embed_all(cfg, data)
    qualities = _method_qualities(cfg, data, serfiq)
    limits = [float(x) for x in e.discard_limits]
    results: dict = {data.name: {}}
    summary: dict[str, float] = {f"eval/{data.name}/dropped_images": float(data.n_dropped)}

    with stage_run(cfg, "evaluate") as run_:
        for fr_name in fr_entries(cfg, e.fr_models):
            scores = pair_scores(embeddings[fr_name], pairs)
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
            results[data.name][fr_name] = metrics
            for name, m in metrics.items():
                summary |= {
                    f"eval/{data.name}/{fr_name}/{name}/{k}": float(m[k])
                    for k in m
                    if k.startswith("pauc@")
                }

            stem = f"{data.name}__{fr_name}"
            write_json_atomic(
                Path(cfg.paths.plots) / "edc" / f"{stem}.json", sampled_curves(curves)
            )
            paucs = {name: m[f"pauc@{limits[-1]:g}"] for name, m in metrics.items()}
            title = f"EDC {data.name}, {fr_name}, FMR={e.fmr:g}"
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
