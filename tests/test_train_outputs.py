"""The train stage's outputs: staged and published in one rename, resumable after a SIGKILL to
the same weights, refusing another run's checkpoint and labels of another prepared set."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from omegaconf import DictConfig

from fiqa.config import compose_config
from fiqa.config.labels import label_job
from fiqa.config.training import train_job
from fiqa.config.validate import load_settings
from fiqa.core.atomic import write_json_atomic
from fiqa.core.containers import differences
from fiqa.core.lineage import LineageError, check_inputs, check_lineage, input_hashes
from fiqa.label.table import target_settings
from fiqa.stages import StageError
from fiqa.stages.runner import run_stage
from fiqa.train.datamodule import SeededShuffleSampler

TESTS = Path(__file__).resolve().parent
# 16 train faces in batches of 4: 4 steps per epoch, 2 epochs.
TINY = ["logger=none", "trainer.max_epochs=2", "train.batch_size=4", "train.val_edc=false",
        "trainer.enable_progress_bar=false", "extract.progress=false"]  # fmt: skip

# A train run in a fresh interpreter that SIGKILLs itself at a chosen point.
KILLED_RUN = """
import os, signal, sys
from fiqa.config import compose_config
from fiqa.stages.runner import run_stage
import fiqa.train.fit as fit
from fiqa.quality.model import QualityRegressor
where, at = sys.argv[2], int(sys.argv[3])
def die():
    os.kill(os.getpid(), signal.SIGKILL)
if where == "step":  # before optimiser step `at`
    step = QualityRegressor.training_step
    def training_step(self, batch, idx):
        if self.trainer.global_step == at:
            die()
        return step(self, batch, idx)
    QualityRegressor.training_step = training_step
else:  # while exporting the trained model
    fit.export_onnx = lambda *args, **kwargs: die()
run_stage("train", compose_config([f"paths.root={sys.argv[1]}", *sys.argv[4:]]))
"""


def labelled_root(root: Path) -> Path:
    """``root/data/prepared`` and ``root/data/labels/labels.parquet``: the tiny graded-blur set of
    test_train_module (no labels.json: hand-made labels carry no lineage)."""
    sys.path.insert(0, str(TESTS))
    from test_train_module import make_prepared

    labels = make_prepared(root / "data")
    (root / "data" / "labels").mkdir(parents=True)
    os.replace(labels, root / "data" / "labels" / "labels.parquet")
    return root


def label_record(cfg: DictConfig) -> dict:
    """The part of ``labels.json`` the label stage writes for ``cfg`` that train checks."""
    job = label_job(load_settings(cfg))
    return {"target": job.target, "target_settings": target_settings(job),
            "fr_models": {name: {} for name in job.fr_models}}  # fmt: skip


def train(root: Path, *overrides: str) -> dict[str, float]:
    return run_stage("train", compose_config([f"paths.root={root}", *TINY, *overrides]))


def killed_train(root: Path, where: str, at: int, *overrides: str) -> None:
    args = [sys.executable, "-c", KILLED_RUN, str(root), where, str(at), *TINY, *overrides]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]


def copied_data(source: Path, tmp_path: Path) -> Path:
    """A new root holding a copy of ``source``'s prepared faces and labels."""
    shutil.copytree(source / "data", tmp_path / "run" / "data")
    return tmp_path / "run"


def digests(root: Path) -> dict[str, str]:
    """SHA-256 of every file of models/ and of metrics/train.json."""
    files = [*sorted((root / "models").rglob("*")), root / "metrics" / "train.json"]
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in files if p.is_file()}  # fmt: skip


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The tiny set, and an uninterrupted run of seed 1 on it (the weights a resumed run of
    seed 1 must end with)."""
    root = labelled_root(tmp_path_factory.mktemp("reference"))
    train(root, "train.seed=1")
    return root, digests(root)


def test_trained_model_carries_its_0_100_calibration(
    reference: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """Fitted on the training faces: they come out uniform on 0-100; ckpt and ONNX agree."""
    from fiqa.cli.main import main
    from fiqa.quality.scoring import QualityScorer

    root = reference[0]
    ckpt, onnx_file = root / "models" / "quality.ckpt", root / "models" / "quality.onnx"
    scorers = [QualityScorer.from_path(path) for path in (ckpt, onnx_file)]
    assert scorers[0].calibration == scorers[1].calibration
    train_faces = json.loads((root / "metrics" / "train.json").read_text())
    assert scorers[0].calibration.n_faces == train_faces["train/calibration_faces"] > 0
    out = tmp_path / "scores.csv"
    prepared = str(root / "data" / "prepared")
    assert main(["score", "--checkpoint", str(onnx_file), "--prepared", prepared,
                 "--scale", "0-100", "--out", str(out)]) == 0  # fmt: skip
    table = pd.read_csv(out)
    scores = table.loc[table["split"] == "train", "quality"]
    assert scores.between(0, 100).all() and (scores == scores.round()).all()
    assert abs(scores.median() - 50) <= 10  # the training percentile: uniform over 0-100


@pytest.mark.slow
@pytest.mark.parametrize(
    ("where", "at", "overrides"),
    [
        ("step", 5, ["train.checkpoint_every_n_steps=1"]),  # mid-epoch: resumes at step 5
        ("step", 6, []),  # epoch checkpoints only: resumes at the end of epoch 0
        ("export", 0, []),  # trained, killed while exporting: resumes at the end
    ],
)
def test_killed_train_keeps_the_previous_outputs_and_resumes_to_the_same_weights(
    reference: tuple[Path, dict[str, str]], tmp_path: Path, where: str, at: int,
    overrides: list[str],
) -> None:  # fmt: skip
    ref_root, ref = reference
    root = copied_data(ref_root, tmp_path)
    train(root, "train.seed=0")  # the previous run
    previous = digests(root)
    killed_train(root, where, at, "train.seed=1", *overrides)
    assert digests(root) == previous  # byte for byte, checkpoints included
    assert (root / "models.partial" / "checkpoints" / "last.ckpt").is_file()

    with pytest.raises(StageError, match=r"train\.seed \(1 -> 2\)"):
        train(root, "train.resume=true", "train.seed=2", *overrides)
    summary = train(root, "train.resume=true", "train.seed=1", *overrides)
    assert summary["train/resumed"] == 1.0 and summary["train/global_step"] == 8.0
    resumed = digests(root)
    for name in ("models/quality.ckpt", "models/quality.onnx"):
        assert resumed[name] == ref[name], name
    assert not (root / "models.partial").exists()
    assert not (root / "models" / "checkpoints").exists()  # the resume state is not published
    lineage = json.loads((root / "models" / "lineage.json").read_text())
    assert lineage["train"]["seed"] == 1
    assert lineage["inputs"] == input_hashes({
        "manifest": root / "data" / "prepared" / "manifest.parquet",
        "labels": root / "data" / "labels" / "labels.parquet"})  # fmt: skip
    # the labels trained on, in the lineage and the metrics (hand-made here: no labels.json)
    assert lineage["labels"] == {}
    assert json.loads((root / "metrics" / "train.json").read_text())["labels"] == {}


def test_resume_refuses_staged_work_of_other_labels(
    reference: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    root = copied_data(reference[0], tmp_path)
    staged = root / "models.partial"
    (staged / "checkpoints").mkdir(parents=True)
    (staged / "checkpoints" / "last.ckpt").write_bytes(b"a killed run's state")
    cfg = compose_config([f"paths.root={root}", *TINY, "train.resume=true"])
    from fiqa.config.training import train_job
    from fiqa.train.fit import check_training_inputs, run_identity

    job = train_job(load_settings(cfg))
    identity = run_identity(job, check_training_inputs(job))
    identity["inputs"]["labels"] = "0" * 64
    write_json_atomic(staged / "run.json", identity)
    with pytest.raises(StageError, match=r"another run.*inputs\.labels \('0000"):
        run_stage("train", cfg)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"inputs": {"manifest": "ab" * 32}},  # labels of another prepared set
         r"labels\.json was made from a manifest\.parquet with sha256 abababababab.*"
         r"data/prepared/manifest\.parquet"),
        ({"target": "serfiq", "target_settings": {"serfiq": {}}},  # of another label config
         r"target \('serfiq' -> 'faceqnet'\).*label\.target=faceqnet"),
    ],
)  # fmt: skip
def test_train_refuses_labels_of_another_run(
    reference: tuple[Path, dict[str, str]], tmp_path: Path, change: dict, message: str
) -> None:
    root = copied_data(reference[0], tmp_path)
    record = root / "data" / "labels" / "labels.json"
    made = label_record(compose_config([f"paths.root={root}"]))
    write_json_atomic(record, made | change)
    with pytest.raises(StageError, match=message):
        train(root)
    assert not (root / "models").exists() and not (root / "models.partial").exists()


def test_check_inputs_compares_recorded_hashes(tmp_path: Path) -> None:
    data = tmp_path / "manifest.parquet"
    data.write_bytes(b"abc")  # sha256 ba7816bf...
    record = tmp_path / "labels.json"
    write_json_atomic(record, {"inputs": {"manifest": hashlib.sha256(b"abc").hexdigest()}})
    check_inputs(record, {"manifest": data}, fix="")
    data.write_bytes(b"abd")
    with pytest.raises(LineageError, match=f"sha256 ba7816bf8f01.*{data}"):
        check_inputs(record, {"manifest": data}, fix="Run it again.")
    write_json_atomic(record, {"target": "serfiq"})  # no lineage recorded: accepted
    check_inputs(record, {"manifest": data}, fix="")


def test_evaluate_refuses_a_model_trained_on_other_labels(tmp_path: Path) -> None:
    manifest, labels = tmp_path / "data/prepared/manifest.parquet", tmp_path / "data/labels"
    manifest.parent.mkdir(parents=True)
    labels.mkdir(parents=True)
    manifest.write_bytes(b"manifest")
    (labels / "labels.parquet").write_bytes(b"labels")
    write_json_atomic(labels / "labels.json", {"inputs": input_hashes({"manifest": manifest})})
    inputs = input_hashes({"manifest": manifest, "labels": labels / "labels.parquet"})
    write_json_atomic(tmp_path / "models/lineage.json", {"inputs": inputs})
    check_lineage(manifest.parent, labels, [tmp_path / "models"])
    (labels / "labels.parquet").write_bytes(b"other labels")
    with pytest.raises(LineageError, match=r"models/lineage\.json was made from a labels\.parquet"):
        check_lineage(manifest.parent, labels, [tmp_path / "models"])


def test_sampler_epochs_do_not_depend_on_the_history() -> None:
    fresh = SeededShuffleSampler(10, seed=3)
    first = list(fresh)
    fresh.set_epoch(1)
    second = list(fresh)
    assert first != second and sorted(i for i, _ in second) == list(range(10))
    resumed = SeededShuffleSampler(10, seed=3, epoch=1, skip=4)  # a run killed after 4 samples
    assert list(resumed) == second[4:]
    resumed.set_epoch(1)  # Lightning's call at the resumed epoch keeps the skip
    assert list(resumed) == second[4:]
    resumed.set_epoch(2)
    assert len(list(resumed)) == 10


def test_differences_name_dotted_keys() -> None:
    old = {"train": {"seed": 1, "resume": False}, "inputs": {"labels": "a"}}
    new = {"train": {"seed": 2, "resume": True}, "inputs": {"labels": "a"}, "fmr": 0.001}
    assert differences(old, new, ignore=("train.resume",)) == [
        "fmr ('<absent>' -> 0.001)", "train.seed (1 -> 2)"]  # fmt: skip


def test_checkpoint_files_are_written_atomically(tmp_path: Path) -> None:
    from fiqa.train.staging import AtomicCheckpointIO

    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state": torch.ones(2)}, path)
    assert torch.equal(torch.load(path)["state"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_train_refuses_labels_made_for_another_label_config(tmp_path: Path) -> None:
    """`fiqa train` with the default label=faceqnet next to SER-FIQ labels (left by `dvc exp run
    -S label=serfiq`) stops, saying how to fix it; matching labels pass."""
    from fiqa.train.fit import labels_mismatch, labels_used  # labels_used: lineage.json's record

    def check(*overrides: str) -> None:
        asked = train_job(load_settings(compose_config([f"paths.root={tmp_path}", *overrides])))
        asked = asked.labels
        differ = labels_mismatch(json.loads(record.read_text()), asked)
        if differ:
            raise ValueError("; ".join(differ))

    cfg = compose_config([f"paths.root={tmp_path}"])
    made = label_record(cfg)
    record = tmp_path / "data" / "labels" / "labels.json"
    write_json_atomic(record, made)
    check()
    assert labels_used(record) == {"target": "faceqnet"}
    write_json_atomic(record, made | {"target": "serfiq", "target_settings": {"serfiq": {}}})
    with pytest.raises(ValueError, match=r"^target \('serfiq' -> 'faceqnet'\)$"):
        check()
    write_json_atomic(record, made | {"fr_models": {"dlib": {}}})
    with pytest.raises(ValueError, match=r"fr_models \(\['dlib'\] -> \['sface'\]\)"):
        check()
    write_json_atomic(record, made)
    with pytest.raises(
        ValueError, match=r"settings\.faceqnet\.reference \('proxy' -> 'manifest'\)"
    ):
        check("label.methods.faceqnet.reference=manifest")
    # Corrected labels are other labels than their base method's, and their settings count.
    with pytest.raises(ValueError, match=r"target \('faceqnet' -> 'faceqnet\+ediffiqa'\)"):
        check("label.target=faceqnet+ediffiqa")
    corrected = label_record(compose_config([f"paths.root={tmp_path}",
                                             "label.target=faceqnet+ediffiqa"]))  # fmt: skip
    write_json_atomic(record, corrected)
    check("label.target=faceqnet+ediffiqa")
    with pytest.raises(ValueError, match=r"settings\.ediffiqa\.eps \(0\.5 -> 0\.3\)"):
        check("label.target=faceqnet+ediffiqa", "label.ediffiqa.eps=0.3")
