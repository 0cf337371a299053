"""dlib's ResNet face recogniser (128-D) as a black-box ``FRModel`` (registered as ``dlib_resnet``).

dlib's network was trained on 150x150 chips cut by ``dlib.get_face_chip(img, shape, size=150,
padding=0.25)`` from its own 5-point shape predictor (eye corners + nose base). fiqa aligns
faces on five ArcFace-order points instead, so this module registers the ``dlib_150`` template:
the ArcFace-order points placed where dlib's chips put them. The extraction pipeline re-warps
prepared faces onto it (``fiqa.core.align.retarget_faces``), and the faces reach dlib as chips.

Needs the ``dlib`` module (``pip install -e '.[dlib]'``: the prebuilt ``dlib-bin`` wheel) and
the weights file ``dlib_face_recognition_resnet_model_v1.dat`` (CC0, dlib-models) as
``fr.weights``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fiqa.core.align import ALIGNMENT_TEMPLATES, register_template
from fiqa.core.provenance import file_sha256
from fiqa.fr.model import FRModel, FRModelInfo
from fiqa.fr.registry import FRSpec, register_fr_model

log = logging.getLogger(__name__)

DLIB_TEMPLATE = "dlib_150"
CHIP_SIZE = 150
EMBEDDING_SIZE = 128

# Measured, not designed: on the 61 photos of ../shared/data/faces/deepface_13ids, YuNet's five
# points (fiqa.data.detect) were mapped into the chip dlib itself cuts (HOG box ->
# shape_predictor_5_face_landmarks -> get_face_chip_details(size=150, padding=0.25); the
# image -> chip map read off extract_image_chip of coordinate-ramp images, exact to 1e-5 px).
# One similarity fitted by least squares over all 305 points from the faces' ArcFace-112 crops
# to those chip positions (scale 1.486, rotation 0.1 deg, per-face scale sd 0.07) maps the
# ArcFace template to the points below (rounded to 0.01 px). Residual of single faces' YuNet
# points: mean 4.9 px (landmark disagreement and face shape, not a bias). The chip is looser
# than the 112 crop: a face retargeted from arcface_112 has its bottom ~17 rows black (below
# the chin); retarget from a larger prepared template (e.g. faceqnet_224) to avoid that.
DLIB_150_POINTS = [
    [47.63, 43.54],
    [99.98, 43.35],
    [73.92, 73.36],
    [52.35, 103.98],
    [95.71, 103.82],
]
if DLIB_TEMPLATE not in ALIGNMENT_TEMPLATES:  # a config may have registered its own first
    register_template(DLIB_TEMPLATE, (CHIP_SIZE, CHIP_SIZE), DLIB_150_POINTS)


def import_dlib() -> Any:
    """The ``dlib`` module, or an ImportError saying how to install it."""
    try:
        import dlib
    except ImportError as err:
        raise ImportError(
            "the dlib_resnet FR model needs the dlib module: pip install -e '.[dlib]' "
            "(the prebuilt CPU wheel dlib-bin; plain 'dlib' compiles for many minutes)"
        ) from err
    return dlib


class DlibResNetNet(nn.Module):
    """dlib's recogniser as a module: float ``(N, 3, 150, 150)`` RGB 0..255 -> ``(N, 128)``.

    Input faces must be aligned on the ``dlib_150`` template. Holds no parameters; the dlib
    object is rebuilt after unpickling (DDP spawn, workers).

    Args:
        weights: ``dlib_face_recognition_resnet_model_v1.dat``.
        num_jitters: dlib's test-time augmentation (0 = one pass per face).

    Raises:
        ImportError: When dlib is not installed.
        ValueError: Naming the file when dlib cannot read it as a recognition model.
    """

    def __init__(self, weights: Path, num_jitters: int = 0) -> None:
        super().__init__()
        if num_jitters < 0:
            raise ValueError(f"options.num_jitters must be >= 0, got {num_jitters}")
        self.weights, self.num_jitters = Path(weights), int(num_jitters)
        self._model: Any = None
        self._open()

    def _open(self) -> Any:
        if self._model is None:
            dlib = import_dlib()
            try:
                self._model = dlib.face_recognition_model_v1(str(self.weights))
            except RuntimeError as err:  # dlib reports a wrong file as a deserialisation error
                raise ValueError(
                    f"dlib cannot read {self.weights} as a face-recognition model ({err}); "
                    "expected dlib_face_recognition_resnet_model_v1.dat"
                ) from err
        return self._model

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_model"] = None  # dlib objects do not pickle; reloaded on first use
        return state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, 150, 150)`` float RGB 0..255 -> ``(N, 128)`` float32 descriptors."""
        if tuple(x.shape[1:]) != (3, CHIP_SIZE, CHIP_SIZE):
            raise ValueError(
                f"dlib_resnet takes (N, 3, {CHIP_SIZE}, {CHIP_SIZE}) faces aligned on the "
                f"{DLIB_TEMPLATE!r} template, got {tuple(x.shape)}"
            )
        if len(x) == 0:
            return torch.zeros(0, EMBEDDING_SIZE, device=x.device)
        chips = x.detach().round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        descriptors = self._open().compute_face_descriptor(
            [np.ascontiguousarray(chip) for chip in chips], self.num_jitters
        )
        out = np.asarray([np.asarray(d) for d in descriptors], dtype=np.float32)
        return torch.from_numpy(out).to(x.device)

    def extra_repr(self) -> str:
        return f"weights={str(self.weights)!r}, num_jitters={self.num_jitters}"


@register_fr_model("dlib_resnet")
def build_dlib_resnet(spec: FRSpec) -> FRModel:
    """dlib ResNet 128-D from ``spec.weights`` (options: ``num_jitters``, default 0)."""
    if not spec.pretrained:
        raise ValueError(f"{spec.name} is a black box: it cannot be built without its weights")
    path = spec.require_weights("dlib_face_recognition_resnet_model_v1.dat").resolve()
    net = DlibResNetNet(path, num_jitters=int(spec.option("num_jitters", 0)))
    info = FRModelInfo(
        name=spec.name,
        embedding_size=EMBEDDING_SIZE,
        input_size=(CHIP_SIZE, CHIP_SIZE),
        colour="RGB",
        template=DLIB_TEMPLATE,
        weights_path=str(path),
        weights_sha256=file_sha256(str(path)),
        white_box=False,
    )
    return FRModel(net, info, spec.device)
