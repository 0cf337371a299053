"""PyTorch FR architectures that read upstream checkpoints (iResNet, MagFace, AdaFace, FaceNet,
MobileFaceNet): upstream key names and parameter counts, loading from each upstream file layout,
and the white-box contract (features / dropout head / low-level features / flip embedding).

No real weights are needed: each network gets random weights, is saved the way its upstream
project saves it, and is read back through ``load_fr_model``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fiqa.fr.checkpoint as checkpoint_module
from fiqa.core.align import ALIGNMENT_TEMPLATES, similarity_transform
from fiqa.core.provenance import file_sha256
from fiqa.fr import FRModel, load_fr_model
from fiqa.fr.adaface import AdaFaceIR
from fiqa.fr.facenet import InceptionResnetV1
from fiqa.fr.iresnet import IResNet
from fiqa.fr.layers import InputNorm
from fiqa.fr.mobilefacenet import MobileFaceNet

BATCH = 2


def bare(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """insightface ``backbone.pth``: the state dict itself."""
    return dict(state)


def magface_file(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """MagFace release: ``features.module.`` backbone next to the MagLinear ``fc.weight``."""
    nested = {f"features.module.{k}": v for k, v in state.items()}
    return {
        "epoch": 25,
        "arch": "iresnet",
        "state_dict": nested | {"fc.weight": torch.randn(512, 7)},
    }


def adaface_file(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """AdaFace Lightning ``.ckpt``: ``model.`` backbone, ``head.kernel``, pickled hyper-params."""
    nested = {f"model.{k}": v for k, v in state.items()}
    return {
        "epoch": 24,
        "pytorch-lightning_version": "1.8.6",
        "state_dict": nested | {"head.kernel": torch.randn(512, 7)},
        "hyper_parameters": argparse.Namespace(arch="ir_50", head="adaface", m=0.4),
    }


def facenet_file(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """facenet-pytorch ``.pt``: the state dict with its ``logits`` classifier."""
    return dict(state) | {"logits.weight": torch.randn(7, 512), "logits.bias": torch.randn(7)}


def magface_net(depth: int) -> Callable[[], nn.Module]:
    """MagFace's iResNet: BGR input in [0, 1], BatchNorm eps 2e-5, Dropout2d before fc."""
    return lambda: IResNet(
        depth, input_norm=InputNorm(0.0, 255.0, bgr=True), bn_eps=2e-5, channel_dropout=True
    )


def iresnet_keys(last_layer3: int) -> tuple[str, ...]:
    return (
        "conv1.weight", "bn1.running_var", "prelu.weight", "layer1.0.downsample.0.weight",
        "layer1.0.downsample.1.running_mean", f"layer3.{last_layer3}.conv2.weight",
        "layer4.0.bn3.weight", "bn2.weight", "fc.weight", "fc.bias", "features.running_mean",
    )  # fmt: skip


def adaface_keys(last_unit: int) -> tuple[str, ...]:
    return (
        "input_layer.0.weight", "input_layer.2.weight", "body.0.res_layer.5.running_var",
        "body.3.shortcut_layer.0.weight", "body.3.shortcut_layer.1.bias",
        f"body.{last_unit}.res_layer.4.weight", "output_layer.0.weight", "output_layer.3.weight",
        "output_layer.4.running_var",
    )  # fmt: skip


FACENET_KEYS = (
    "conv2d_1a.conv.weight", "conv2d_4b.bn.running_mean", "repeat_1.4.branch2.2.conv.weight",
    "repeat_2.9.branch1.2.bn.weight", "mixed_6a.branch1.2.conv.weight",
    "mixed_7a.branch2.2.conv.weight", "repeat_3.4.conv2d.bias", "block8.conv2d.weight",
    "last_linear.weight", "last_bn.running_var",
)  # fmt: skip
MOBILEFACENET_KEYS = (
    "layers.0.layers.0.weight", "layers.1.layers.2.weight", "layers.2.layers.1.layers.0.weight",
    "layers.3.layers.3.layers.2.layers.1.running_var", "layers.7.layers.1.layers.0.layers.0.weight",
    "conv_sep.layers.0.weight", "features.layers.0.layers.0.weight", "features.layers.2.weight",
    "features.layers.3.running_mean",
)  # fmt: skip


@dataclass(frozen=True)
class Arch:
    name: str
    make: Callable[[], nn.Module]
    params: int  # exact parameter count of the upstream module (iResNet: including fc)
    keys: tuple[str, ...]
    upstream_file: Callable[[dict[str, torch.Tensor]], dict[str, Any]]
    colour: str = "RGB"
    size: int = 112
    low_level_dim: int = 64 * 16
    full: bool = False  # also round-trip real weights (smallest of each family + release models)


ARCHS = [
    Arch("iresnet18", lambda: IResNet(18), 24_025_600, iresnet_keys(1), bare, full=True),
    Arch("iresnet34", lambda: IResNet(34), 34_139_328, iresnet_keys(5), bare),
    Arch("iresnet50", lambda: IResNet(50), 43_590_848, iresnet_keys(13), bare),
    Arch("iresnet100", lambda: IResNet(100), 65_156_160, iresnet_keys(29), bare, full=True),
    Arch("iresnet200", lambda: IResNet(200), 118_833_920, iresnet_keys(59), bare),
    Arch(
        "magface_iresnet50", magface_net(50), 43_590_848, iresnet_keys(13), magface_file, "BGR",
        full=True,
    ),
    Arch(
        "magface_iresnet100", magface_net(100), 65_156_160, iresnet_keys(29), magface_file, "BGR",
        full=True,  # the MagFace release model
    ),
    Arch(
        "adaface_ir50", lambda: AdaFaceIR(50), 43_585_600, adaface_keys(23), adaface_file, "BGR",
        full=True,
    ),
    Arch("adaface_ir101", lambda: AdaFaceIR(101), 65_150_912, adaface_keys(48), adaface_file, "BGR"),
    Arch(
        "facenet_vggface2", InceptionResnetV1, 23_482_624, FACENET_KEYS, facenet_file, size=160,
        full=True,
    ),
    Arch("facenet_casia", InceptionResnetV1, 23_482_624, FACENET_KEYS, facenet_file, size=160),
    Arch(
        "mobilefacenet", MobileFaceNet, 2_059_520, MOBILEFACENET_KEYS, bare, low_level_dim=128 * 16,
        full=True,
    ),
]  # fmt: skip
FULL = [a for a in ARCHS if a.full]


def calibrated(net: nn.Module, size: int) -> nn.Module:
    """Random weights with BatchNorm statistics from one batch, so activations keep unit scale as
    in a trained net (default-initialised deep nets decay into slow denormals and ~0 outputs)."""
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d)]
    for norm in norms:
        norm.momentum = 1.0
    net.train()
    with torch.no_grad():
        net(torch.rand(4, 3, size, size) * 255)
    for norm in norms:
        norm.momentum = 0.1
    return net.eval()


def save_upstream(arch: Arch, net: nn.Module, path: Path) -> Path:
    torch.save(arch.upstream_file(net.state_dict()), path)
    return path


def build_on_meta(
    config: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dropout: float = 0.0
) -> FRModel:
    """Run a registered builder with the network on the meta device and checkpoint IO stubbed:
    which module, size and options a name yields, without allocating or reading any weights."""
    monkeypatch.setattr(checkpoint_module, "read_state_dict", lambda path, safe_globals=(): {})
    monkeypatch.setattr(checkpoint_module, "fit_state_dict", lambda net, state, source, **kw: None)
    dummy = tmp_path / "stub.pth"
    dummy.write_bytes(b"stub")
    with torch.device("meta"):
        return load_fr_model(config | {"weights": str(dummy)}, device="meta", dropout=dropout)


@pytest.mark.parametrize("arch", ARCHS, ids=[a.name for a in ARCHS])
def test_registered_name_builds_the_upstream_layout(
    arch: Arch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = build_on_meta({"name": arch.name}, tmp_path, monkeypatch)
    net = model.net
    with torch.device("meta"):
        reference = arch.make()
    assert repr(net) == repr(reference)  # same modules, eps, input normalisation
    missing = [key for key in arch.keys if key not in net.state_dict()]
    assert not missing, f"{arch.name} lost upstream keys {missing}"
    assert sum(p.numel() for p in net.parameters()) == arch.params
    info = model.info
    assert (info.name, info.embedding_size, info.colour) == (arch.name, 512, arch.colour)
    assert info.input_size == (arch.size, arch.size)
    assert info.template == ("facenet_160" if arch.size == 160 else "arcface_112")
    x = torch.empty(BATCH, 3, arch.size, arch.size, device="meta")
    features = net.forward_features(x)
    assert features.ndim == 2 and len(features) == BATCH
    assert net.forward_head(features, dropout=0.5).shape == (BATCH, 512)
    assert net(x).shape == (BATCH, 512)
    assert net.forward_low_level(x).shape == (BATCH, arch.low_level_dim)


def test_options_and_dropout_reach_the_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = {"num_features": 128, "fp16": True}
    model = build_on_meta({"name": "iresnet18", "options": options}, tmp_path, monkeypatch, 0.25)
    assert model.embedding_size == 128 and model.net.fc.out_features == 128
    assert model.net.fp16 and model.net.dropout_p == 0.25
    large = {"blocks": [2, 8, 12, 4], "scale": 4}  # arcface_torch get_mbf_large
    mbf = build_on_meta({"name": "mobilefacenet", "options": large}, tmp_path, monkeypatch)
    assert sum(p.numel() for p in mbf.net.parameters()) == 6_314_880


@dataclass
class Loaded:
    arch: Arch
    original: nn.Module
    model: FRModel
    path: Path
    faces: np.ndarray  # (BATCH, size, size, 3) uint8


@pytest.fixture(scope="module", params=FULL, ids=[a.name for a in FULL])
def loaded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Loaded]:
    """One architecture at a time: random net saved upstream-style and loaded by name."""
    arch: Arch = request.param
    torch.manual_seed(0)
    net = calibrated(arch.make(), arch.size)
    path = save_upstream(arch, net, tmp_path_factory.mktemp(arch.name) / "weights.pt")
    model = load_fr_model({"name": arch.name, "weights": str(path)})
    faces = np.random.default_rng(0).integers(0, 256, (BATCH, arch.size, arch.size, 3), np.uint8)
    yield Loaded(arch, net, model, path, faces)


def test_upstream_file_loads_to_identical_outputs(loaded: Loaded) -> None:
    x = loaded.model.preprocess(loaded.faces)
    with torch.no_grad():
        ours, original = loaded.model.net(x), loaded.original(x)
    assert ours.shape == (BATCH, 512)
    assert original.abs().max() > 0.1  # a meaningful comparison, not zeros against zeros
    assert torch.equal(ours, original)
    assert loaded.model.info.weights_sha256 == file_sha256(str(loaded.path))


def test_any_input_layout_runs_channels_last_to_the_same_embeddings(loaded: Loaded) -> None:
    """A contiguous NCHW batch (a DDPM's reconstruction) gives the embeddings of the same batch
    in the NHWC strides ``preprocess`` makes: the network normalises the layout itself."""
    x = loaded.model.preprocess(loaded.faces)
    nchw = x.contiguous()
    assert not nchw.is_contiguous(memory_format=torch.channels_last)
    assert loaded.model.net.input_norm(nchw).is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.net(nchw), loaded.model.net(x), rtol=0, atol=1e-5)


def test_flip_embedding_is_normalised_mean_of_face_and_mirror(loaded: Loaded) -> None:
    model = loaded.model
    x = model.preprocess(loaded.faces)
    with torch.no_grad():
        expected = F.normalize((model.net(x) + model.net(x.flip(3))) / 2, dim=1)
    got = model.embed(loaded.faces, flip=True)
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-5)
    assert not np.allclose(got, model.embed(loaded.faces), atol=1e-3)


def test_head_of_features_equals_forward_and_dropout_changes_it(loaded: Loaded) -> None:
    net = loaded.model.net
    x = loaded.model.preprocess(loaded.faces)
    with torch.no_grad():
        features = net.forward_features(x)
        torch.testing.assert_close(net.forward_head(features), net(x), rtol=1e-5, atol=1e-5)
        dropped = net.forward_head(features, dropout=0.5)  # eval mode, still applied
    assert not torch.allclose(dropped, net.forward_head(features), atol=1e-3)


def test_low_level_features_are_finite_float32(loaded: Loaded) -> None:
    pooled = loaded.model.low_level(loaded.faces)
    assert pooled.shape == (BATCH, loaded.arch.low_level_dim)
    assert pooled.dtype == torch.float32 and torch.isfinite(pooled).all()
    assert pooled.std() > 0


def test_forward_uses_dropout_p_only_in_train_mode(
    loaded: Loaded, monkeypatch: pytest.MonkeyPatch
) -> None:
    net, seen = loaded.model.net, []
    monkeypatch.setattr(net, "dropout_p", 0.3)
    monkeypatch.setattr(net, "forward_features", lambda x: torch.zeros(len(x), 4))
    monkeypatch.setattr(net, "forward_head", lambda f, dropout=0.0: seen.append(dropout) or f)
    net.train()
    net(torch.zeros(1, 3, 8, 8))
    net.eval()
    net(torch.zeros(1, 3, 8, 8))
    assert seen == [0.3, 0.0]


@pytest.fixture(scope="module")
def iresnet18_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An arcface_torch-style bare iresnet18 state dict."""
    path = tmp_path_factory.mktemp("r18") / "backbone.pth"
    return save_upstream(ARCHS[0], IResNet(18), path)


def test_checkpoint_of_another_depth_names_missing_keys(iresnet18_file: Path) -> None:
    with pytest.raises(ValueError, match="missing") as caught:
        load_fr_model({"name": "iresnet34", "weights": str(iresnet18_file)})
    assert "layer1.2.bn1.weight" in str(caught.value) and str(iresnet18_file) in str(caught.value)


def test_magface_reads_only_its_features_module_backbone(iresnet18_file: Path) -> None:
    """A bare arcface_torch file has no ``features.module.`` keys: nothing of it may load."""
    with pytest.raises(ValueError, match=r"0 unexpected") as caught:
        load_fr_model({"name": "magface_iresnet50", "weights": str(iresnet18_file)})
    assert "conv1.weight" in str(caught.value)  # listed as missing


@pytest.mark.parametrize("name", [a.name for a in ARCHS])
def test_weights_are_required(name: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"fr\.weights"):
        load_fr_model(name)
    with pytest.raises(FileNotFoundError):
        load_fr_model({"name": name, "weights": str(tmp_path / "absent.pth")})


def test_facenet_template_is_a_scaled_arcface_template() -> None:
    facenet, arcface = ALIGNMENT_TEMPLATES["facenet_160"], ALIGNMENT_TEMPLATES["arcface_112"]
    assert facenet.size == (160, 160)
    matrix = similarity_transform(arcface.points, facenet.points)
    mapped = arcface.points @ matrix[:, :2].T + matrix[:, 2]
    np.testing.assert_allclose(mapped, facenet.points, atol=1e-9)  # no distortion
    np.testing.assert_allclose(matrix[:, :2], 1.687 * np.eye(2), atol=1e-9)  # no rotation
    assert abs(facenet.points[:, 0].mean() - 80.0) < 1e-9  # centred horizontally
