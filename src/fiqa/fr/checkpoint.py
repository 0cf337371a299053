"""Reading upstream FR checkpoints into our modules, with errors that name the mismatching keys.

Releases wrap their weights differently: a bare state dict (insightface ``backbone.pth``), a
Lightning checkpoint with ``state_dict`` and a ``model.`` prefix (AdaFace ``.ckpt``), a dict with
``state_dict`` and a ``features.module.`` prefix (MagFace), or ``module.`` from DataParallel.
``read_state_dict`` unwraps the container; ``fit_state_dict`` strips / drops prefixes and loads
strictly; ``load_upstream_checkpoint`` is the builder step every architecture shares (read,
fit, wrap as ``FRModel``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from fiqa.core.provenance import file_sha256
from fiqa.fr.model import FRModel, FRModelInfo
from fiqa.fr.registry import FRSpec

log = logging.getLogger(__name__)

# Container keys under which checkpoints nest their state dict, tried in order.
CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "net")
MAX_LISTED = 5


def read_state_dict(path: Path, extra_safe_globals: Iterable[type] = ()) -> dict[str, torch.Tensor]:
    """Load a checkpoint file safely (``weights_only``) and return its tensor dict.

    Args:
        path: ``.pth`` / ``.pt`` / ``.ckpt`` file.
        extra_safe_globals: Classes allowed in the pickle besides tensors and containers (e.g.
            ``argparse.Namespace`` stored in Lightning hyper-parameters).

    Returns:
        ``{key: tensor}`` of the (unwrapped) state dict, non-tensor entries removed.

    Raises:
        ValueError: Naming the file when it cannot be unpickled safely or holds no tensors.
    """
    try:
        with torch.serialization.safe_globals(list(extra_safe_globals)):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in many types
        raise ValueError(f"cannot read FR checkpoint {path}: {err}") from err
    for _ in range(3):  # containers nest at most a couple of levels
        if not isinstance(obj, Mapping):
            break
        inner = next((obj[k] for k in CONTAINER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise ValueError(f"FR checkpoint {path} holds a {type(obj).__name__}, not a state dict")
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise ValueError(f"FR checkpoint {path} holds no tensors (keys: {list(obj)[:MAX_LISTED]})")
    return state


def fit_state_dict(
    net: nn.Module,
    state: Mapping[str, torch.Tensor],
    source: str | Path,
    strip_prefixes: Iterable[str] = ("module.",),
    drop_prefixes: Iterable[str] = (),
) -> None:
    """Load ``state`` into ``net`` strictly, after removing wrapper prefixes and unused heads.

    Args:
        net: Module to load into.
        state: Upstream state dict.
        source: File name for error messages.
        strip_prefixes: Prefixes removed from keys (the first that matches, repeatedly).
        drop_prefixes: Keys starting with these (after stripping) are ignored, e.g. a
            classification head (``head.``, ``logits.``).

    Raises:
        ValueError: Naming ``source`` and listing the first missing, unexpected and
            wrong-shaped keys when the state dict does not fit ``net``.
    """
    strip, drop = tuple(strip_prefixes), tuple(drop_prefixes)
    cleaned: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in strip:
                if key.startswith(prefix):
                    key, changed = key[len(prefix) :], True
        if drop and key.startswith(drop):
            continue
        cleaned[key] = value
    expected = net.state_dict()
    missing = [k for k in expected if k not in cleaned and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in cleaned if k not in expected]
    shapes = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in cleaned.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or shapes:
        raise ValueError(
            f"{source} does not fit {type(net).__name__} ({len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(shapes)} wrong-shaped keys); "
            f"missing: {missing[:MAX_LISTED]}; unexpected: {unexpected[:MAX_LISTED]}; "
            f"shape mismatches: {shapes[:MAX_LISTED]}. Is it the right architecture/depth?"
        )
    for key in expected:  # older checkpoints predate BatchNorm's counter
        if key.endswith("num_batches_tracked") and key not in cleaned:
            cleaned[key] = expected[key]
    net.load_state_dict(cleaned, strict=True)
    log.debug("loaded %d tensors from %s into %s", len(cleaned), source, type(net).__name__)


def load_upstream_checkpoint(
    spec: FRSpec,
    build_net: Callable[[], nn.Module],
    *,
    what: str,
    embedding_size: int,
    input_size: tuple[int, int] = (112, 112),
    colour: str = "RGB",
    template: str = "arcface_112",
    keep_prefixes: tuple[str, ...] = (),
    strip_prefixes: Iterable[str] = ("module.",),
    drop_prefixes: Iterable[str] = (),
    safe_globals: Iterable[type] = (),
) -> FRModel:
    """Read ``spec.weights``, build the network, load the weights strictly, wrap as ``FRModel``
    (``spec.pretrained=False``: the network as initialised, no file read).

    The weights are checked and read before the (possibly large) network is built.

    Args:
        spec: Builder spec; its weights are required.
        build_net: Makes the network (with ``dropout_p`` set) for the weights.
        what: Description of the expected file for the "set fr.weights" error.
        embedding_size: Embedding dimension D of the network.
        input_size: Aligned face ``(height, width)``.
        colour: Channel order the network was trained on (it converts RGB input itself).
        template: Alignment template name in ``fiqa.core.align``.
        keep_prefixes: When given, only keys starting with one of these are read (before
            stripping), e.g. the backbone of a file that also holds a head named like a layer.
        strip_prefixes: Wrapper prefixes removed from keys (``fit_state_dict``).
        drop_prefixes: Keys ignored after stripping, e.g. a classification head.
        safe_globals: Extra classes allowed while unpickling (Lightning checkpoints).

    Raises:
        ValueError: If no weights are given, the file cannot be read safely, or it does not fit
            the network (naming the missing, unexpected and wrong-shaped keys).
    """
    path, sha256 = None, ""
    if spec.pretrained:
        path = spec.require_weights(what).resolve()
        state = read_state_dict(path, safe_globals)
        if keep_prefixes:
            state = {key: value for key, value in state.items() if key.startswith(keep_prefixes)}
        sha256 = file_sha256(str(path))
    net = build_net()
    if path is not None:
        fit_state_dict(net, state, path, strip_prefixes=strip_prefixes, drop_prefixes=drop_prefixes)
    info = FRModelInfo(
        name=spec.name,
        embedding_size=embedding_size,
        input_size=input_size,
        colour=colour,
        template=template,
        weights_path=str(path or ""),
        weights_sha256=sha256,
    )
    return FRModel(net, info, spec.device)
