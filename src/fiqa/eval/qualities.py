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

Quality checkpoints whose frozen part is a pretrained FR network (``fiqa.quality.trunk``: the
trained model's ``quality.ckpt`` beside its ONNX file, ``eval.quality_models`` entries given as
``.ckpt``) are scored from one pass of that network per face, all of them together, as
extraction products cached in the FR model's cache entry; a checkpoint whose frozen tensors
differ from the network's is scored from its own file, as every other model is.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch.nn import Module

from fiqa.core.atomic import atomic_path
from fiqa.core.provenance import digest, file_sha256
from fiqa.eval.baselines import SIMPLE_BASELINES, baseline_quality
from fiqa.eval.report import BLIND, LABEL
from fiqa.eval.sets import EvalSet
from fiqa.extract import Extractor, FREntry, Request
from fiqa.label import METHODS, LabelContext, blind_methods
from fiqa.label.compute import method_columns, method_outputs
from fiqa.label.correction import split_column
from fiqa.quality.scoring import QualityScorer
from fiqa.quality.trunk import QualityScore, TrunkSpec, quality_score, shared_trunk

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
        model_path: The trained quality model's file (``paths.models/quality.onnx``), or None
            (no ``model`` method).
        quality_models: ``eval.quality_models``: name -> {path, fr_models?, template?, colour?,
            mean?, std?}.
        label_frs: ``label.fr_models`` (blind methods are computed with their PyTorch models).
        label_settings: Every label method's settings (``label.methods``).
        seed: ``label.seed``.
        fr_defaults: Batch size and flip of FR entries that leave them out (``fr``).
        extractor: The run's extraction settings and loaded FR models.
        cache_dir: Cache of quality-model scores (``paths.cache/quality``).
        model_checkpoint: The trained model's checkpoint (``paths.models/quality.ckpt``): when
            it exists and shares its frozen trunk with its FR network, ``model`` is scored
            from the shared pass instead of ``model_path``; None = always ``model_path``.
    """

    methods: list[str]
    model_path: Path | None
    quality_models: Mapping[str, Mapping[str, Any]]
    label_frs: Mapping[str, FREntry]
    label_settings: Mapping[str, Any]
    seed: int
    fr_defaults: FREntry
    extractor: Extractor
    cache_dir: Path
    model_checkpoint: Path | None = None
    # Checkpoints loaded and checked once per evaluation (method_qualities runs once per set):
    # path -> its shared-pass product, or None when it is scored from its file.
    _products: dict[Path, QualityScore | None] = field(default_factory=dict, init=False,
                                                       repr=False, compare=False)  # fmt: skip

    def checked_product(self, path: Path, spec: TrunkSpec, net: Module) -> QualityScore | None:
        """``fiqa.quality.trunk.quality_score`` of a checkpoint, loaded and checked against the
        FR network ``net`` once per evaluation."""
        if path not in self._products:
            self._products[path] = quality_score(path, spec, net)
        return self._products[path]


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
    shared = shared_trunk_scores(data, sources)
    for method in sources.methods:
        base, _, model = str(method).partition("@")
        if method == "model" and sources.model_path is not None:
            scores = shared.get(method)
            if scores is None:
                scores = cached_scores(data, sources.model_path, {}, sources.cache_dir)
            out[method] = MethodQuality(scores, label_frs)
        elif method in sources.quality_models:
            spec = dict(sources.quality_models[method])
            frs = frozenset(spec.pop("fr_models", []) or [])
            scores = shared.get(method)
            if scores is None:
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
        elif split_column(base)[0] in METHODS:  # a label column, corrected ones included
            why = (f"not a column of the labels table (add {base!r} to label.compute)"
                   if data.label_qualities else "identity-based methods are read from the "
                   "prepared set's labels table, not computed on an external benchmark")  # fmt: skip
            log.warning("eval.methods: %r skipped on %s: %s", method, data.name, why)
        else:
            names = ["model", *sources.quality_models, *SIMPLE_BASELINES, *METHODS]
            raise ValueError(f"eval.methods: unknown method {method!r}; use one of {names}")
    return out


def shared_trunk_scores(data: EvalSet, sources: QualitySources) -> dict[str, np.ndarray]:
    """Scores of the methods whose quality checkpoint shares its frozen part with its FR
    network (``fiqa.quality.trunk``): per FR network one extraction pass for all of them.

    Returns:
        ``{method: (data.n,) float64 scores}``; the methods left out (no checkpoint, another
        frozen part, tensors that differ) are scored from their files by ``cached_scores``.
    """
    groups: dict[str, list[tuple[str, Path, TrunkSpec]]] = {}
    for method, path in _checkpoints(sources).items():
        spec = shared_trunk(path)
        if spec is not None:
            groups.setdefault(spec.network, []).append((method, path, spec))
    out: dict[str, np.ndarray] = {}
    for members in groups.values():
        out |= _network_scores(data, members, sources)
    return out


def _checkpoints(sources: QualitySources) -> dict[str, Path]:
    """``{method: quality checkpoint}`` of the methods that may share a frozen trunk: ``model``
    with its checkpoint, and the ``eval.quality_models`` given as a ``.ckpt``."""
    out: dict[str, Path] = {}
    for method in sources.methods:
        if method == "model" and sources.model_path is not None:
            path = sources.model_checkpoint
        elif method in sources.quality_models:
            path = Path(sources.quality_models[method]["path"])
        else:
            continue
        if path is not None and path.suffix == ".ckpt" and path.is_file():
            out[method] = path
    return out


def _network_scores(
    data: EvalSet, members: list[tuple[str, Path, TrunkSpec]], sources: QualitySources
) -> dict[str, np.ndarray]:
    """Scores of the checkpoints ``members`` (method, path, spec) that share one FR network,
    from one extraction pass over the set's faces; a checkpoint that fails the check of its
    frozen tensors, or a network that cannot be loaded here, is left out (logged)."""
    spec = members[0][2]
    entry = spec.fr_entry(sources.fr_defaults.batch_size)
    try:
        net = sources.extractor.model(entry).net
    except (OSError, ValueError, RuntimeError) as err:  # e.g. a weights path of another machine
        log.warning("eval: the FR network %s (weights %s) of %s cannot be loaded (%s); they are "
                    "scored from their files", spec.backbone, spec.weights,
                    [m for m, _, _ in members], err)  # fmt: skip
        return {}
    products: dict[str, QualityScore] = {}
    names: dict[str, str] = {}  # method -> product name (two methods may name one file)
    for method, path, member in members:
        product = sources.checked_product(path, member, net)
        if product is not None:
            products.setdefault(product.name, product)
            names[method] = product.name
    if not products:
        return {}
    log.info("eval on %s: %s scored from one %s pass (frozen %s)", data.name, sorted(names),
             spec.backbone, sorted({p.part for p in products.values()}))  # fmt: skip
    request = Request(tuple(products.values()))
    outputs = sources.extractor.outputs(entry, data.own_source(), request)
    return {m: np.asarray(outputs[name], np.float64) for m, name in names.items()}


def _blind_qualities(
    data: EvalSet, methods: list[str], sources: QualitySources
) -> dict[str, MethodQuality]:
    """Blind label methods on the set's faces: SER-FIQ / FaceQAN averaged over the PyTorch
    models of ``label.fr_models``, MagFace with its own model (from the extraction cache)."""
    ctx = LabelContext(sources.label_settings, sources.seed)
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
