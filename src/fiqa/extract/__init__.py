"""Cached per-face FR outputs (embeddings, norms, low-level features, SER-FIQ, FaceQAN)."""

from fiqa.extract.cache import FaceSource, Request, unit_rows
from fiqa.extract.predict import extract
from fiqa.label.faceqan import FaceQanParams
from fiqa.label.serfiq import SerfiqParams

__all__ = ["FaceQanParams", "FaceSource", "Request", "SerfiqParams", "extract", "unit_rows"]
