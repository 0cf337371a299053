"""What ``evaluate`` measures on: aligned faces, their comparison pairs, and cached results.

Three kinds: the prepared set's own split (``eval.benchmark.format=prepared``: its pairs by
``eval.pairs``, all of them up to a size; label-method qualities and embeddings reused from the
label stage) and external verification benchmarks (``bin`` / ``pairs_txt`` / ``folder``, see
``fiqa.data.verification``): raw photos are detected and aligned like ``prepare`` does; a face
that cannot be loaded or aligned is counted and its pairs are left out; and IJB-B/C
(``eval.benchmark.format=ijb``, ``fiqa.data.ijb``), whose pairs are between templates of several
images (``fiqa.core.templates``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from fiqa.core.artifacts import LABELS
from fiqa.core.images import ImageReadError
from fiqa.core.pairs import Pairs, PairSampling
from fiqa.core.provenance import digest
from fiqa.core.templates import TEMPLATE_QUALITY, Templates
from fiqa.data.detect import YuNetDetector
from fiqa.data.face_pipeline import FaceAligner
from fiqa.data.face_store import PreparedFaces
from fiqa.data.ijb import aligned_faces, load_ijb
from fiqa.data.verification import load_benchmark
from fiqa.extract import FaceSource
from fiqa.label.table import read_labels

log = logging.getLogger(__name__)

SPLITS = ("val", "train", "all")


@dataclass(frozen=True)
class TemplateSetup:
    """How a template benchmark compares: the images' templates, the rule of a template's
    quality from its images' (``min`` / ``mean`` / ``max``) and the FARs of its TAR."""

    templates: Templates
    quality: str
    fars: tuple[float, ...]


@dataclass
class EvalSet:
    """Faces (by row), their pairs, and what earlier stages already computed for them.

    With ``templates`` set (IJB), the pairs index templates, not faces.
    """

    name: str
    n: int
    pairs: Pairs
    source: FaceSource  # the faces are source rows ``rows`` (FR outputs come from its cache)
    rows: np.ndarray
    label_qualities: dict[str, np.ndarray] = field(default_factory=dict)
    n_dropped: int = 0  # faces that could not be loaded or aligned
    # YuNet's confidence on each face's source photo where it was detected there (NaN where
    # the face came aligned or with given landmarks; an IJB release's own detector score):
    # the detector-confidence baseline.
    det_scores: np.ndarray | None = None
    templates: TemplateSetup | None = None
    identities: np.ndarray | None = None  # per face, where the set records them (intervals)

    def faces(self, rows: np.ndarray) -> np.ndarray:
        """uint8 aligned RGB faces of rows ``rows`` of this set."""
        return self.source.faces(self.rows[rows])

    def own_source(self) -> FaceSource:
        """The set's own faces as an extraction source, in ``rows`` order.

        A prepared split is a subset of the prepared set (the val split a quarter of it): what
        is needed on the split only runs the FR network on its faces (cached as an entry of its
        own); a set that is its whole source (a benchmark) is that source.
        """
        rows = np.asarray(self.rows)
        if np.array_equal(rows, np.arange(self.source.n)):
            return self.source
        return replace(self.source, name=f"{self.source.name} ({self.name})", n=len(rows),
                       fingerprint=digest([self.source.fingerprint, rows.tolist()]),
                       faces=_RowFaces(self.source.faces, rows))  # fmt: skip


@dataclass(frozen=True, eq=False)
class _RowFaces:
    """``rows -> faces`` of the rows ``rows`` of another source (picklable when it is)."""

    faces: Any
    rows: np.ndarray

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        return self.faces(self.rows[rows])


Aligner = Callable[[bool], FaceAligner]  # pre_aligned -> the aligner of external benchmarks


def load_eval_sets(
    specs: Sequence[Mapping[str, Any]],
    *,
    prepared_dir: str | Path,
    labels_dir: str | Path,
    data_name: str,
    aligner: Aligner,
    pairs: PairSampling,
    cache_dir: str | Path,
) -> list[EvalSet]:
    """The evaluation sets of the benchmark specs (``eval.benchmark`` + ``eval.benchmarks``).

    Args:
        specs: Benchmark configs: ``format`` plus its keys (``conf/eval/benchmark/``).
        prepared_dir: The prepared set (``format: prepared``).
        labels_dir: Its labels (the label-method columns of ``format: prepared``); without a
            labels table there, blind methods are computed from the faces and identity-based
            ones are skipped (a study: one labels folder per method, no table of all).
        data_name: Dataset name: the default name ``<data_name>_<split>`` of a prepared split.
        aligner: Builds the face aligner of raw benchmark photos (``prepare``'s settings).
        pairs: The pairs of a prepared split (``eval.pairs``).
        cache_dir: Where an IJB benchmark's aligned faces are cached (``paths.cache``).

    Raises:
        ValueError: When two benchmarks get the same name (set ``name`` on one of them).
    """
    labels = read_labels(labels_dir) if (Path(labels_dir) / LABELS).is_file() else None
    if labels is None and any(spec["format"] == "prepared" for spec in specs):
        log.info("evaluate: no labels table in %s: no label columns on the prepared set",
                 labels_dir)  # fmt: skip
    sets = [
        prepared_split(spec, PreparedFaces(prepared_dir), labels, data_name, pairs)
        if spec["format"] == "prepared"
        else ijb_set(spec, aligner, cache_dir)
        if spec["format"] == "ijb"
        else external_set(spec, aligner)
        for spec in specs
    ]
    names = [s.name for s in sets]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"eval benchmarks named twice: {twice}; give them distinct `name`s")
    return sets


def prepared_split(
    spec: Mapping[str, Any],
    prepared: PreparedFaces,
    labels: pd.DataFrame | None,
    data_name: str,
    pairs: PairSampling,
) -> EvalSet:
    """One split of the prepared set: its pairs by the rule ``pairs``, and the float columns of
    its labels (none without ``labels``)."""
    split = spec.get("split")
    if split not in SPLITS:
        raise ValueError(f"eval.benchmark.split={split!r}; choose one of {', '.join(SPLITS)}")
    manifest = prepared.manifest
    rows = (
        np.arange(len(manifest)) if split == "all" else np.flatnonzero(manifest["split"] == split)
    )
    qualities = {}
    if labels is not None:
        labels = labels.set_index("sample_id")
        sample_ids = manifest["sample_id"].to_numpy()[rows]
        methods = [c for c in labels.columns if c not in ("path", "identity", "split", "quality")]
        qualities = {
            m: labels.loc[sample_ids, m].to_numpy(dtype=np.float64)
            for m in methods
            if pd.api.types.is_float_dtype(labels[m])
        }
    detected = (manifest["detector"] == YuNetDetector.name).to_numpy()[rows]
    name = spec.get("name") or f"{data_name}_{split}"
    split_pairs = pairs.pairs(manifest["identity"].to_numpy()[rows])
    if len(rows) > pairs.all_up_to:
        log.info("%s: %d faces > eval.pairs.all_up_to=%d: %d genuine (<= %d per identity) and "
                 "%d impostor pairs sampled (seed %d)", name, len(rows), pairs.all_up_to,
                 split_pairs.n_genuine, pairs.genuine_per_identity, split_pairs.n_impostor,
                 pairs.seed)  # fmt: skip
    return EvalSet(
        name=name,
        n=len(rows),
        pairs=split_pairs,
        source=FaceSource.from_prepared(prepared),  # the label stage's cache entry
        rows=rows,
        label_qualities=qualities,
        det_scores=np.where(detected, manifest["det_score"].to_numpy(np.float64)[rows], np.nan),
        identities=manifest["identity"].to_numpy()[rows],
    )


def external_set(spec: Mapping[str, Any], aligner: Aligner) -> EvalSet:
    """A verification benchmark's faces, detected and aligned (``fiqa.data.verification``)."""
    bench = load_benchmark(spec)
    align = aligner(bench.aligned)
    n = len(bench.images)
    w, h = align.size
    faces = np.zeros((n, h, w, 3), np.uint8)
    ok = np.zeros(n, bool)
    det_scores = np.full(n, np.nan)
    reasons: dict[str, int] = {}
    for i in tqdm(range(n), desc=f"align {bench.name}", unit="img", mininterval=2):
        try:
            face, result = align.align(i, {"path": bench.paths[i]}, bench.images.load(i))
        except ImageReadError as err:
            face, reason = None, err.reason
        else:
            reason = result.reason
            if result.detector == YuNetDetector.name:
                det_scores[i] = result.det_score
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
        template=align.template,
        fingerprint=hashlib.sha256(faces.data).hexdigest(),
        faces=faces.__getitem__,
    )
    identities = None if bench.identities is None else np.asarray(bench.identities)
    return EvalSet(bench.name, n, pairs, source, np.arange(n), n_dropped=int((~ok).sum()),
                   det_scores=det_scores, identities=identities)  # fmt: skip


def ijb_set(spec: Mapping[str, Any], aligner: Aligner, cache_dir: str | Path) -> EvalSet:
    """An IJB-B/C release (``fiqa.data.ijb``): faces aligned with the given landmarks, template
    pairs; the detector baseline is the release's detector score."""
    if spec["template_quality"] not in TEMPLATE_QUALITY:
        raise ValueError(f"eval.benchmark.template_quality={spec['template_quality']!r}; choose "
                         f"one of {', '.join(TEMPLATE_QUALITY)}")  # fmt: skip
    protocol = load_ijb(spec["root"], spec["variant"], spec.get("name"))
    align = aligner(False)
    faces, ok, key, reasons = aligned_faces(protocol, align, cache_dir)
    n = len(protocol.images)
    t = protocol.templates
    templates = Templates(np.where(ok, t.template, -1), t.media, t.n_templates)
    used = templates.used()
    keep = used[protocol.pairs.a] & used[protocol.pairs.b]
    if reasons or not keep.all():
        log.warning("%s: %d of %d images unusable %s; %d of %d template pairs left out",
                    protocol.name, int((~ok).sum()), n, reasons, int((~keep).sum()),
                    len(keep))  # fmt: skip
    pairs = Pairs(protocol.pairs.a[keep], protocol.pairs.b[keep], protocol.pairs.genuine[keep])
    source = FaceSource(name=protocol.name, n=n, template=align.template, fingerprint=key,
                        faces=faces, picklable=True)  # fmt: skip
    setup = TemplateSetup(templates, spec["template_quality"],
                          tuple(float(f) for f in spec["fars"]))  # fmt: skip
    return EvalSet(protocol.name, n, pairs, source, np.arange(n), n_dropped=int((~ok).sum()),
                   det_scores=protocol.det_scores, templates=setup)  # fmt: skip
