"""The quality methods ``evaluate`` compares, computed (or read back) for one evaluation set.

A method is one of (``eval.methods``):

- ``model``: the trained quality model (``paths.models/quality.onnx``);
- a key of ``eval.quality_models``: any other quality model file (a run's ``.ckpt`` / ``.onnx``,
  or a published ONNX quality model with its input convention, e.g. eDifFIQA's);
- ``detector`` / ``sharpness``: the simple blind baselines (``fiqa.eval.baselines``);
- a label method: its column of the labels table on the prepared set (``crfiqa``,
  ``faceqnet``, ... and ``<method>@<model>`` columns); on external benchmarks the blind methods
  (``fiqa.label.blind_methods``: SER-FIQ, FaceQAN, MagFace) are computed directly from the faces,
  while the identity-based ones (FaceQnet, CR-FIQA, SDD-FIQA, Huo, fused) are skipped.

Every method is either ``blind`` (it scores one face alone: a trained model, a per-image method,
a simple baseline) or a ``label`` row: an identity-based formula applied to the evaluated
identities themselves, which sees the answer; reports show label rows apart and never rank them.

Each method records the FR models its scores came from (``fr_models``): an EDC cell is
"same-model" when it is evaluated with one of them. Quality-model scores are cached per (model
file, faces) under ``paths.cache/quality``, so adding a method re-computes only that method.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fiqa.core.atomic import atomic_path
from fiqa.core.provenance import digest, file_sha256
from fiqa.eval.baselines import SIMPLE_BASELINES, baseline_quality
from fiqa.eval.report import BLIND, LABEL
from fiqa.eval.sets import EvalSet
from fiqa.extract import Extractor, FREntry
from fiqa.label import METHODS, LabelContext, blind_methods
from fiqa.label.compute import method_columns, method_outputs
from fiqa.quality.scoring import QualityScorer

log = logging.getLogger(__name__)

CHUNK = 1024  # faces decoded and scored at a time


@dataclass(frozen=True)
class MethodQuality:
    """Per-face quality of one method on one evaluation set."""

    values: np.ndarray
    fr_models: frozenset[str]  # FR models the scores come from (empty: none)
    kind: str = BLIND  # BLIND, or LABEL: an identity-based formula on the evaluated identities


@dataclass
class QualitySources:
    """Where each method of ``eval.methods`` gets its scores.

    Attributes:
        methods: ``eval.methods``.
        model_path: The trained quality model (``paths.models/quality.onnx``), or None.
        quality_models: ``eval.quality_models``: name -> {path, fr_models?, template?, colour?,
            mean?, std?}.
        label_frs: ``label.fr_models`` (blind methods are computed with their PyTorch models).
        label_params: Every label method's settings (``label.methods``).
        seed: ``label.seed``.
        fr_defaults: Batch size and flip of FR entries that leave them out (``fr``).
        extractor: The run's extraction settings and loaded FR models.
        cache_dir: Cache of quality-model scores (``paths.cache/quality``).
    """

    methods: list[str]
    model_path: Path | None
    quality_models: Mapping[str, Mapping[str, Any]]
    label_frs: Mapping[str, FREntry]
    label_params: Mapping[str, Any]
    seed: int
    fr_defaults: FREntry
    extractor: Extractor
    cache_dir: Path


def method_qualities(data: EvalSet, sources: QualitySources) -> dict[str, MethodQuality]:
    """Every method of ``sources.methods`` available on ``data``.

    Raises:
        ValueError: For an unknown method name or a missing quality-model file.
    """
    label_frs = frozenset(sources.label_frs)
    out: dict[str, MethodQuality] = {}
    blind = blind_methods()
    direct = [m for m in sources.methods if m in blind and m not in data.label_qualities]
    computed = _blind_qualities(data, direct, sources) if direct else {}
    for method in sources.methods:
        base, _, model = str(method).partition("@")
        if method == "model" and sources.model_path is not None:
            out[method] = MethodQuality(cached_scores(data, sources.model_path, {},
                                                      sources.cache_dir), label_frs)  # fmt: skip
        elif method in sources.quality_models:
            spec = dict(sources.quality_models[method])
            frs = frozenset(spec.pop("fr_models", []) or [])
            scores = cached_scores(data, Path(spec.pop("path")), spec, sources.cache_dir)
            out[method] = MethodQuality(scores, frs)
        elif method in SIMPLE_BASELINES:
            values = baseline_quality(method, data.faces, data.n, data.det_scores)
            out[method] = MethodQuality(values, frozenset())
        elif method in data.label_qualities:
            frs = frozenset([model]) if model else label_frs
            kind = BLIND if base in blind else LABEL
            out[method] = MethodQuality(data.label_qualities[method], frs, kind)
        elif method in computed:
            out[method] = computed[method]
        elif base in METHODS:
            why = (f"not a column of the labels table (add {base!r} to label.methods)"
                   if data.label_qualities else "identity-based methods are read from the "
                   "prepared set's labels table, not computed on an external benchmark")  # fmt: skip
            log.warning("eval.methods: %r skipped on %s: %s", method, data.name, why)
        else:
            names = ["model", *sources.quality_models, *SIMPLE_BASELINES, *METHODS]
            raise ValueError(f"eval.methods: unknown method {method!r}; use one of {names}")
    return out


def _blind_qualities(
    data: EvalSet, methods: list[str], sources: QualitySources
) -> dict[str, MethodQuality]:
    """Blind label methods on the set's faces: SER-FIQ / FaceQAN averaged over the PyTorch
    models of ``label.fr_models``, MagFace with its own model (from the extraction cache)."""
    ctx = LabelContext(sources.label_params, sources.seed)
    chosen = [METHODS[m] for m in methods]
    outputs = method_outputs(chosen, sources.label_frs, data.source, ctx, sources.extractor,
                             sources.fr_defaults, every_model=False)  # fmt: skip
    out: dict[str, MethodQuality] = {}
    for method in chosen:
        try:
            columns, used = method_columns(method, ctx, outputs)
        except ValueError as err:
            log.warning("eval.methods: %s skipped on %s: %s", method.name, data.name, err)
            continue
        out[method.name] = MethodQuality(columns[method.name][data.rows], used)
    return out


def cached_scores(
    data: EvalSet, path: Path, options: Mapping[str, Any], cache_dir: Path
) -> np.ndarray:
    """Quality-model scores of ``data``'s faces, cached by (model file hash, faces, options)."""
    if not path.is_file():
        raise ValueError(f"quality model {path} not found (run the train stage, or fix the path)")
    key = digest([file_sha256(str(path)), data.source.fingerprint, data.rows.tolist(), options])
    cache = Path(cache_dir) / f"{path.stem}-{key}.npy"
    if cache.is_file():
        return np.load(cache).astype(np.float64)
    scorer = QualityScorer.from_path(path, onnx_options=options)
    chunks = [data.rows[i : i + CHUNK] for i in range(0, len(data.rows), CHUNK)]
    scores = np.concatenate(
        [scorer.score(data.source.faces(rows), template=data.source.template) for rows in chunks]
        or [np.zeros(0, np.float32)]
    )
    with atomic_path(cache) as tmp, open(tmp, "wb") as fh:
        np.save(fh, scores)
    return scores.astype(np.float64)
