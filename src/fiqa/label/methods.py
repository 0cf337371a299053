"""The label-method registry of the label stage: what each method needs and how it is computed.

Per-model methods are functions of one FR model's cached outputs (``fiqa.extract``); the stage
runs them for every model of ``label.fr_models``, writes a ``<method>@<model>`` column per model
when there are several, and the mean as the ``<method>`` column ("use several FR systems to
minimise system dependency", FaceQnet). Set methods (MagFace with its own model, fused) see the
whole context. Errors are ``ValueError``s; the stage reports them with the method's config key.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from fiqa.data.prepared import PreparedFaces
from fiqa.extract import FaceQanParams, FaceSource, Request, SerfiqParams
from fiqa.extract.configured import extract_outputs
from fiqa.fr import load_fr_model
from fiqa.label.crfiqa import crfiqa_scores
from fiqa.label.faceqnet import (
    faceqnet_scores,
    icao_proxy,
    references_from_list,
    select_reference_images,
)
from fiqa.label.fusion import fuse, huo_fused, intra_class_score, visual_score
from fiqa.label.sddfiqa import sddfiqa_scores

log = logging.getLogger(__name__)

# Expected value range of each method's raw score (checked on every run).
RANGES: dict[str, tuple[float, float]] = {
    "faceqnet": (0.0, 1.0),
    "serfiq": (0.0, 1.0),
    "crfiqa": (-np.inf, np.inf),  # CCS / (NNCCS + 1 + eps): finite, unbounded in principle
    "sddfiqa": (0.0, 100.0),
    "magface": (0.0, np.inf),
    "faceqan": (0.0, 1.0),
    "huo": (-np.inf, 1.0),  # eq. 1's S_v is unbounded below; [0, 1] with normalisation
    "fused": (0.0, 1.0),  # with how=none: the weighted mean of the raw columns' ranges
}
METHODS = tuple(RANGES)

Outputs = dict[str, np.ndarray]  # one FR model's products: embedding, serfiq, low_level, ...


@dataclass
class LabelContext:
    """What every label method may use: the prepared set, the cached FR outputs, the columns
    computed so far."""

    cfg: DictConfig
    prepared: PreparedFaces
    outputs: dict[str, Outputs] = field(default_factory=dict)  # per FR model
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    _references: np.ndarray | None = None

    @property
    def identities(self) -> np.ndarray:
        return self.prepared.manifest["identity"].to_numpy()

    def faceqnet_references(self) -> np.ndarray:
        """Row of each sample's reference image (label.methods.faceqnet.reference), computed
        once for all FR models."""
        if self._references is None:
            self._references = _select_references(self)
        return self._references


def _select_references(ctx: LabelContext) -> np.ndarray:
    params = ctx.cfg.label.methods.faceqnet
    manifest = ctx.prepared.manifest
    if params.reference == "list":
        ref_list = pd.read_csv(params.reference_list)
        return references_from_list(manifest["identity"], manifest["path"], ref_list)
    if params.reference == "manifest":  # e.g. data=vggface2 with data.references
        if "is_reference" not in manifest.columns:
            raise ValueError("reference=manifest needs an is_reference column (data.references)")
        is_ref = manifest["is_reference"].fillna(False).astype(bool)
        ref_list = manifest.loc[is_ref, ["identity", "path"]]
        return references_from_list(manifest["identity"], manifest["path"], ref_list)
    if params.reference == "proxy":
        landmarks = np.stack(manifest["landmarks"].to_numpy()).reshape(-1, 5, 2)
        proxy = pd.concat(
            [icao_proxy(faces, landmarks[rows]) for rows, faces in ctx.prepared.chunks()],
            ignore_index=True,
        )
        return select_reference_images(manifest["identity"], proxy)
    raise ValueError(f"reference must be proxy|list|manifest, got {params.reference!r}")


def _crfiqa(ctx: LabelContext, out: Outputs) -> np.ndarray:
    chunk_rows = ctx.cfg.label.methods.crfiqa.chunk_rows
    return crfiqa_scores(out["embedding"], ctx.identities, chunk_rows=chunk_rows)


def _sddfiqa(ctx: LabelContext, out: Outputs) -> np.ndarray:
    p, seed = ctx.cfg.label.methods.sddfiqa, ctx.cfg.label.seed
    return sddfiqa_scores(
        out["embedding"], ctx.identities, m=p.samples, repeats=p.repeats, seed=seed
    )


def _huo(ctx: LabelContext, out: Outputs) -> np.ndarray:
    p, ids = ctx.cfg.label.methods.huo, ctx.identities
    s_v = visual_score(out["low_level"], ids, subtract_min=p.subtract_min)
    s_c = intra_class_score(out["embedding"], ids)
    return huo_fused(s_v, out["serfiq"], s_c, weights=tuple(p.weights), how=p.how)


# Products per-model methods need besides the embedding: black-box FR models (ONNX, dlib) cannot
# make them, so these methods average over the PyTorch models of label.fr_models only.
WHITE_BOX_PRODUCTS = {
    "serfiq": ("serfiq",),
    "faceqan": ("faceqan",),
    "huo": ("serfiq", "low_level"),
}

PER_MODEL: dict[str, Callable[[LabelContext, Outputs], np.ndarray]] = {
    "faceqnet": lambda ctx, out: faceqnet_scores([out["embedding"]], ctx.faceqnet_references()),
    "serfiq": lambda ctx, out: out["serfiq"],
    "crfiqa": _crfiqa,
    "sddfiqa": _sddfiqa,
    "faceqan": lambda ctx, out: out["faceqan"],
    "huo": _huo,
}


def _magface(ctx: LabelContext) -> np.ndarray:
    """Norms of the MagFace model's raw embeddings (its own model, not label.fr_models)."""
    fr = ctx.cfg.label.methods.magface.model
    model = load_fr_model(fr)
    if not model.info.name.startswith("magface"):
        log.warning("label.methods.magface.model=%s is not a MagFace model", model.info.name)
    source = FaceSource.from_prepared(ctx.prepared)
    return extract_outputs(ctx.cfg, model, fr, source, Request(norm=True))["norm"]


SET_METHODS: dict[str, Callable[[LabelContext], np.ndarray]] = {
    "magface": _magface,
    # last (METHODS order): combines the columns above, per method or per method@model
    "fused": lambda ctx: fuse(
        ctx.columns, dict(ctx.cfg.label.methods.fused.weights), how=ctx.cfg.label.methods.fused.how
    ),
}


def extraction_request(cfg: DictConfig, methods: list[str]) -> Request:
    """What the extraction pass over ``label.fr_models`` must produce for ``methods``."""
    p, seed = cfg.label.methods, int(cfg.label.seed)
    needs_serfiq = bool({"serfiq", "huo"} & set(methods))
    if needs_serfiq and p.get("serfiq") is None:
        raise ValueError("label.methods.huo needs the SER-FIQ settings in label.methods.serfiq")
    serfiq = faceqan = None
    if needs_serfiq:
        s = p.serfiq
        serfiq = SerfiqParams(int(s.passes), float(s.dropout), seed, bool(s.calibrate))
    if "faceqan" in methods:
        q = p.faceqan
        faceqan = FaceQanParams(float(q.eps), int(q.iterations), int(q.copies),
                                float(q.power), seed, int(q.batch_size))  # fmt: skip
    return Request(low_level="huo" in methods, serfiq=serfiq, faceqan=faceqan)


def compute_method(ctx: LabelContext, method: str) -> dict[str, np.ndarray]:
    """The columns of ``method``: ``{method: mean over FR models}`` plus, with several FR models,
    ``{method@model: scores}``; also stored in ``ctx.columns`` for the fused method. Methods of
    ``WHITE_BOX_PRODUCTS`` use the models that produced them."""
    if method in SET_METHODS:
        columns = {method: np.asarray(SET_METHODS[method](ctx), dtype=np.float64)}
    else:
        needs = WHITE_BOX_PRODUCTS.get(method, ())
        usable = {n: out for n, out in ctx.outputs.items() if all(k in out for k in needs)}
        if not usable:
            raise ValueError(
                f"needs a PyTorch FR model (sface, iresnet*, ...) in label.fr_models; "
                f"{sorted(ctx.outputs)} are black boxes that only embed"
            )
        per = {
            name: np.asarray(PER_MODEL[method](ctx, out), dtype=np.float64)
            for name, out in usable.items()
        }
        several = len(ctx.outputs) > 1
        columns = {f"{method}@{name}": v for name, v in per.items()} if several else {}
        columns = {method: np.mean(list(per.values()), axis=0), **columns}
    ctx.columns.update(columns)
    return columns
