"""What ``evaluate`` measures on: aligned faces, their comparison pairs, and cached results.

Two kinds: the prepared set's own split (``eval.benchmark.format=prepared``: all pairs of the
selected faces, label-method qualities and embeddings reused from the label stage) and external
verification benchmarks (``bin`` / ``pairs_txt`` / ``folder``, see ``fiqa.data.benchmarks``):
raw photos are detected and aligned like ``prepare`` does; a face that cannot be loaded or
aligned is counted and its pairs are left out.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from fiqa.data.benchmarks import load_benchmark
from fiqa.data.face_pipeline import FaceAligner
from fiqa.data.images import ImageReadError
from fiqa.data.prepared import PreparedFaces
from fiqa.eval.pairs import Pairs, all_pairs
from fiqa.extract import FaceSource

log = logging.getLogger(__name__)

SPLITS = ("val", "train", "all")


@dataclass
class EvalSet:
    """Faces (by row), their pairs, and what earlier stages already computed for them."""

    name: str
    n: int
    pairs: Pairs
    source: FaceSource  # the faces are source rows ``rows`` (FR outputs come from its cache)
    rows: np.ndarray
    label_qualities: dict[str, np.ndarray] = field(default_factory=dict)
    n_dropped: int = 0  # faces that could not be loaded or aligned

    def faces(self, rows: np.ndarray) -> np.ndarray:
        """uint8 aligned RGB faces of rows ``rows`` of this set."""
        return self.source.faces(self.rows[rows])


def load_eval_sets(cfg: DictConfig) -> list[EvalSet]:
    """The evaluation sets of ``eval.benchmark`` and ``eval.benchmarks``, in that order.

    Raises:
        ValueError: When two benchmarks get the same name (set ``name`` on one of them).
    """
    specs = [cfg.eval.benchmark, *cfg.eval.benchmarks]
    sets = [load_eval_set(cfg, spec) for spec in specs]
    names = [s.name for s in sets]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"eval benchmarks named twice: {twice}; give them distinct `name`s")
    return sets


def load_eval_set(cfg: DictConfig, spec: DictConfig | None = None) -> EvalSet:
    """The evaluation set of one benchmark spec (default ``cfg.eval.benchmark``)."""
    spec = cfg.eval.benchmark if spec is None else spec
    if spec.format == "prepared":
        return _prepared(cfg, spec)
    return _external(cfg, spec)


def _prepared(cfg: DictConfig, spec: DictConfig) -> EvalSet:
    if spec.split not in SPLITS:
        raise ValueError(f"eval.benchmark.split={spec.split!r}; choose one of {', '.join(SPLITS)}")
    prepared = PreparedFaces(cfg.paths.prepared)
    manifest = prepared.manifest
    rows = (
        np.arange(len(manifest))
        if spec.split == "all"
        else np.flatnonzero(manifest["split"] == spec.split)
    )
    labels = pd.read_parquet(Path(cfg.paths.labels) / "labels.parquet").set_index("sample_id")
    sample_ids = manifest["sample_id"].to_numpy()[rows]
    methods = [c for c in labels.columns if c not in ("path", "identity", "split", "quality")]
    qualities = {
        m: labels.loc[sample_ids, m].to_numpy(dtype=np.float64)
        for m in methods
        if pd.api.types.is_float_dtype(labels[m])
    }

    return EvalSet(
        name=spec.name or f"{cfg.data.name}_{spec.split}",
        n=len(rows),
        pairs=all_pairs(manifest["identity"].to_numpy()[rows]),
        source=FaceSource.from_prepared(prepared),  # the label stage's cache entry
        rows=rows,
        label_qualities=qualities,
    )


def _external(cfg: DictConfig, spec: DictConfig) -> EvalSet:
    bench = load_benchmark(OmegaConf.to_container(spec, resolve=True))
    p = cfg.prepare
    aligner = FaceAligner(
        p.template, p.face_selection, p.score_threshold, p.pad_ratio, pre_aligned=bench.aligned
    )
    n = len(bench.images)
    w, h = aligner.size
    faces = np.zeros((n, h, w, 3), np.uint8)
    ok = np.zeros(n, bool)
    reasons: dict[str, int] = {}
    for i in tqdm(range(n), desc=f"align {bench.name}", unit="img", mininterval=2):
        try:
            face, result = aligner.align(i, {"path": bench.paths[i]}, bench.images.load(i))
        except ImageReadError as err:
            face, reason = None, err.reason
        else:
            reason = result.reason
        if face is None:
            reasons[reason] = reasons.get(reason, 0) + 1
        else:
            faces[i], ok[i] = face, True
    keep = ok[bench.pairs.a] & ok[bench.pairs.b]
    if reasons:
        log.warning(
            "%s: %d of %d images unusable %s; %d of %d pairs left out",
            bench.name, int((~ok).sum()), n, reasons, int((~keep).sum()), len(keep),
        )  # fmt: skip
    pairs = Pairs(bench.pairs.a[keep], bench.pairs.b[keep], bench.pairs.genuine[keep])
    source = FaceSource(
        name=bench.name,
        n=n,
        template=p.template,
        fingerprint=hashlib.sha256(faces.data).hexdigest(),
        faces=faces.__getitem__,
    )
    return EvalSet(bench.name, n, pairs, source, np.arange(n), n_dropped=int((~ok).sum()))
