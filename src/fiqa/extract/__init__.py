"""The extraction engine: per-face FR outputs (embeddings and batch products), cached.

``Extractor.outputs(fr, faces, request)`` runs an FR model over a ``FaceSource`` through a
Lightning predict loop and returns the embedding plus the requested ``BatchProduct``s (defined
by the quality methods in ``fiqa.label``), cached per (faces, model, preprocessing).
"""

from fiqa.extract.cache import unit_rows
from fiqa.extract.extractor import ExtractionSettings, Extractor, FREntry
from fiqa.extract.faces import FaceSource
from fiqa.extract.predict import extract
from fiqa.extract.products import Batch, BatchProduct, Request, batch_generator

__all__ = [
    "Batch",
    "BatchProduct",
    "ExtractionSettings",
    "Extractor",
    "FREntry",
    "FaceSource",
    "Request",
    "batch_generator",
    "extract",
    "unit_rows",
]
