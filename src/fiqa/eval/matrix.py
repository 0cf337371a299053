"""The cross-model EDC matrix: benchmarks x FR models x quality methods (ISO/IEC 29794-1
EDC, as the eDifFIQA paper's tables).

For every evaluation set and FR model: cosine comparison scores of the set's pairs, the EDC of
every quality method and of the random and oracle baselines at each FMR (the threshold fixed
once from all impostors), and pAUC at each discard limit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from fiqa.core.edc import (
    EDCCurve,
    oracle_curve,
    pair_quality,
    pauc,
    quality_curves,
    random_baseline,
)
from fiqa.core.intervals import Bootstrap, bootstrap_pauc
from fiqa.core.operating import operating_points
from fiqa.core.pairs import pair_scores
from fiqa.core.templates import (
    percentile_weights,
    tar_at_far,
    template_features,
    template_pair_scores,
    template_quality,
)
from fiqa.eval.qualities import MethodQuality, QualitySources, method_qualities
from fiqa.eval.report import BASELINE, metric_key
from fiqa.eval.sets import EvalSet, TemplateSetup
from fiqa.extract import Extractor, FREntry, unit_rows


@dataclass
class Cell:
    """One (benchmark, FR model) cell: every method's curves and metrics."""

    benchmark: str
    fr_model: str
    curves: dict[str, dict[float, EDCCurve]]  # method -> fmr -> curve
    metrics: dict[str, dict]  # method -> metric -> value


@dataclass
class Matrix:
    """The evaluation matrix.

    Attributes:
        results: ``{benchmark: {fr_model: {method: metrics}}}`` (metrics/eval.json).
        cells: The cells in evaluation order.
        dropped: Images per benchmark that could not be loaded or aligned.
        fmrs: The FMRs, primary first.
        limits: The discard limits of the pAUCs.
    """

    results: dict = field(default_factory=dict)
    cells: list[Cell] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    fmrs: list[float] = field(default_factory=list)
    limits: list[float] = field(default_factory=list)

    def rows(self) -> list[dict]:
        """One record per (benchmark, FR model, method) with its metrics (the W&B table)."""
        return [{"benchmark": c.benchmark, "fr_model": c.fr_model, "method": m, **metrics}
                for c in self.cells for m, metrics in c.metrics.items()]  # fmt: skip

    def summary(self) -> dict[str, float]:
        """``eval/<benchmark>/dropped_images`` and ``eval/<bench>/<fr>/<method>/pauc@<limit>``."""
        out: dict[str, float] = {}
        for name, dropped in self.dropped.items():
            out[f"eval/{name}/dropped_images"] = float(dropped)
            for cell in (c for c in self.cells if c.benchmark == name):
                for method, metrics in cell.metrics.items():
                    for lim in self.limits:
                        key = f"eval/{name}/{cell.fr_model}/{method}/pauc@{lim:g}"
                        out[key] = float(metrics[f"pauc@{lim:g}"])
        return out


def evaluate_matrix(
    sets: Sequence[EvalSet],
    fr_models: Mapping[str, FREntry],
    sources: QualitySources,
    extractor: Extractor,
    fmrs: Sequence[float],
    limits: Sequence[float],
    how: str = "min",
    discard_shares: Sequence[float] = (0.05, 0.1, 0.2),
    target_fnmr: float = 0.01,
    bootstrap: Bootstrap | None = None,
) -> Matrix:
    """The matrix of ``sets`` x ``fr_models`` x the methods of ``sources`` (+ baselines), with
    each method's operating points (``fiqa.core.operating``) at the primary FMR.

    Raises:
        ValueError: A set without both genuine and impostor pairs, an unknown method, or no
            method available on a set.
    """
    matrix = Matrix(fmrs=list(fmrs), limits=list(limits))
    for data in sets:
        if not data.pairs.genuine.any() or data.pairs.genuine.all():
            raise ValueError(f"{data.name}: needs genuine and impostor pairs, got "
                             f"{len(data.pairs)} pairs")  # fmt: skip
        try:
            qualities = method_qualities(data, sources)
        except ValueError as err:
            raise ValueError(f"evaluate on {data.name}: {err}") from err
        if not qualities:
            raise ValueError(f"eval.methods={sources.methods} leaves no method on {data.name}")
        matrix.dropped[data.name] = data.n_dropped
        matrix.results[data.name] = {}
        setup = data.templates
        pair_q = qualities if setup is None else template_qualities(qualities, setup)
        genuine = data.pairs.genuine
        a, b = data.pairs.a[genuine], data.pairs.b[genuine]  # the FR models share them
        genuine_pq = {m: pair_quality(q.values[a], q.values[b], how) for m, q in pair_q.items()}
        clusters = genuine_clusters(data)
        for fr_name, fr in fr_models.items():
            embeddings = set_embeddings(data, fr, extractor)
            if setup is None:
                scores = pair_scores(embeddings, data.pairs)
            else:
                features = template_features(embeddings, setup.templates)
                scores = template_pair_scores(features, data.pairs)
            curves = cell_curves(pair_q, data, scores, fmrs, how)
            metrics = {}
            for method, per_fmr in curves.items():
                metrics[method] = curve_metrics(per_fmr, limits, fmrs[0])
                if method in qualities:
                    metrics[method]["same_model"] = fr_name in qualities[method].fr_models
                    metrics[method]["kind"] = qualities[method].kind
                    metrics[method] |= operating_points(
                        pair_q[method].values, scores[genuine], genuine_pq[method],
                        per_fmr[fmrs[0]].threshold, discard_shares, target_fnmr)  # fmt: skip
                    if bootstrap is not None and bootstrap.resamples > 0:
                        metrics[method] |= pauc_intervals(scores[genuine], genuine_pq[method],
                                                          clusters, per_fmr[fmrs[0]], limits,
                                                          bootstrap)  # fmt: skip
                else:
                    metrics[method]["kind"] = BASELINE
            if setup is not None:
                template_tars(metrics, qualities, data, setup, embeddings, scores)
            matrix.results[data.name][fr_name] = metrics
            matrix.cells.append(Cell(data.name, fr_name, curves, metrics))
    return matrix


def set_embeddings(data: EvalSet, fr: FREntry, extractor: Extractor) -> np.ndarray:
    """Unit embeddings of the set's faces: from its source's cache entry when that is complete
    (a split of the prepared set the label stage embedded), else from a pass over the set's
    own faces only (a model the labels never used embeds the val split, not the whole set)."""
    if extractor.cached(fr, data.source):
        return unit_rows(extractor.outputs(fr, data.source)["embedding"], data.rows)
    own = extractor.outputs(fr, data.own_source())["embedding"]
    return unit_rows(own, np.arange(len(data.rows)))


def genuine_clusters(data: EvalSet) -> np.ndarray:
    """The cluster of each genuine pair for the bootstrap: the identity of its first face (by
    pair where the set records no identities, e.g. a ``.bin``; by first template on IJB)."""
    first = data.pairs.a[data.pairs.genuine]
    if data.templates is not None:
        return first  # the first template: pairs sharing it share its images
    if data.identities is not None:
        return np.asarray(data.identities)[first]
    return np.arange(len(first))


def pauc_intervals(
    genuine_scores: np.ndarray,
    genuine_pair_quality: np.ndarray,
    clusters: np.ndarray,
    curve: EDCCurve,
    limits: Sequence[float],
    bootstrap: Bootstrap,
) -> dict[str, float]:
    """``pauc@<limit>/lo`` and ``/hi``: the bootstrap interval of one method's pAUC on one cell
    (``fiqa.core.intervals``), the same draws for every method."""
    intervals = bootstrap_pauc(genuine_scores, genuine_pair_quality, clusters, curve, limits,
                               bootstrap.resamples, bootstrap.seed, bootstrap.level)  # fmt: skip
    return {f"pauc@{lim:g}/{side}": bound for lim, (lo, hi) in intervals.items()
            for side, bound in (("lo", lo), ("hi", hi))}  # fmt: skip


def template_qualities(
    qualities: Mapping[str, MethodQuality], setup: TemplateSetup
) -> dict[str, MethodQuality]:
    """Each method's quality per template (``setup.quality`` over its images')."""
    return {name: replace(q, values=template_quality(q.values, setup.templates, setup.quality))
            for name, q in qualities.items()}  # fmt: skip


def template_tars(
    metrics: dict[str, dict],
    qualities: Mapping[str, MethodQuality],
    data: EvalSet,
    setup: TemplateSetup,
    embeddings: np.ndarray,
    scores: np.ndarray,
) -> None:
    """Add ``tar@far=<x>`` (plain templates, every row) and ``tar_qaware@far=<x>`` (templates
    whose images are weighted by the method's quality percentile) to ``metrics``."""
    genuine = data.pairs.genuine
    plain = tar_at_far(scores[genuine], scores[~genuine], setup.fars)
    for method, row in metrics.items():
        row.update({f"tar@far={far:g}": tar for far, tar in plain.items()})
        if method not in qualities:
            continue
        kept = setup.templates.template >= 0
        weights = np.zeros(len(kept))
        weights[kept] = percentile_weights(qualities[method].values[kept])
        features = template_features(embeddings, setup.templates, weights)
        aware = template_pair_scores(features, data.pairs)
        tars = tar_at_far(aware[genuine], aware[~genuine], setup.fars)
        row.update({f"tar_qaware@far={far:g}": tar for far, tar in tars.items()})


def cell_curves(
    qualities: Mapping[str, MethodQuality], data: EvalSet, scores, fmrs: Sequence[float], how: str
) -> dict[str, dict[float, EDCCurve]]:
    """``{method: {fmr: curve}}`` of every method and both baselines on one FR model's scores."""
    pairs = data.pairs
    curves = {
        name: quality_curves(scores, pairs, q.values, fmrs, how) for name, q in qualities.items()
    }
    genuine, impostor = scores[pairs.genuine], scores[~pairs.genuine]
    curves["oracle"] = {fmr: oracle_curve(genuine, impostor, fmr) for fmr in fmrs}
    curves["random"] = {fmr: random_baseline(curves["oracle"][fmr]) for fmr in fmrs}
    return curves


def curve_metrics(
    curves: Mapping[float, EDCCurve], limits: Sequence[float], primary: float
) -> dict:
    """pAUC (normalised and raw), FNMR(0) and the genuine errors it rests on (``n_errors``),
    threshold and pair counts at every FMR; keys of the primary FMR plain, others suffixed
    ``/fmr=<fmr>`` (``fiqa.eval.report.metric_key``)."""
    out: dict[str, float] = {"fmr": primary}
    for fmr, curve in curves.items():
        at = None if fmr == primary else fmr
        for lim in limits:
            out[metric_key(f"pauc@{lim:g}", at)] = pauc(curve, lim)
            out[metric_key(f"pauc_raw@{lim:g}", at)] = pauc(curve, lim, normalise=False)
        out[metric_key("fnmr@0", at)] = float(curve.fnmr[0])
        out[metric_key("n_errors", at)] = round(float(curve.fnmr[0]) * curve.n_genuine)
        out[metric_key("threshold", at)] = curve.threshold
    first = curves[primary]
    return out | {"n_genuine": first.n_genuine, "n_impostor": first.n_impostor}
