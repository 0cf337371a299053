"""ONNX export of a trained ``QualityRegressor``, checked against torch before it is kept.

The exported graph takes ``faces``: float32 ``(N, 3, H, W)`` RGB in 0..255, aligned to the
backbone's template (ArcFace 112x112 for most FR backbones), and returns ``quality``: ``(N,)``,
with a dynamic batch axis. The metadata records the template and size (``fiqa.template``,
``fiqa.input_size``) for ``fiqa score``, and the 0-100 calibration (``fiqa.calibration``). The file is self-contained (weights inside, no external
data) and written atomically.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fiqa.core.atomic import atomic_path
from fiqa.quality.calibration import ONNX_KEY as CALIBRATION_ONNX_KEY
from fiqa.quality.model import QualityRegressor

log = logging.getLogger(__name__)

INPUT_NAME = "faces"
OUTPUT_NAME = "quality"
INPUT_FORMAT = "float32 (N, 3, H, W) RGB 0..255, aligned to fiqa.template, H, W = fiqa.input_size"


class ExportMismatchError(RuntimeError):
    """The ONNX graph's outputs differ from the torch model's beyond the tolerance."""


def _random_faces(model: QualityRegressor, batch: int, generator: torch.Generator) -> torch.Tensor:
    shape = (batch, 3, *model.input_size)
    return (torch.rand(shape, generator=generator) * 255.0).to(model.device)


def _write_graph(
    model: QualityRegressor, example: torch.Tensor, tmp: Path, opset: int, dynamo: bool
) -> None:
    """Export ``model`` to ``tmp`` as one self-contained ONNX file with a dynamic batch axis."""
    if dynamo:
        batch = torch.export.Dim("batch", min=1, max=1 << 16)
        program = torch.onnx.export(
            model,
            (example,),
            None,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            dynamic_shapes={INPUT_NAME: {0: batch}},
            dynamo=True,
            verbose=False,
        )
        program.save(tmp, external_data=False)
    else:
        torch.onnx.export(
            model,
            (example,),
            str(tmp),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            dynamo=False,
        )


STACK_TRACE = "pkg.torch.onnx.stack_trace"  # per-node source lines, with this checkout's paths


def _add_metadata(tmp: Path, model: QualityRegressor) -> None:
    """Record the input format and the model's hyperparameters in the ONNX metadata; drop the
    exporter's per-node stack traces, whose absolute paths would make the same model's file
    differ between two clones."""
    import onnx

    proto = onnx.load(str(tmp))
    for nodes in (proto.graph.node, *(f.node for f in proto.functions)):
        for node in nodes:
            kept = [p for p in node.metadata_props if p.key != STACK_TRACE]
            del node.metadata_props[:]
            node.metadata_props.extend(kept)
    for key, value in (
        ("fiqa.input", INPUT_FORMAT),
        ("fiqa.template", model.template),
        ("fiqa.input_size", json.dumps(list(model.input_size))),
        ("fiqa.hparams", json.dumps(dict(model.hparams), default=str, sort_keys=True)),
        ("fiqa.target_scaling", json.dumps(model.target_scaling)),
        *([(CALIBRATION_ONNX_KEY, json.dumps(model.calibration))] if model.calibration else []),
    ):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save_model(proto, str(tmp), save_as_external_data=False)


def compare_with_torch(
    model: QualityRegressor, onnx_bytes: bytes, batch_sizes: tuple[int, ...], seed: int = 0
) -> float:
    """Max absolute difference of ONNX (onnxruntime, CPU) vs torch on random faces.

    Loading from bytes also proves the file has no external data files.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    for batch in batch_sizes:
        faces = _random_faces(model, batch, generator)
        with torch.no_grad():
            expected = model(faces).float().cpu().numpy()
        (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: faces.cpu().numpy()})
        if got.shape != (batch,):
            raise ExportMismatchError(f"ONNX output shape {got.shape} for batch {batch}")
        worst = max(worst, float(np.max(np.abs(got - expected))))
    return worst


def export_onnx(
    model: QualityRegressor,
    path: str | os.PathLike[str],
    opset: int = 18,
    atol: float = 1e-4,
    check_batch_sizes: tuple[int, ...] = (1, 5),
    dynamo: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Export the eval-mode model to ONNX and verify it against torch.

    Args:
        model: The trained regressor (left in its original train/eval mode afterwards).
        path: Output ``.onnx`` file (replaced atomically, only when the check passes).
        opset: ONNX opset version.
        atol: Largest allowed absolute difference between onnxruntime and torch outputs.
        check_batch_sizes: Batch sizes checked (two different ones prove the dynamic axis).
        dynamo: Use the ``torch.export`` based exporter (default in this torch); False uses
            the legacy TorchScript exporter.
        seed: Seed of the random check inputs.

    Returns:
        ``{"path", "max_abs_diff", "opset", "batch_sizes", "exporter"}``.

    Raises:
        ExportMismatchError: If the difference exceeds ``atol`` (``path`` is left untouched).
    """
    target = Path(path)
    was_training = model.training
    model.eval()
    try:
        example = _random_faces(model, 2, torch.Generator().manual_seed(seed + 1))
        with atomic_path(target) as tmp:
            _write_graph(model, example, tmp, opset, dynamo)
            _add_metadata(tmp, model)
            max_diff = compare_with_torch(model, tmp.read_bytes(), check_batch_sizes, seed)
            if not max_diff <= atol:
                raise ExportMismatchError(
                    f"ONNX export of {target}: max abs diff vs torch {max_diff:.3g} > atol "
                    f"{atol:g} at batch sizes {list(check_batch_sizes)}; not written"
                )
    finally:
        model.train(was_training)
    exporter = "dynamo" if dynamo else "torchscript"
    log.info("exported %s (%s, opset %d): max abs diff %.3g", target, exporter, opset, max_diff)
    return {
        "path": str(target),
        "max_abs_diff": max_diff,
        "opset": opset,
        "batch_sizes": list(check_batch_sizes),
        "exporter": exporter,
    }
