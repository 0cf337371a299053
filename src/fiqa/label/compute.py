"""Running label methods on a face set: extract what they need, then compute their columns.

The same two steps label a prepared set (``fiqa.label.table``) and score benchmark faces with
the blind methods (``fiqa.eval.qualities``). Extraction is split from computation so that under
DDP every rank takes part in the extraction and one rank computes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fiqa.extract import Extractor, FaceSource, FREntry, Request
from fiqa.label.context import LabelContext
from fiqa.label.registry import (
    COLUMNS,
    OWN_MODEL,
    PER_FR_MODEL,
    LabelMethod,
    Outputs,
    combined_request,
)

log = logging.getLogger(__name__)


@dataclass
class MethodOutputs:
    """The extraction products label methods read.

    Attributes:
        per_model: By ``label.fr_models`` name (white boxes: every product; black boxes: only
            what any FR model makes, e.g. the embedding).
        n_models: Number of ``label.fr_models`` (columns ``<method>@<model>`` with several).
        own: By method name, the outputs of its own FR model (``OWN_MODEL`` methods).
        own_models: By method name, the name of that model.
    """

    per_model: dict[str, Outputs] = field(default_factory=dict)
    n_models: int = 0
    own: dict[str, Outputs] = field(default_factory=dict)
    own_models: dict[str, str] = field(default_factory=dict)


def method_outputs(
    methods: list[LabelMethod],
    fr_models: Mapping[str, FREntry],
    source: FaceSource,
    ctx: LabelContext,
    extractor: Extractor,
    fr_defaults: FREntry,
    every_model: bool = True,
) -> MethodOutputs:
    """Extract, for ``source``, every product ``methods`` read, with the models they read it from.

    Args:
        methods: The methods to be computed.
        fr_models: ``label.fr_models``: name -> entry.
        source: The faces.
        ctx: Settings of every method and the seed (products are configured from them).
        extractor: The run's extraction settings and loaded models.
        fr_defaults: Batch size and flip for an ``OWN_MODEL`` method's model (the ``fr`` group).
        every_model: Embed with every model of ``fr_models`` (a labels table also keeps their
            embeddings, e.g. for the eDifFIQA correction); False: only with the models some
            ``PER_FR_MODEL`` method of ``methods`` can use.
    """
    out = MethodOutputs(n_models=len(fr_models))
    shared = [m for m in methods if m.source == PER_FR_MODEL]
    request = combined_request(shared, ctx.params, ctx.seed)
    for name, fr in fr_models.items():
        white_box = extractor.model(fr).info.white_box
        if not every_model and not any(white_box or not m.white_box for m in shared):
            continue  # no method can use this model (e.g. SER-FIQ only, and a black box)
        wanted = request if white_box else Request(tuple(p for p in request.products
                                                         if not p.white_box))  # fmt: skip
        if wanted != request:
            log.warning("%s is a black box: only its embeddings are used for labels", name)
        out.per_model[name] = extractor.outputs(fr, source, wanted)
    for method in methods:
        if method.source == OWN_MODEL:
            fr = own_model(ctx.params[method.name], fr_defaults)
            request = method.request(ctx.params, ctx.seed)
            out.own[method.name] = extractor.outputs(fr, source, request)
            out.own_models[method.name] = fr.name
    return out


def own_model(params: Any, fr_defaults: FREntry) -> FREntry:
    """The FR model of an ``OWN_MODEL`` method (its ``model`` setting)."""
    return FREntry.from_mapping(params.model, fr_defaults)


def method_columns(
    method: LabelMethod, ctx: LabelContext, outputs: MethodOutputs
) -> tuple[dict[str, np.ndarray], frozenset[str]]:
    """The columns of ``method`` and the FR models they come from.

    Columns: ``{method: scores}``; for ``PER_FR_MODEL`` methods the scores are the mean over the
    usable models and, with several ``label.fr_models``, each model's ``{method@model: scores}``
    too. The columns are also added to ``ctx.columns`` (``fused`` reads them). An
    identity-based method gives no label (NaN) to a sample whose identity has no other image:
    the policy for every such method (the others' labels still use it, e.g. as a negative).

    Raises:
        ValueError: When no FR model can make the method's products (black boxes only), or the
            method's own check fails; the message starts with its config key.
    """
    params = ctx.params[method.name]
    try:
        if method.source == COLUMNS:
            columns, used = {method.name: _float(method.score(ctx, params, None))}, frozenset()
        elif method.source == OWN_MODEL:
            own = outputs.own[method.name]
            columns = {method.name: _float(method.score(ctx, params, own))}
            used = frozenset([outputs.own_models[method.name]])
        else:
            columns, used = _per_model_columns(method, ctx, params, outputs)
    except ValueError as err:
        raise ValueError(f"label.methods.{method.name}: {err}") from err
    if not method.blind and ctx.identities is not None:
        singletons = ctx.singletons
        columns = {name: np.where(singletons, np.nan, values) for name, values in columns.items()}
    ctx.columns.update(columns)
    return columns, used


def _per_model_columns(
    method: LabelMethod, ctx: LabelContext, params: Any, outputs: MethodOutputs
) -> tuple[dict[str, np.ndarray], frozenset[str]]:
    needs = [p.name for p in method.products]
    usable = {n: out for n, out in outputs.per_model.items() if all(k in out for k in needs)}
    if not usable:
        raise ValueError(
            f"needs a PyTorch FR model (sface, iresnet*, ...) in label.fr_models; "
            f"{sorted(outputs.per_model)} are black boxes that only embed"
        )
    per = {name: _float(method.score(ctx, params, out)) for name, out in usable.items()}
    columns = (
        {f"{method.name}@{name}": v for name, v in per.items()} if outputs.n_models > 1 else {}
    )
    return {method.name: np.mean(list(per.values()), axis=0), **columns}, frozenset(usable)


def _float(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)
