"""Checks that a file given as a quality model is one, before it is used.

``fiqa score --checkpoint`` and ``fiqa.quality.scoring.QualityScorer.from_path`` take any path;
the libraries that load it fail on a wrong file without naming it (``Unsupported operand 155``,
``KeyError: 'pytorch-lightning_version'``, onnxruntime's ``Required inputs ... are missing``).
These checks say which file is not a quality model and what it holds instead.
"""

from __future__ import annotations

import inspect
import pickle
from pathlib import Path
from typing import Any

import torch


class QualityModelError(ValueError):
    """A file given as a quality model is not one; the message names it and says why."""


def check_checkpoint(path: Path, model_class: type) -> None:
    """Raise ``QualityModelError`` unless ``path`` is a Lightning checkpoint of
    ``model_class``: readable by ``torch.load``, with Lightning's keys and its constructor's
    hyper-parameters (the checks ``load_from_checkpoint`` fails on without naming the file)."""
    try:  # torch.load's defaults, as Lightning's load (so no file passes here and fails there)
        checkpoint = torch.load(path, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
        # torch's own message mostly advises weights_only=False: not the point for a wrong file
        raise QualityModelError(
            f"{path} is not a fiqa quality checkpoint: torch.load cannot read it "
            f"({type(err).__name__}: a corrupt or truncated file, or no torch file at all); give "
            "the quality.ckpt or quality.onnx of the train stage"
        ) from err
    lightning_keys = ("pytorch-lightning_version", "state_dict", "hyper_parameters")
    if not isinstance(checkpoint, dict) or not all(k in checkpoint for k in lightning_keys):
        keys = sorted(map(str, checkpoint))[:8] if isinstance(checkpoint, dict) else None
        held = f"a {type(checkpoint).__name__}" + (f" with keys {keys}" if keys is not None else "")
        raise QualityModelError(
            f"{path} is not a fiqa quality checkpoint: it is a torch file but no Lightning "
            f"checkpoint ({held}; a checkpoint has {', '.join(lightning_keys)})"
        )
    added = getattr(model_class, "ADDED_HPARAMS", {})  # absent from older checkpoints
    required = [
        name
        for name, p in inspect.signature(model_class.__init__).parameters.items()
        if name != "self" and p.default is p.empty and name not in added
    ]
    missing = [name for name in required if name not in checkpoint["hyper_parameters"]]
    if missing:
        raise QualityModelError(
            f"{path} is not a fiqa quality checkpoint: it is a Lightning checkpoint of another "
            f"model (its hyper-parameters lack {', '.join(missing)})"
        )


def onnx_session(path: Path, providers: list[str]) -> Any:
    """An onnxruntime session of ``path``; a file onnxruntime cannot load is named."""
    import onnxruntime as ort
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidGraph, InvalidProtobuf

    try:
        return ort.InferenceSession(str(path), providers=providers)
    except (Fail, InvalidGraph, InvalidProtobuf) as err:
        raise QualityModelError(
            f"{path} is not a fiqa quality model: onnxruntime cannot load it "
            f"({str(err).splitlines()[0]})"
        ) from None


def check_quality_graph(path: Path, session: Any) -> None:
    """Raise ``QualityModelError`` unless the graph maps one face batch ``(N, 3, H, W)`` to one
    score per face (``(N,)`` or ``(N, 1)``), the form of ``fiqa.quality.export``'s graphs."""
    from fiqa.quality.export import INPUT_NAME, OUTPUT_NAME

    inputs, output = session.get_inputs(), session.get_outputs()[0]
    problems = []
    if not _one_score_per_face(output.shape):
        problems.append(
            f"it outputs {output.name} of shape {_shape(output.shape)}, not one score per face"
        )
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs[:3]) + (", ..." if len(inputs) > 3 else "")
        problems.append(f"it takes {len(inputs)} inputs ({names}), not one batch of faces")
    elif not _face_batch(inputs[0].shape):
        problems.append(
            f"its input {inputs[0].name} has shape {_shape(inputs[0].shape)}, not (N, 3, H, W)"
        )
    if problems:
        raise QualityModelError(
            f"{path} is not a fiqa quality model ({'; '.join(problems)}): give the quality.onnx "
            f"of the train stage ({INPUT_NAME} (N, 3, H, W) -> {OUTPUT_NAME} (N,)) or another "
            "ONNX quality model of that form (an FR model's graph outputs embeddings)"
        )


def _fixed(dim: Any) -> bool:
    return isinstance(dim, int)


def _one_score_per_face(shape: list[Any]) -> bool:
    return len(shape) == 1 or (len(shape) == 2 and (not _fixed(shape[1]) or shape[1] == 1))


def _face_batch(shape: list[Any]) -> bool:
    return len(shape) == 4 and (not _fixed(shape[1]) or shape[1] == 3)


def _shape(shape: list[Any]) -> str:
    return f"({', '.join(str(d) if d is not None else '?' for d in shape)})"
