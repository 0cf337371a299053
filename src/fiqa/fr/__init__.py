"""Face-recognition (FR) models looked up by name: ``load_fr_model("sface")``.

Every architecture module registers its builders in ``fiqa.fr.registry`` on import; importing
``fiqa.fr`` imports them all. Add an architecture with ``register_fr_model``.
"""

# imported to register their builders
from fiqa.fr import (  # noqa: F401
    adaface,
    dlib_model,
    facenet,
    iresnet,
    mobilefacenet,
    onnx_model,
    sface,
)
from fiqa.fr.model import FRModel, FRModelInfo
from fiqa.fr.registry import FR_BUILDERS, FRSpec, load_fr_model, register_fr_model
from fiqa.fr.sface import SFaceNet

__all__ = [
    "FR_BUILDERS",
    "FRModel",
    "FRModelInfo",
    "FRSpec",
    "SFaceNet",
    "load_fr_model",
    "register_fr_model",
]
