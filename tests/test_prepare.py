"""The prepare stage: outputs, workers, resume after a kill, failure bound, templates, bad input."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import skimage.data
from PIL import Image

import fiqa.data.preparation as preparation
from fiqa.config import compose_config
from fiqa.core.align import get_template
from fiqa.data.detect import YuNetDetector
from fiqa.data.face_store import PreparedFaces
from fiqa.data.folder import assign_splits
from fiqa.stages import StageError
from fiqa.stages.runner import run_stage


def make_dataset(root: Path) -> None:
    """3 identities of jittered astronaut/coffee-free faces plus every kind of bad file."""
    face = skimage.data.astronaut()[:300, 100:400]
    rng = np.random.default_rng(0)
    for ident in range(3):
        folder = root / f"id{ident}"
        folder.mkdir(parents=True)
        for k in range(4):
            angle, scale = rng.uniform(-8, 8), rng.uniform(0.9, 1.1)
            m = cv2.getRotationMatrix2D((150, 150), angle, scale)
            img = cv2.warpAffine(face, m, (300, 300), borderMode=cv2.BORDER_REFLECT)
            Image.fromarray(img).save(folder / f"{k}.jpg", quality=90)
    bad = root / "id0"
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "notes.jpg").write_text("not an image")
    good = (root / "id1" / "0.jpg").read_bytes()
    (bad / "truncated.jpg").write_bytes(good[: len(good) // 3])
    Image.fromarray(skimage.data.astronaut()).convert("RGBA").save(bad / "alpha.png")
    Image.fromarray(skimage.data.astronaut()).convert("L").save(bad / "gray.jpg")
    Image.fromarray(skimage.data.astronaut()).convert("CMYK").save(bad / "cmyk.jpg")
    cv2.imwrite(
        str(bad / "deep.png"), (skimage.data.astronaut()[:, :, ::-1].astype(np.uint16) * 257)
    )
    Image.fromarray(skimage.data.rocket()).save(root / "id2" / "no_face.jpg")
    (root / "id3").mkdir()
    Image.fromarray(face).save(root / "id3" / "single.jpg")  # an identity with one image


def config(root: Path, *overrides: str):
    return compose_config(
        [
            "data=folder",
            f"data.root={root / 'raw'}",
            f"paths.root={root}",
            "logger=none",
            "prepare.shard_size=5",
            "prepare.num_workers=0",
            "prepare.max_failure_rate=0.5",
            *overrides,
        ]
    )


def digest(directory: Path) -> dict[str, str]:
    """Every file's SHA-256: summary.json too (counts, no timings or resume state)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("prep")
    make_dataset(root / "raw")
    run_stage("prepare", config(root))
    return root, digest(root / "data" / "prepared")


def test_outputs_manifest_failures_and_landmarks_on_template(reference):
    root, _ = reference
    prepared = PreparedFaces(root / "data" / "prepared")
    m, f = prepared.manifest, prepared.failures
    reasons = dict(zip(f["path"], f["reason"], strict=True))
    assert reasons["id0/empty.jpg"] == "empty_file"
    assert reasons["id0/notes.jpg"] == "not_an_image"
    assert reasons["id0/truncated.jpg"] == "truncated"
    assert reasons["id2/no_face.jpg"] == "no_face"
    # alpha, grayscale, CMYK and 16-bit images are decoded and aligned, not failures
    assert {"id0/alpha.png", "id0/gray.jpg", "id0/cmyk.jpg", "id0/deep.png"} <= set(m["path"])
    assert "id3/single.jpg" in set(m["path"])
    assert len(m) + len(f) == 12 + 7 + 1 + 1
    assert m["sample_id"].tolist() == list(range(len(m)))
    assert set(m.groupby("identity")["split"].nunique()) == {1}  # identity-disjoint
    assert (m["template"] == "arcface_112").all() and (m["detector"] == "yunet_2023mar").all()
    # Re-detected landmarks on aligned crops sit near the template (eyes not swapped).
    template = get_template("arcface_112").points
    detector = YuNetDetector()
    errors = []
    for face in prepared.faces(np.arange(0, len(m), 4)):
        found = detector.detect(face)
        assert found is not None
        errors.append(np.abs(found.landmarks[:2] - template[:2]).max())
    assert np.median(errors) < 6.0


def test_workers_give_identical_output(reference, tmp_path):
    _, expected = reference
    make_dataset(tmp_path / "raw")
    run_stage("prepare", config(tmp_path, "prepare.num_workers=2"))
    assert digest(tmp_path / "data" / "prepared") == expected


def die_after_two_shards(monkeypatch: pytest.MonkeyPatch):
    """Make prepare raise KeyboardInterrupt (a kill) once two shards are finished; returns the
    real shard writer, to put back for the resumed run."""
    real, calls = preparation.write_shard_part, []

    def write_then_die(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed after two finished shards
        calls.append(args[1])
        real(*args, **kwargs)

    monkeypatch.setattr(preparation, "write_shard_part", write_then_die)
    return real


def test_killed_run_resumes_to_identical_output(reference, tmp_path, monkeypatch):
    _, expected = reference
    make_dataset(tmp_path / "raw")
    real_finish = die_after_two_shards(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run_stage("prepare", config(tmp_path))
    assert not (tmp_path / "data" / "prepared").exists()
    monkeypatch.setattr(preparation, "write_shard_part", real_finish)
    summary = run_stage("prepare", config(tmp_path))
    assert summary["prepare/resumed_shards"] == 2.0
    assert digest(tmp_path / "data" / "prepared") == expected
    assert not (tmp_path / "data" / "prepared.partial").exists()


def test_failure_bound_keeps_previous_output(reference, tmp_path):
    _, expected = reference
    make_dataset(tmp_path / "raw")
    run_stage("prepare", config(tmp_path))
    with pytest.raises(
        StageError, match=r"4/21 inputs failed .* above prepare.max_failure_rate=0.1"
    ):
        run_stage("prepare", config(tmp_path, "prepare.max_failure_rate=0.1", "prepare.seed=1"))
    assert digest(tmp_path / "data" / "prepared") == expected  # nothing already written is lost


def test_config_template_and_empty_dataset(tmp_path):
    make_dataset(tmp_path / "raw")
    run_stage("prepare", config(tmp_path, "prepare.template=sphereface_112x96"))
    prepared = PreparedFaces(tmp_path / "data" / "prepared")
    assert prepared.face(0).shape == (112, 96, 3)
    points = "[[38,52],[74,52],[56,72],[42,92],[71,92]]"
    run_stage(
        "prepare",
        config(
            tmp_path,
            f"+prepare.templates.mine={{size:[112,112],points:{points}}}",
            "prepare.template=mine",
        ),
    )
    assert (PreparedFaces(tmp_path / "data" / "prepared").manifest["template"] == "mine").all()
    (tmp_path / "empty").mkdir()
    with pytest.raises((StageError, ValueError), match="holds no"):
        run_stage("prepare", config(tmp_path, f"data.root={tmp_path / 'empty'}"))


def test_write_prepared_writes_aligned_faces_through_the_stage_writers(tmp_path):
    from fiqa.data.face_store import MANIFEST_COLUMNS
    from fiqa.data.preparation import write_prepared

    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (5, 112, 112, 3), np.uint8)
    prepared = write_prepared(tmp_path / "p", faces, ["a", "a", "b", "b", "b"],
                              ["train", "train", "val", "val", "val"], shard_size=2)  # fmt: skip
    m = prepared.manifest
    assert set(MANIFEST_COLUMNS) <= set(m.columns)
    assert m["sample_id"].tolist() == list(range(5)) and m["shard"].nunique() == 3
    assert m["split"].tolist() == ["train", "train", "val", "val", "val"]
    np.testing.assert_array_equal(prepared.faces(), faces)  # lossless PNG
    assert prepared.template == "arcface_112" and prepared.failures.empty
    assert sorted(p.name for p in (tmp_path / "p").glob("part-*")) == []  # parts merged
    with pytest.raises(FileExistsError, match="not overwriting"):
        write_prepared(tmp_path / "p", faces, ["a"] * 5)


def test_val_split_is_identity_disjoint_seeded_and_capped_in_faces():
    # 10 identities of 1..10 faces (55 faces): 30 % of them (3) held out
    ids = pd.Series(np.repeat([f"id{k:02d}" for k in range(10)], np.arange(1, 11)))
    split = assign_splits(ids, 0.3, seed=0)
    held = set(ids[split == "val"])
    assert len(held) == 3 and split.groupby(ids).nunique().eq(1).all()
    assert split.tolist() == assign_splits(ids, 0.3, seed=0).tolist()
    assert split.tolist() == assign_splits(ids, 0.3, seed=0, max_faces=55).tolist()
    # a cap: some of the same identities, never more faces than the cap
    n_held = int((split == "val").sum())
    capped = assign_splits(ids, 0.3, seed=0, max_faces=n_held - 1)
    assert set(ids[capped == "val"]) < held and (capped == "val").sum() <= n_held - 1
    # a cap below the smallest identity still holds one out
    one = assign_splits(ids, 0.3, seed=0, max_faces=0)
    assert ids[one == "val"].nunique() == 1


def test_single_image_identities_train_and_leave_the_val_split_as_it_was():
    ids = pd.Series(np.repeat([f"id{k:02d}" for k in range(10)], np.arange(2, 12)))
    before = assign_splits(ids, 0.3, seed=0, min_images=2)
    assert before.tolist() == assign_splits(ids, 0.3, seed=0).tolist()  # none below 2: the same
    singles = pd.Series([f"solo{k}" for k in range(7)])
    both = pd.concat([ids, singles], ignore_index=True)
    after = assign_splits(both, 0.3, seed=0, min_images=2)
    assert after[: len(ids)].tolist() == before.tolist()
    assert (after[len(ids) :] == "train").all()
    assert (
        assign_splits(both, 0.3, seed=0)[len(ids) :] == "val"
    ).any()  # min_images=1: may hold out
