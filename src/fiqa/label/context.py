"""``LabelContext``: what a label method may use besides its FR model's outputs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fiqa.data.face_store import PreparedFaces


@dataclass
class LabelContext:
    """The labelled set as the methods see it.

    Attributes:
        params: Settings of every method by name (``label.methods``, typed).
        seed: Seed of the random draws (``label.seed``).
        identities: Identity of each face; None for faces scored blind (benchmark faces).
        prepared: The prepared set being labelled (FaceQnet's reference selection), or None.
        columns: Columns computed so far (``method`` and ``method@model``), for ``fused``.
    """

    params: Mapping[str, Any]
    seed: int
    identities: np.ndarray | None = None
    prepared: PreparedFaces | None = None
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    _memo: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of_prepared(cls, prepared: PreparedFaces, params: Mapping[str, Any], seed: int):
        """The context of labelling a prepared set (identities from its manifest)."""
        return cls(params, seed, prepared.manifest["identity"].to_numpy(), prepared)

    def require_identities(self, method: str) -> np.ndarray:
        """The identities, or a ValueError saying ``method`` is identity-based."""
        if self.identities is None:
            raise ValueError(f"{method} needs the identities of the faces (it is identity-based)")
        return self.identities

    @property
    def singletons(self) -> np.ndarray:
        """Rows whose identity has no other image: they get no identity-based label (the
        policy of every identity-based method; such samples are left out of training)."""
        ids = self.require_identities("an identity-based method")
        _, codes, counts = np.unique(ids, return_inverse=True, return_counts=True)
        return counts[codes] == 1

    def require_prepared(self, method: str) -> PreparedFaces:
        """The prepared set, or a ValueError saying ``method`` needs it."""
        if self.prepared is None:
            raise ValueError(f"{method} needs a prepared set (faces, landmarks, manifest)")
        return self.prepared

    def once(self, key: str, compute: Callable[[], Any]) -> Any:
        """``compute()`` the first time ``key`` is asked for, the same value afterwards (e.g.
        FaceQnet's references, shared by every FR model)."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]
