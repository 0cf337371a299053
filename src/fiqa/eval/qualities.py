"""The quality methods ``evaluate`` compares, computed (or read back) for one evaluation set.

A method is one of (``eval.methods``):

- ``model``: the trained quality model (``paths.models/quality.onnx``);
- a key of ``eval.quality_models``: any other quality model file (a run's ``.ckpt`` / ``.onnx``,
  or a published ONNX quality model with its input convention, e.g. eDifFIQA's);
- a label method: its column of the labels table on the prepared set (``crfiqa``,
  ``faceqnet``, ... and ``<method>@<model>`` columns); on external benchmarks the per-face
  methods are computed directly from the faces (``serfiq``, ``faceqan``; ``magface`` with its
  model), while the identity-based ones (FaceQnet, CR-FIQA, SDD-FIQA, Huo) are skipped.

Each method records the FR models its scores came from (``fr_models``): an EDC cell is
"same-model" when it is evaluated with one of them. Quality-model scores are cached per (model
file, faces) under ``paths.cache/quality``, so adding a method re-computes only that method.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from fiqa.atomic import atomic_path
from fiqa.config import plain_container
from fiqa.eval.sets import EvalSet
from fiqa.extract import Request
from fiqa.extract.configured import FRModels, extract_outputs, fr_entries
from fiqa.label.methods import METHODS, extraction_request
from fiqa.provenance import file_sha256

log = logging.getLogger(__name__)

DIRECT = ("serfiq", "faceqan", "magface")  # per-face label methods computable on any faces
CHUNK = 1024  # faces decoded and scored at a time


@dataclass(frozen=True)
class MethodQuality:
    """Per-face quality of one method on one evaluation set."""

    values: np.ndarray
    fr_models: frozenset[str]  # FR models the scores come from (empty: none)


def method_qualities(cfg: DictConfig, data: EvalSet, models: FRModels) -> dict[str, MethodQuality]:
    """Every method of ``eval.methods`` available on ``data`` (FR models from ``models``).

    Raises:
        ValueError: For an unknown method name or a missing quality-model file.
    """
    label_frs = frozenset(fr_entries(cfg, cfg.label.fr_models, "label.fr_models"))
    extra = dict(cfg.eval.quality_models or {})
    out: dict[str, MethodQuality] = {}
    direct = [m for m in cfg.eval.methods if m in DIRECT and m not in data.label_qualities]
    computed = _direct_qualities(cfg, data, direct, models) if direct else {}
    for method in cfg.eval.methods:
        base, _, model = str(method).partition("@")
        if method == "model":
            path = Path(cfg.paths.models) / "quality.onnx"
            out[method] = MethodQuality(cached_scores(cfg, data, path, {}), label_frs)
        elif method in extra:
            spec = dict(extra[method])
            frs = frozenset(spec.pop("fr_models", []) or [])
            out[method] = MethodQuality(cached_scores(cfg, data, Path(spec.pop("path")), spec), frs)
        elif method in data.label_qualities:
            frs = frozenset([model]) if model else label_frs
            out[method] = MethodQuality(data.label_qualities[method], frs)
        elif method in computed:
            out[method] = computed[method]
        elif base in METHODS:
            log.warning("eval.methods: %r needs identities or labels; skipped on %s",
                        method, data.name)  # fmt: skip
        else:
            names = ["model", *extra, *METHODS]
            raise ValueError(f"eval.methods: unknown method {method!r}; use one of {names}")
    return out


def _direct_qualities(
    cfg: DictConfig, data: EvalSet, methods: list[str], models: FRModels
) -> dict[str, MethodQuality]:
    """SER-FIQ / FaceQAN over the PyTorch models of ``label.fr_models`` (averaged), MagFace with
    its own model, from the extraction cache of these faces."""
    out: dict[str, MethodQuality] = {}
    per_face = [m for m in methods if m != "magface"]
    if per_face:
        request = extraction_request(cfg, per_face)
        scores: dict[str, list[np.ndarray]] = {m: [] for m in per_face}
        used: set[str] = set()
        for name, fr in fr_entries(cfg, cfg.label.fr_models, "label.fr_models").items():
            model = models.get(fr)
            if not model.info.white_box:
                continue
            outputs = extract_outputs(cfg, model, fr, data.source, request)
            used.add(name)
            for m in per_face:
                scores[m].append(np.asarray(outputs[m][data.rows], dtype=np.float64))
        for m, values in scores.items():
            if values:
                out[m] = MethodQuality(np.mean(values, axis=0), frozenset(used))
    if "magface" in methods:
        fr = cfg.label.methods.get("magface", {}).get("model") if cfg.label.methods else None
        if fr is None:
            log.warning("eval.methods: magface needs label.methods.magface.model; skipped")
        else:
            norms = extract_outputs(cfg, models.get(fr), fr, data.source, Request(norm=True))
            out["magface"] = MethodQuality(np.asarray(norms["norm"][data.rows], np.float64),
                                           frozenset([str(fr["name"])]))  # fmt: skip
    return out


def cached_scores(
    cfg: DictConfig, data: EvalSet, path: Path, options: Mapping[str, Any]
) -> np.ndarray:
    """Quality-model scores of ``data``'s faces, cached by (model file hash, faces, options)."""
    from fiqa.train.scoring import QualityScorer  # deferred: pulls in Lightning

    if not path.is_file():
        raise ValueError(f"quality model {path} not found (run the train stage, or fix the path)")
    options = plain_container(options)
    key = _digest([file_sha256(str(path)), data.source.fingerprint, data.rows.tolist(), options])
    cache = Path(cfg.paths.cache) / "quality" / f"{path.stem}-{key}.npy"
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


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
