"""fiqa: an experiment pipeline for face image quality assessment."""

__version__ = "0.1.0"
