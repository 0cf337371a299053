"""Any ONNX face-recognition model as a black-box ``FRModel`` (registered as ``onnx``).

The graph runs in onnxruntime behind an ``nn.Module`` whose ``forward`` takes the pipeline's
float ``(N, 3, H, W)`` RGB 0..255 tensors, so ``FRModel.embed`` and the extraction loop use it
like any other network (it only embeds: no features, dropout head or gradients). Options (the
``options`` mapping of the ``fr`` config):

- ``input_size`` ``[h, w]``: default read from the graph when static, else 112x112.
- ``colour`` ``RGB`` | ``BGR``: channel order the model was trained on.
- ``mean``, ``std``: input normalisation ``(x - mean) / std`` in 0..255 units, scalars or three
  values in the model's channel order (default 127.5 / 127.5; 0 / 1 for graphs that normalise
  internally, such as OpenCV's SFace).
- ``layout`` ``NCHW`` | ``NHWC``: default read from a static graph (channels of size 3), else NCHW.
- ``template``: alignment template name (default ``arcface_112``), whose size must be the input size.
- ``embedding_size``: default from the graph output (checked against it when static).
- ``providers``: onnxruntime execution providers (default ``CPUExecutionProvider``; a requested
  ``CUDAExecutionProvider`` that this onnxruntime lacks is dropped with a warning).

Graphs with a fixed batch size run in chunks of that size (the last one zero-padded); graphs
that declare extra inputs no node consumes (OpenCV's SFace has 29) get zeros of their shapes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fiqa.core.align import get_template
from fiqa.core.provenance import file_sha256
from fiqa.fr.model import FRModel, FRModelInfo
from fiqa.fr.registry import FRSpec, register_fr_model

log = logging.getLogger(__name__)

DEFAULT_INPUT_SIZE = (112, 112)
LAYOUTS = ("NCHW", "NHWC")
COLOURS = ("RGB", "BGR")
_ORT_ERROR_ONLY = 3  # onnxruntime log severity: 0 verbose .. 3 error
# onnxruntime element types this wrapper can feed (image input: float types only).
NUMPY_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(bool)": np.bool_,
}
FLOAT_TYPES = ("tensor(float)", "tensor(float16)", "tensor(double)")


def _static(dim: Any) -> int | None:
    """A declared dimension as an int, or None when symbolic / unknown."""
    return int(dim) if isinstance(dim, int) and dim > 0 else None


def _node_inputs(graph: Any) -> Iterator[str]:
    """Names consumed by the nodes of ``graph`` and of its subgraphs (If / Loop bodies)."""
    import onnx  # deferred with the rest of the ONNX machinery

    for node in graph.node:
        yield from node.input
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _node_inputs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _node_inputs(sub)


def _consumed_inputs(path: Path) -> set[str]:
    """Graph input names some node reads (external weight files are not loaded)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf decoding raises several unrelated types
        raise ValueError(f"{path} is not an ONNX model ({type(err).__name__}: {err})") from err
    return set(_node_inputs(model.graph))


def _providers(requested: str | Sequence[str]) -> list[str]:
    """Requested onnxruntime providers that this build has (CPU always kept as the fallback)."""
    import onnxruntime as ort

    wanted = [requested] if isinstance(requested, str) else [str(p) for p in requested]
    available = ort.get_available_providers()
    kept = [p for p in wanted if p in available]
    for provider in wanted:
        if provider not in available:
            log.warning("onnxruntime provider %s is not available (have %s)", provider, available)
    if "CPUExecutionProvider" not in kept:
        kept.append("CPUExecutionProvider")
    return kept


def _vector(value: float | Sequence[float], key: str) -> torch.Tensor:
    """A scalar or 3-value normalisation option as a ``(1, 3, 1, 1)`` float32 tensor."""
    many = isinstance(value, Sequence) and not isinstance(value, str)
    values = [float(v) for v in value] if many else [float(value)]
    if len(values) not in (1, 3):
        raise ValueError(f"options.{key} must be one number or three, got {value!r}")
    return torch.tensor(values, dtype=torch.float32).expand(3).reshape(1, 3, 1, 1).clone()


class OnnxFRNet(nn.Module):
    """An onnxruntime session as a module: float ``(N, 3, H, W)`` RGB 0..255 -> ``(N, D)``.

    Holds no parameters; the session is rebuilt after unpickling (DDP spawn, workers).

    Args:
        path: ONNX file.
        providers: onnxruntime execution providers, in order of preference.
        mean: Subtracted value(s) in 0..255 units, in the model's channel order.
        std: Divisor(s) in 0..255 units.
        bgr: Reverse the channels (the model was trained on BGR).
        nhwc: Feed ``(N, H, W, 3)`` instead of ``(N, 3, H, W)``.

    Raises:
        ValueError: Naming ``path`` when it is not an ONNX model, its first input is not a
            4-D float image or its first output is not ``(N, D)``-like, or it needs inputs
            that cannot be fed zeros.
    """

    def __init__(
        self,
        path: Path,
        providers: Sequence[str],
        mean: float | Sequence[float] = 127.5,
        std: float | Sequence[float] = 127.5,
        bgr: bool = False,
        nhwc: bool = False,
    ) -> None:
        super().__init__()
        self.path, self.providers = Path(path), list(providers)
        self.mean, self.std = _vector(mean, "mean"), _vector(std, "std")
        if (self.std <= 0).any():
            raise ValueError(f"options.std must be > 0, got {std!r}")
        self.bgr, self.nhwc = bool(bgr), bool(nhwc)
        self._session: Any = None
        self._inspect()

    def _open(self) -> Any:
        import onnxruntime as ort  # deferred: only ONNX models need it

        if self._session is None:
            options = ort.SessionOptions()
            options.log_severity_level = _ORT_ERROR_ONLY
            try:
                self._session = ort.InferenceSession(
                    str(self.path), sess_options=options, providers=self.providers
                )
            except Exception as err:  # onnxruntime raises its own pybind error types
                raise ValueError(
                    f"onnxruntime cannot load {self.path} ({type(err).__name__}: {err}); "
                    "expected an ONNX face-recognition model"
                ) from err
        return self._session

    def _inspect(self) -> None:
        """Read the image input, the output and the extra inputs off the graph."""
        consumed = _consumed_inputs(self.path)
        session = self._open()
        image, *extra = session.get_inputs()
        if len(image.shape) != 4 or image.type not in FLOAT_TYPES:
            raise ValueError(
                f"{self.path}: first input {image.name!r} is {image.type} {image.shape}; an FR "
                "model needs a 4-D float image input (N, 3, H, W) or (N, H, W, 3)"
            )
        self.input_name, self.input_shape = image.name, list(image.shape)
        self.input_dtype = NUMPY_TYPES[image.type]
        self.batch = _static(image.shape[0])  # None: any batch size in one call
        self.extra_feeds: dict[str, np.ndarray] = {}
        for item in extra:
            dims = [_static(d) for d in item.shape]
            if item.name in consumed or None in dims or item.type not in NUMPY_TYPES:
                raise ValueError(
                    f"{self.path}: extra input {item.name!r} ({item.type} {item.shape}) is "
                    "used by the graph or has no fixed shape; only unused leftover inputs can "
                    "be fed zeros"
                )
            self.extra_feeds[item.name] = np.zeros(dims, dtype=NUMPY_TYPES[item.type])
        output = session.get_outputs()[0]
        self.output_name, self.output_shape = output.name, list(output.shape)
        inner = [_static(d) for d in output.shape[1:]]
        if not 2 <= len(output.shape) <= 4 or any(d not in (None, 1) for d in inner[1:]):
            raise ValueError(
                f"{self.path}: first output {output.name!r} has shape {output.shape}; an FR "
                "model outputs (N, D) embeddings"
            )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_session"] = None  # sessions do not pickle; reopened on first use
        return state

    def _run(self, batch: np.ndarray) -> np.ndarray:
        feeds = {self.input_name: batch, **self.extra_feeds}
        out = self._open().run([self.output_name], feeds)[0]
        return np.asarray(out, dtype=np.float32).reshape(len(batch), -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` float RGB 0..255 -> ``(N, D)`` float32 raw graph output."""
        if len(x) == 0:  # run one blank face for the output width, keep none of it
            return self.forward(torch.zeros(1, *x.shape[1:]))[:0].to(x.device)
        x = x.detach().float()
        if self.bgr:
            x = x.flip(1)
        x = (x - self.mean.to(x.device)) / self.std.to(x.device)
        if self.nhwc:
            x = x.permute(0, 2, 3, 1)
        array = np.ascontiguousarray(x.cpu().numpy(), dtype=self.input_dtype)
        if self.batch is None:
            out = self._run(array)
        else:  # fixed batch: chunks of that size, the last one zero-padded
            chunks = []
            for start in range(0, len(array), self.batch):
                part = array[start : start + self.batch]
                if len(part) < self.batch:
                    padded = np.zeros((self.batch, *array.shape[1:]), dtype=array.dtype)
                    padded[: len(part)] = part
                    part = padded
                chunks.append(self._run(part)[: len(array) - start])
            out = np.concatenate(chunks)
        return torch.from_numpy(out).to(x.device)

    def extra_repr(self) -> str:
        return f"path={str(self.path)!r}, batch={self.batch or 'dynamic'}, bgr={self.bgr}"


def _layout(net_shape: list[Any], option: str | None) -> str:
    """The option, else NHWC when a static graph has 3 channels last only, else NCHW."""
    if option is not None:
        layout = str(option).upper()
        if layout not in LAYOUTS:
            raise ValueError(f"options.layout must be one of {LAYOUTS}, got {option!r}")
        return layout
    dims = [_static(d) for d in net_shape]
    return "NHWC" if dims[3] == 3 and dims[1] != 3 else "NCHW"


def _input_size(net: OnnxFRNet, layout: str, option: Any) -> tuple[int, int]:
    """``(h, w)`` from the option, checked against a static graph; else the graph's; else 112."""
    channel_axis, h_axis, w_axis = (1, 2, 3) if layout == "NCHW" else (3, 1, 2)
    dims = [_static(d) for d in net.input_shape]
    if dims[channel_axis] not in (None, 3):
        raise ValueError(
            f"{net.path}: input {net.input_name!r} {net.input_shape} has "
            f"{dims[channel_axis]} channels in {layout} layout, expected 3 (set options.layout?)"
        )
    graph = (dims[h_axis], dims[w_axis])
    if option is not None:
        size = tuple(int(v) for v in option)
        if len(size) != 2 or min(size) <= 0:
            raise ValueError(f"options.input_size must be [height, width], got {option!r}")
        if any(g is not None and g != s for g, s in zip(graph, size, strict=True)):
            raise ValueError(
                f"{net.path}: options.input_size {list(size)} does not fit the graph input "
                f"{net.input_name!r} {net.input_shape} ({layout})"
            )
        return size[0], size[1]
    if None in graph:
        return DEFAULT_INPUT_SIZE
    return graph[0], graph[1]  # type: ignore[return-value]


def _embedding_size(net: OnnxFRNet, size: tuple[int, int], option: Any) -> int:
    """D from the option, checked against the graph; else the graph's static D; else one run."""
    static = [_static(d) for d in net.output_shape[1:]]
    graph = int(np.prod(static)) if None not in static else None
    if graph is None:  # symbolic output dims: measure them on one blank face
        graph = int(net(torch.zeros(1, 3, *size)).shape[1])
    if option is not None and int(option) != graph:
        raise ValueError(
            f"{net.path}: options.embedding_size={option} but output {net.output_name!r} "
            f"{net.output_shape} gives {graph}"
        )
    return graph


@register_fr_model("onnx")
def build_onnx(spec: FRSpec) -> FRModel:
    """A black-box FR model from any ONNX file (``spec.weights``); see the module docstring."""
    if not spec.pretrained:
        raise ValueError(f"{spec.name} is a black box: it cannot be built without its weights")
    path = spec.require_weights("an ONNX face-recognition model").resolve()
    colour = str(spec.option("colour", "RGB")).upper()
    if colour not in COLOURS:
        raise ValueError(f"options.colour must be one of {COLOURS}, got {colour!r}")
    # Probe with NCHW: only the layout decides the transpose, applied after it is known.
    net = OnnxFRNet(
        path,
        providers=_providers(spec.option("providers", ["CPUExecutionProvider"])),
        mean=spec.option("mean", 127.5),
        std=spec.option("std", 127.5),
        bgr=colour == "BGR",
    )
    layout = _layout(net.input_shape, spec.options.get("layout"))
    net.nhwc = layout == "NHWC"
    height, width = _input_size(net, layout, spec.options.get("input_size"))
    template_name = str(spec.option("template", "arcface_112"))
    template = get_template(template_name)
    if template.size != (width, height):
        raise ValueError(
            f"{path}: template {template_name!r} makes {template.size[0]}x{template.size[1]} "
            f"(w x h) faces but the model takes {width}x{height}; set options.template to a "
            "template of the model's input size (fiqa.core.align.register_template)"
        )
    info = FRModelInfo(
        name=spec.name,
        embedding_size=_embedding_size(net, (height, width), spec.options.get("embedding_size")),
        input_size=(height, width),
        colour=colour,
        template=template_name,
        weights_path=str(path),
        weights_sha256=file_sha256(str(path)),
        white_box=False,
    )
    log.debug("ONNX FR model %s: %s", path, net)
    return FRModel(net, info, spec.device)
