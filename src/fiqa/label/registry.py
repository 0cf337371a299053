"""The label-method registry: one ``LabelMethod`` per quality method, declared once.

A registration states the method's name, the schema of its settings (``label.methods.<name>``,
a dataclass of types; the values live in ``conf/label/common.yaml``), its value range, whether
it is blind (scores one image alone: computable on any faces, e.g. a benchmark's) or
identity-based (needs the other images of the identity: a training label only), the extraction
products it needs (from which "needs a PyTorch model" and "needs gradients" follow), and where
its inputs come from:

- ``PER_FR_MODEL``: each model of ``label.fr_models`` that can make its products; the label is the
  mean over those models and, with several models, each model's column ``<name>@<model>``;
- ``OWN_MODEL``: its own FR model, ``params.model`` (MagFace);
- ``COLUMNS``: the columns computed before it (``fused``; ``reads`` names the methods whose
  columns those are, so that computing it computes them).

The config choices (``label.target``, ``label=<name>``, the ``label.methods`` schema) and the
methods ``evaluate`` computes directly on benchmark faces are derived from ``METHODS``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

import numpy as np

from fiqa.extract.products import BatchProduct, Request, gradient_need, white_box_need
from fiqa.label.context import LabelContext
from fiqa.label.correction import split_column

PER_FR_MODEL, OWN_MODEL, COLUMNS = "per_fr_model", "own_model", "columns"
SOURCES = (PER_FR_MODEL, OWN_MODEL, COLUMNS)

Outputs = Mapping[str, np.ndarray]  # one FR model's extraction products
Score = Callable[[LabelContext, Any, Outputs | None], np.ndarray]
ValueRange = tuple[float, float]


@dataclass(frozen=True)
class LabelMethod:
    """One quality method.

    Attributes:
        name: Config and column name.
        params: Dataclass of its settings (``label.methods.<name>``).
        value_range: Expected (low, high) of its scores, or a function of its settings.
        blind: Scores one image alone (True) or needs the identity's other images (False).
        score: ``(context, settings, outputs) -> (n,) scores``; ``outputs`` is one FR model's
            products (None for ``COLUMNS`` methods).
        products: Extraction products it reads besides the embedding (``BatchProduct``
            classes; one with settings takes the settings of the method of the same name and
            ``label.seed``).
        source: ``PER_FR_MODEL``, ``OWN_MODEL`` or ``COLUMNS`` (see the module docstring).
        reads: For a ``COLUMNS`` method: its settings -> the methods whose columns it combines.
    """

    name: str
    params: type
    value_range: ValueRange | Callable[[Any], ValueRange]
    blind: bool
    score: Score
    products: tuple[type[BatchProduct], ...] = ()
    source: str = PER_FR_MODEL
    reads: Callable[[Any], list[str]] | None = None

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"label method {self.name}: source must be one of {SOURCES}")
        if (self.reads is None) != (self.source != COLUMNS):
            raise ValueError(f"label method {self.name}: `reads` is for COLUMNS methods only")

    @property
    def white_box(self) -> str | None:
        """What it needs a PyTorch FR model for (a product), or None."""
        return white_box_need(self.products)

    @property
    def gradients(self) -> bool:
        """It back-propagates through the FR model."""
        return gradient_need(self.products)

    def range_for(self, params: Any) -> ValueRange:
        """Expected value range with these settings."""
        return self.value_range(params) if callable(self.value_range) else self.value_range

    def request(self, params: Mapping[str, Any], seed: int) -> Request:
        """Its products, configured from ``params`` (every method's settings) and ``seed``."""
        return Request(tuple(_product(cls, params, seed) for cls in self.products))


def _product(cls: type[BatchProduct], params: Mapping[str, Any], seed: int) -> BatchProduct:
    if _configured(cls):  # settings of the method of the same name
        return cls(params[cls.name], seed)
    return cls()


def _configured(cls: type[BatchProduct]) -> bool:
    """A product with settings: those of the method of its name (``label.methods.<name>``)."""
    return is_dataclass(cls) and bool(fields(cls))


METHODS: dict[str, LabelMethod] = {}


def register_label_method(method: LabelMethod) -> LabelMethod:
    """Add ``method`` to ``METHODS`` (registration order is the computation and column order;
    ``COLUMNS`` methods must come after the columns they combine)."""
    if method.name in METHODS:
        raise ValueError(f"label method {method.name!r} is registered twice")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> LabelMethod:
    """The registered method ``name``; the error lists the known ones."""
    if name not in METHODS:
        raise ValueError(f"unknown label method {name!r}; known: {', '.join(METHODS)}")
    return METHODS[name]


def dependencies(name: str, params: Mapping[str, Any]) -> list[str]:
    """``name`` and every method whose settings or column its labels depend on (the settings of
    its configured products, the columns a ``COLUMNS`` method reads, recursively), in registry
    order: what must be computed with it, and the settings its labels change with.

    Raises:
        ValueError: For an unknown method, naming the settings that read it.
    """
    found: set[str] = set()
    todo = [(name, "")]
    while todo:
        current, reader = todo.pop()
        if current not in METHODS and reader:
            raise ValueError(f"label.methods.{reader} reads {current!r}, which is no label "
                             f"method; known: {', '.join(METHODS)}")  # fmt: skip
        method = get_method(current)
        if method.name in found:
            continue
        found.add(method.name)
        todo += [(cls.name, method.name) for cls in method.products if _configured(cls)]
        reads = method.reads(params[method.name]) if method.reads else []
        todo += [(column, method.name) for column in reads]
    return [m for m in METHODS if m in found]


def column_dependencies(column: str, params: Mapping[str, Any]) -> list[str]:
    """The methods whose settings a label column depends on (``dependencies`` of its method;
    a corrected column ``<method>+ediffiqa`` its base method's); none for a name that is no
    label column (a baseline such as ``detector``)."""
    base = split_column(column)[0]
    return dependencies(base, params) if base in METHODS else []


def blind_methods() -> list[str]:
    """Methods that score one face alone from an FR model's outputs: ``evaluate`` computes them
    directly on benchmark faces."""
    return [m.name for m in METHODS.values() if m.blind and m.source != COLUMNS]


def combined_request(methods: list[LabelMethod], params: Mapping[str, Any], seed: int) -> Request:
    """The products of all ``methods``, each once."""
    request = Request()
    for method in methods:
        request = request.merged(method.request(params, seed))
    return request


def product_score(product: str) -> Score:
    """The score of a method whose label is one of its extraction products, as computed."""

    def score(ctx: LabelContext, params: Any, outputs: Outputs | None) -> np.ndarray:
        assert outputs is not None
        return outputs[product]

    score.__name__ = f"{product}_score"
    return score
