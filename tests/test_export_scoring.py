"""ONNX export of the quality regressor and the ckpt/ONNX scorer."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader

import fiqa
from fiqa.config import compose_config
from fiqa.config.defaults import regressor_arguments
from fiqa.config.typed import typed
from fiqa.data.preparation import PrepareSettings
from fiqa.quality import export as export_mod
from fiqa.quality.calibration import Calibration
from fiqa.quality.export import ExportMismatchError, export_onnx
from fiqa.quality.model import QualityRegressor
from fiqa.quality.scoring import NOT_ALIGNED, QualityScorer

# Frozen-backbone fits: Lightning notes the eval-mode BatchNorm layers; that is intended.
pytestmark = pytest.mark.filterwarnings("ignore:Found .* module\\(s\\) in eval mode")


def random_faces(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 112, 112, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[QualityRegressor, Path, Path]:
    """A briefly fitted regressor, its checkpoint and its ONNX export.

    The fixture uses the legacy TorchScript exporter (~2 s); the default dynamo exporter
    (~10 s) is checked by the slow test below with the same assertions.
    """
    root = tmp_path_factory.mktemp("quality-model")
    pl.seed_everything(0, verbose=False)
    model = QualityRegressor(
        **regressor_arguments(head="mlp", head_hidden=16, freeze="backbone", lr=1e-2)
    )
    faces = torch.from_numpy(random_faces(4, 0)).permute(0, 3, 1, 2).float()
    samples = [
        {"image": faces[i], "quality": torch.tensor(i / 4), "sample_id": torch.tensor(i)}
        for i in range(4)
    ]
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, train_dataloaders=DataLoader(samples, batch_size=4))
    model.eval()
    with torch.no_grad():  # as the train stage: the calibration of its scores of some faces
        raw = model(torch.from_numpy(random_faces(64, 2)).permute(0, 3, 1, 2).float())
    model.calibration = Calibration.fit(raw.numpy()).to_dict()
    ckpt = root / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    model.eval()
    report = export_onnx(model, root / "model.onnx", dynamo=False)
    assert report["max_abs_diff"] <= 1e-4 and report["exporter"] == "torchscript"
    return model, ckpt, Path(report["path"])


def check_onnx_file(model: QualityRegressor, onnx_path: Path) -> None:
    """One self-contained file, named input/output, dynamic batch, matches torch."""
    others = [p.name for p in onnx_path.parent.iterdir() if p.suffix != ".ckpt"]
    assert others == [onnx_path.name]  # no external-data or temporary files
    proto = onnx.load(str(onnx_path), load_external_data=False)
    assert not any(
        init.data_location == onnx.TensorProto.EXTERNAL for init in proto.graph.initializer
    )
    meta = {p.key: p.value for p in proto.metadata_props}
    assert "RGB 0..255" in meta["fiqa.input"] and '"head": "mlp"' in meta["fiqa.hparams"]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["faces"]
    assert [o.name for o in session.get_outputs()] == ["quality"]
    for n in (1, 5):
        faces = torch.rand(n, 3, 112, 112) * 255
        (got,) = session.run(None, {"faces": faces.numpy()})
        with torch.no_grad():
            expected = model(faces).numpy()
        assert got.shape == (n,)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_export_is_single_file_with_dynamic_batch(
    trained: tuple[QualityRegressor, Path, Path],
) -> None:
    model, _, onnx_path = trained
    check_onnx_file(model, onnx_path)
    assert not model.training  # export restored the mode it found


@pytest.mark.slow
def test_dynamo_export_is_single_file_with_dynamic_batch(
    trained: tuple[QualityRegressor, Path, Path], tmp_path: Path
) -> None:
    model = trained[0]
    model.train()
    report = export_onnx(model, tmp_path / "dynamo.onnx")
    assert report["exporter"] == "dynamo" and report["max_abs_diff"] <= 1e-4
    assert model.training  # export restored the mode it found
    model.eval()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dynamo.onnx"]
    check_onnx_file(model, tmp_path / "dynamo.onnx")
    # no per-node stack traces: the file names no path of this checkout (same bytes anywhere)
    data = (tmp_path / "dynamo.onnx").read_bytes()
    assert b"stack_trace" not in data and str(Path(fiqa.__file__).parent).encode() not in data


def test_export_mismatch_leaves_no_file(
    trained: tuple[QualityRegressor, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = trained[0]
    monkeypatch.setattr(export_mod, "compare_with_torch", lambda *args, **kwargs: 0.5)
    target = tmp_path / "bad.onnx"
    with pytest.raises(ExportMismatchError, match=r"max abs diff vs torch 0\.5 > atol"):
        export_onnx(model, target, dynamo=False)  # legacy exporter: faster, same contract
    assert list(tmp_path.iterdir()) == []


def test_scorer_ckpt_and_onnx_agree(trained: tuple[QualityRegressor, Path, Path]) -> None:
    model, ckpt, onnx_path = trained
    faces = random_faces(7, 1)
    from_ckpt = QualityScorer.from_path(ckpt).score(faces, batch_size=3)
    from_onnx = QualityScorer.from_path(onnx_path).score(faces, batch_size=3)
    assert from_ckpt.dtype == np.float32 and from_ckpt.shape == (7,)
    np.testing.assert_allclose(from_ckpt, from_onnx, rtol=0, atol=1e-4)
    with torch.no_grad():
        direct = model(torch.from_numpy(faces).permute(0, 3, 1, 2).float()).numpy()
    np.testing.assert_allclose(from_ckpt, direct, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match=r"faces are \(100, 112\), the model takes \(112, 112\)"):
        QualityScorer.from_path(onnx_path).score(faces[:, :100])


def test_calibration_survives_onnx_export(trained: tuple[QualityRegressor, Path, Path]) -> None:
    model, ckpt, onnx_path = trained
    scorers = [QualityScorer.from_path(path) for path in (ckpt, onnx_path)]
    assert (
        scorers[0].calibration == scorers[1].calibration == Calibration.from_dict(model.calibration)
    )
    faces = random_faces(200, 3)
    table = pd.DataFrame({"quality": scorers[1].score(faces)})
    scaled = [s.with_scale(pd.DataFrame({"quality": s.score(faces)})) for s in scorers]
    # raw scores agree to 1e-4, so the integers agree up to a rounding edge
    assert np.abs(scaled[0]["quality_0_100"] - scaled[1]["quality_0_100"]).max() <= 1
    by_0_100 = scorers[1].with_scale(table, "0-100")
    assert list(by_0_100.columns) == ["quality_raw", "quality"]
    order = np.argsort(by_0_100["quality_raw"].to_numpy())
    assert (np.diff(by_0_100["quality"].to_numpy()[order]) >= 0).all()  # the raw ranking kept


def test_score_files_records_failures(
    trained: tuple[QualityRegressor, Path, Path], tmp_path: Path
) -> None:
    onnx_path = trained[2]
    faces = random_faces(3, 2)
    paths = []
    for i, face in enumerate(faces):
        paths.append(tmp_path / f"good{i}.png")
        Image.fromarray(face).save(paths[-1])
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    Image.fromarray(random_faces(1, 3)[0, :100, :90]).save(tmp_path / "small.png")
    order = [paths[0], tmp_path / "broken.jpg", paths[1], tmp_path / "small.png", paths[2]]
    order.append(tmp_path / "missing.png")

    scorer = QualityScorer.from_path(onnx_path)
    table = scorer.score_files(order, batch_size=2, mode="aligned")
    assert list(table.columns) == ["path", "quality", "failure"]
    assert table["path"].tolist() == [str(p) for p in order]
    failure = table["failure"].tolist()
    assert failure[0] is None and failure[2] is None and failure[4] is None
    assert failure[3] == NOT_ALIGNED
    assert isinstance(failure[1], str) and isinstance(failure[5], str)
    assert all(math.isnan(q) for q in table["quality"].iloc[[1, 3, 5]])
    np.testing.assert_allclose(
        table["quality"].iloc[[0, 2, 4]].to_numpy(), scorer.score(faces), rtol=0, atol=1e-6
    )


def test_from_path_rejects_unknown_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="run the train stage"):
        QualityScorer.from_path(tmp_path / "absent.onnx")
    (tmp_path / "model.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"expected a \.ckpt or \.onnx"):
        QualityScorer.from_path(tmp_path / "model.pt")


def test_raw_photos_are_detected_and_aligned_and_auto_keeps_aligned_faces(
    trained: tuple[QualityRegressor, Path, Path], tmp_path: Path
) -> None:
    """A photo is detected and aligned; an already aligned face scores the same through auto
    (taken as aligned: identical) and through forced raw (re-detected: nearly identical)."""
    from skimage.data import astronaut

    scorer = QualityScorer.from_path(trained[2])
    photo = tmp_path / "astronaut.png"
    Image.fromarray(astronaut()).save(photo)
    aligner = typed(compose_config().prepare, PrepareSettings).aligner()  # as prepare aligns
    face, _ = aligner.align(0, {"path": str(photo)}, astronaut())
    aligned = tmp_path / "aligned.png"
    Image.fromarray(face).save(aligned)
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((200, 160, 3), 90, np.uint8)).save(blank)

    auto = scorer.score_files([photo, aligned, blank], mode="auto", aligner=aligner)
    assert auto["failure"].tolist() == [None, None, "no_face"]
    expected = scorer.score(face[None])[0]
    assert auto["quality"][0] == pytest.approx(expected, abs=1e-6)  # the photo, aligned here
    assert auto["quality"][1] == pytest.approx(expected, abs=1e-6)  # the face as given
    raw = scorer.score_files([aligned], mode="raw", aligner=aligner)
    assert raw["failure"][0] is None
    assert raw["quality"][0] == pytest.approx(expected, abs=0.05)


def test_score_prepared_and_external_onnx_input_conventions(
    trained: tuple[QualityRegressor, Path, Path], tmp_path: Path
) -> None:
    """Scoring a prepared directory follows its manifest; a foreign ONNX graph that wants BGR
    input in [-1, 1] scores like fiqa's own graph once its convention is given."""
    from fiqa.data.preparation import write_prepared
    from fiqa.quality.export import INPUT_NAME, OUTPUT_NAME

    model, _, onnx_path = trained
    faces = random_faces(5, 4)
    write_prepared(tmp_path / "prepared", faces, ["a", "a", "b", "b", "c"])
    table = QualityScorer.from_path(onnx_path).score_prepared(tmp_path / "prepared", batch_size=2)
    assert table["identity"].tolist() == ["a", "a", "b", "b", "c"]
    np.testing.assert_allclose(table["quality"], QualityScorer.from_path(onnx_path).score(faces),
                               atol=1e-6)  # fmt: skip

    class Foreign(torch.nn.Module):  # BGR in [-1, 1] -> fiqa's RGB 0..255
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner((x.flip(1) * 127.5) + 127.5)

    foreign = tmp_path / "foreign.onnx"
    torch.onnx.export(Foreign().eval(), (torch.rand(2, 3, 112, 112),), str(foreign),
                      input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamo=False,
                      dynamic_axes={INPUT_NAME: {0: "b"}})  # fmt: skip
    options = {"colour": "BGR", "mean": 127.5, "std": 127.5}
    scorer = QualityScorer.from_path(foreign, onnx_options=options)
    assert (scorer.template, scorer.input_size) == ("arcface_112", (112, 112))
    np.testing.assert_allclose(scorer.score(faces), table["quality"], atol=1e-4)


def test_files_that_are_no_quality_model_are_named(tmp_path: Path) -> None:
    """Before: raw library errors that name no file (``Unsupported operand 155``,
    ``KeyError: 'pytorch-lightning_version'``, onnxruntime's ``Required inputs ... missing``)."""
    from fiqa.fr.sface import default_sface_path
    from fiqa.quality.scoring import QualityModelError

    def rejected(path: Path, message: str) -> None:
        with pytest.raises(QualityModelError, match=re.escape(f"{path} {message}")):
            QualityScorer.from_path(path)

    noise = tmp_path / "noise.ckpt"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    rejected(noise, "is not a fiqa quality checkpoint: torch.load cannot read it")
    plain = tmp_path / "plain.ckpt"
    torch.save({"a": 1}, plain)
    rejected(plain, "is not a fiqa quality checkpoint: it is a torch file but no Lightning "
             "checkpoint (a dict with keys ['a']")  # fmt: skip
    other = tmp_path / "other.ckpt"
    torch.save({"pytorch-lightning_version": "2", "state_dict": {}, "hyper_parameters": {"x": 1}},
               other)  # fmt: skip
    rejected(other, "is not a fiqa quality checkpoint: it is a Lightning checkpoint of another")
    rejected(default_sface_path(), "is not a fiqa quality model (it outputs fc1 of shape (1, 128)")
    garbage = tmp_path / "noise.onnx"
    garbage.write_bytes(np.random.default_rng(1).bytes(4096))
    rejected(garbage, "is not a fiqa quality model: onnxruntime cannot load it")


def test_fiqa_score_names_missing_inputs_and_fails_when_nothing_exists(
    trained: tuple[QualityRegressor, Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: a nonexistent path was one failure row and the exit code 0."""
    from fiqa.cli.main import main

    onnx_path = trained[2]
    out = tmp_path / "scores.csv"
    absent = tmp_path / "absent.png"
    assert main(["score", "--checkpoint", str(onnx_path), str(absent), "--out", str(out)]) == 1
    assert f"fiqa score: no such file or folder: {absent}; nothing was scored" in (
        capsys.readouterr().err
    )
    assert not out.exists()

    face = tmp_path / "face.png"
    Image.fromarray(random_faces(1, 5)[0]).save(face)
    with caplog.at_level("INFO", logger="fiqa"):
        code = main(["score", "--checkpoint", str(onnx_path), str(face), str(absent),
                     "--out", str(out)])  # fmt: skip
    assert code == 0
    assert f"scored 2 images (1 failed, 1 of them missing: {absent})" in caplog.text
    table = pd.read_csv(out)
    assert table["failure"].fillna("").tolist() == ["", "missing"]

    noise = tmp_path / "noise.ckpt"
    noise.write_bytes(b"\x00" * 64)
    assert main(["score", "--checkpoint", str(noise), str(face), "--out", str(out)]) == 1
    assert f"fiqa score: {noise} is not a fiqa quality checkpoint" in capsys.readouterr().err
