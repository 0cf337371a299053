"""``FaceSource``: aligned faces addressed by row, the input of every extraction."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fiqa.core.artifacts import MANIFEST
from fiqa.core.provenance import file_sha256
from fiqa.data.face_store import PreparedFaces


@dataclass(frozen=True)
class FaceSource:
    """Aligned faces addressed by row.

    Attributes:
        name: For logs and errors.
        n: Number of faces.
        template: Alignment template of the faces (``fiqa.core.align``).
        fingerprint: Changes whenever the faces change (e.g. sha256 of the prepared manifest).
        faces: ``rows -> (k, H, W, 3)`` uint8 RGB faces.
        picklable: ``faces`` can be sent to spawned DataLoader workers.
    """

    name: str
    n: int
    template: str
    fingerprint: str
    faces: Callable[[np.ndarray], np.ndarray]
    picklable: bool = False

    @classmethod
    def from_prepared(cls, prepared: PreparedFaces) -> FaceSource:
        """Every face of a prepared directory, fingerprinted by its manifest's bytes."""
        return cls(
            name=str(prepared.directory),
            n=len(prepared),
            template=prepared.template,
            fingerprint=file_sha256(str(prepared.directory / MANIFEST)),
            faces=prepared.faces,
            picklable=True,
        )
