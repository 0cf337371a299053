"""Quality models sharing SFace's frozen trunk are scored from one FR pass (fiqa.quality.trunk
through fiqa.eval.qualities): the same scores as their ONNX exports, one trunk pass for all,
and a checkpoint whose trunk was changed falls back to its own file."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from fiqa.config.defaults import regressor_arguments
from fiqa.core.pairs import all_pairs
from fiqa.eval import qualities as qualities_mod
from fiqa.eval.matrix import set_embeddings
from fiqa.eval.qualities import QualitySources, method_qualities
from fiqa.eval.sets import EvalSet
from fiqa.extract import ExtractionSettings, Extractor, FaceSource, FREntry
from fiqa.quality.export import export_onnx
from fiqa.quality.model import QualityRegressor
from fiqa.quality.scoring import QualityScorer
from fiqa.quality.trunk import TrunkSpec, shared_trunk

# Frozen-trunk fits: Lightning notes the eval-mode BatchNorm layers; that is intended.
pytestmark = pytest.mark.filterwarnings("ignore:Found .* module\\(s\\) in eval mode")

SFACE = FREntry("sface", None, 4, False, {})  # the FR entry the checkpoints' trunks share
N_FACES = 10
ROWS = np.arange(2, N_FACES)  # the evaluation set: source rows 2..9


def face_images(n: int, seed: int) -> np.ndarray:
    """Smooth random uint8 faces (blurred noise: scores spread more than on white noise)."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (n, 112, 112, 3), np.uint8)
    return np.stack([cv2.GaussianBlur(face, (0, 0), 1.5 + i % 3) for i, face in enumerate(noise)])


def fit(directory: Path, name: str, seed: int, **arguments) -> tuple[Path, Path]:
    """A regressor fitted for one step on 4 faces: its checkpoint and ONNX export."""
    pl.seed_everything(seed, verbose=False)
    model = QualityRegressor(**regressor_arguments(lr=1e-2, **arguments))
    images = torch.from_numpy(face_images(4, seed)).permute(0, 3, 1, 2).float()
    samples = [{"image": images[i], "quality": torch.tensor(i / 4), "sample_id": torch.tensor(i)}
               for i in range(4)]  # fmt: skip
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(model, train_dataloaders=DataLoader(samples, batch_size=4))
    ckpt = directory / f"{name}.ckpt"
    trainer.save_checkpoint(ckpt)
    export_onnx(model.eval(), directory / f"{name}.onnx", dynamo=False)  # legacy: faster
    return ckpt, directory / f"{name}.onnx"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """Two ``freeze=trunk`` regressors (other seeds and heads) and a ``freeze=backbone`` one,
    all on the bundled SFace: ``{name: (checkpoint, onnx)}``."""
    root = tmp_path_factory.mktemp("shared-trunk")
    return {
        "linear": fit(root, "linear", 0, head="linear", freeze="trunk"),
        "mlp": fit(root, "mlp", 1, head="mlp", head_hidden=8, freeze="trunk"),
        "head_only": fit(root, "head_only", 2, head="mlp", head_hidden=8, freeze="backbone"),
    }


@pytest.fixture
def faces() -> np.ndarray:
    return face_images(N_FACES, 7)


def evaluation(faces: np.ndarray, root: Path, quality_models: dict, **model) -> tuple:
    """An evaluation set of ``faces[ROWS]`` and the quality sources of ``quality_models``
    (plus ``model`` when ``model_path`` / ``model_checkpoint`` are given)."""
    source = FaceSource("faces", len(faces), "arcface_112", f"faces-{root.name}", faces.__getitem__)
    data = EvalSet("faces", len(ROWS), all_pairs(ROWS % 3), source, ROWS)
    settings = ExtractionSettings(accelerator="cpu", devices=1, num_nodes=1, strategy="auto",
                                  precision="32-true", num_workers=0, part_rows=8192,
                                  progress=False)  # fmt: skip
    extractor = Extractor(root / "cache", settings)
    methods = [*(["model"] if model else []), *quality_models]
    sources = QualitySources(methods=methods, model_path=model.get("model_path"),
                             quality_models=quality_models, label_frs={}, label_settings={}, seed=0,
                             fr_defaults=SFACE, extractor=extractor,
                             cache_dir=root / "quality",
                             model_checkpoint=model.get("model_checkpoint"))  # fmt: skip
    return data, sources


def count_trunk_passes(extractor: Extractor, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The batch sizes of every ``forward_features`` call of the extractor's SFace network."""
    net = extractor.model(SFACE).net
    original, calls = net.forward_features, []

    def counted(x: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        return original(x)

    monkeypatch.setattr(net, "forward_features", counted, raising=False)
    return calls


def record_file_scoring(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The checkpoint paths evaluation scores from their own files, as they are scored."""
    from_file: list[Path] = []
    cached_scores = qualities_mod.cached_scores

    def recorded(data, path, options, cache_dir):
        from_file.append(Path(path))
        return cached_scores(data, path, options, cache_dir)

    monkeypatch.setattr(qualities_mod, "cached_scores", recorded)
    return from_file


def onnx_scores(path: Path, faces: np.ndarray) -> np.ndarray:
    return QualityScorer.from_path(path).score(faces[ROWS], batch_size=4)


def no_file_scoring(*args, **kwargs):
    raise AssertionError("a shared-trunk checkpoint must not be scored from its file")


def test_models_sharing_the_trunk_score_from_one_pass_as_their_onnx_files(
    models, faces, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (linear, linear_onnx), (mlp, mlp_onnx), (head_only, head_only_onnx) = models.values()
    data, sources = evaluation(faces, tmp_path, {"mlp": {"path": str(mlp), "fr_models": ["x"]},
                                                 "head_only": {"path": str(head_only)}},
                               model_path=linear_onnx, model_checkpoint=linear)  # fmt: skip
    calls = count_trunk_passes(sources.extractor, monkeypatch)
    monkeypatch.setattr(qualities_mod, "cached_scores", no_file_scoring)

    out = method_qualities(data, sources)

    assert calls == [4, 4]  # one pass over the set's 8 faces (not its source's 10) for all three
    for method, onnx in (("model", linear_onnx), ("mlp", mlp_onnx), ("head_only", head_only_onnx)):
        expected = onnx_scores(onnx, faces)
        assert out[method].values.shape == (len(ROWS),)
        assert np.max(np.abs(out[method].values - expected)) <= 1e-4, method
    assert out["mlp"].fr_models == {"x"}
    assert np.ptp(out["mlp"].values) > 0  # scores that tell faces apart, not a constant
    assert not np.allclose(out["model"].values, out["mlp"].values, atol=1e-3)  # other models

    again = method_qualities(data, sources)  # cached per model: no pass at all
    assert calls == [4, 4]
    for method in out:
        np.testing.assert_array_equal(again[method].values, out[method].values)


def perturbed(checkpoint: Path, target: Path) -> Path:
    """``checkpoint`` with one frozen trunk weight changed (a fine-tuned trunk, say)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    key = next(k for k in state["state_dict"] if k.startswith("backbone.trunk.")
               and k.endswith("conv.weight"))  # fmt: skip
    state["state_dict"][key].view(-1)[0] += 1e-2
    torch.save(state, target)
    return target


def test_a_changed_trunk_falls_back_to_scoring_its_own_file(
    models, faces, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    linear, _ = models["linear"]
    changed = perturbed(models["mlp"][0], tmp_path / "changed.ckpt")
    model = QualityRegressor.load_from_checkpoint(changed, map_location="cpu", pretrained=False)
    changed_onnx = Path(export_onnx(model.eval(), tmp_path / "changed.onnx", dynamo=False)["path"])
    assert shared_trunk(changed) == TrunkSpec("sface", None, {}, "trunk")  # the hparams say so
    data, sources = evaluation(faces, tmp_path, {"linear": {"path": str(linear)},
                                                 "changed": {"path": str(changed)}})  # fmt: skip
    calls = count_trunk_passes(sources.extractor, monkeypatch)
    from_file = record_file_scoring(monkeypatch)

    with caplog.at_level(logging.WARNING, logger="fiqa.quality.trunk"):
        out = method_qualities(data, sources)

    assert from_file == [changed]  # the changed checkpoint only; linear from the shared pass
    assert calls == [4, 4]
    assert "its frozen trunk is not the FR network's (1 of" in caplog.text
    assert np.max(np.abs(out["changed"].values - onnx_scores(changed_onnx, faces))) <= 1e-4
    assert np.max(np.abs(out["linear"].values - onnx_scores(models["linear"][1], faces))) <= 1e-4


def test_the_shared_pass_runs_on_the_sets_own_faces(faces, tmp_path: Path) -> None:
    """A split of a source is its own extraction source (its faces in row order, its own
    cache entry); a set that is its whole source keeps that source (and its cache entry)."""
    data, _ = evaluation(faces, tmp_path, {})
    split = data.own_source()
    assert split.n == len(ROWS) and split.fingerprint != data.source.fingerprint
    np.testing.assert_array_equal(split.faces(np.array([0, 3])), faces[ROWS[[0, 3]]])
    rows = np.arange(N_FACES)
    whole = EvalSet("all", N_FACES, all_pairs(rows % 3), data.source, rows)
    assert whole.own_source() is data.source


def test_a_split_is_embedded_alone_unless_its_source_is_cached(faces, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch):  # fmt: skip
    """The evaluation embeds a split's faces only (an FR model the labels never used), or reads
    the whole source's cache entry when there is one: the same unit embeddings either way."""
    data, sources = evaluation(faces, tmp_path, {})
    extractor = sources.extractor
    calls = count_trunk_passes(extractor, monkeypatch)
    alone = set_embeddings(data, SFACE, extractor)
    assert sum(calls) == len(ROWS)  # the split's faces, not the source's
    assert extractor.cached(SFACE, data.own_source()) and not extractor.cached(SFACE, data.source)
    extractor.outputs(SFACE, data.source)  # the label stage embeds the whole source
    calls.clear()
    from_source = set_embeddings(data, SFACE, extractor)
    assert calls == []  # read from the source's entry
    assert alone.shape == (len(ROWS), 128)
    np.testing.assert_allclose(from_source, alone, atol=2e-3)  # float16 cache rows


def hparams_checkpoint(path: Path, **overrides) -> Path:
    """A checkpoint file holding only what ``shared_trunk`` reads: the hyper-parameters."""
    torch.save({"hyper_parameters": regressor_arguments(**overrides), "state_dict": {}}, path)
    return path


@pytest.mark.parametrize(
    "overrides",
    [
        {"freeze": "none"},
        {"freeze": "trunk", "unfreeze_at_epoch": 2},
        {"freeze": "trunk", "pretrained": False},
        {"freeze": "backbone", "consistency_weight": 0.5},
    ],
)
def test_no_shared_trunk_when_the_frozen_part_is_not_the_pretrained_fr_model(
    tmp_path: Path, overrides: dict
) -> None:
    assert shared_trunk(hparams_checkpoint(tmp_path / "model.ckpt", **overrides)) is None


def test_shared_trunk_names_the_network_and_part(tmp_path: Path) -> None:
    options = {"dropout": 0.1}
    spec = shared_trunk(hparams_checkpoint(tmp_path / "a.ckpt", freeze="backbone",
                                           backbone_weights="/w/sface.onnx",
                                           backbone_options=options))  # fmt: skip
    assert spec == TrunkSpec("sface", "/w/sface.onnx", options, "backbone")
    assert spec.fr_entry(8) == FREntry("sface", "/w/sface.onnx", 8, False, options)
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    assert shared_trunk(tmp_path / "junk.ckpt") is None  # its scorer names the problem
