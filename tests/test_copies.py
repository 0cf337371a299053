"""Degraded copies of training faces (prepare.copies): identity, split, labels on real faces."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fiqa.config import compose_config
from fiqa.data.copies import NOT_A_COPY, CopySettings, degraded_copy
from fiqa.data.face_store import PreparedFaces
from fiqa.stages.runner import run_stage

BLUR_BEYOND_RECOGNITION = ("prepare.copies.per_face=1", "prepare.copies.kinds=[blur]",
                           "prepare.copies.severities=[4]")  # fmt: skip


def config(root: Path, *overrides: str):
    return compose_config([
        "data=folder", f"data.root={root / 'raw'}", f"paths.root={root}", "logger=none",
        "prepare.val_fraction=0.34", "label.methods.serfiq.passes=20", *overrides,
    ])  # fmt: skip


def sharpness(face: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(face, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


@pytest.fixture(scope="module")
def copied(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three real photos of each of 6 people, prepared with one heavily blurred copy each."""
    folder = shared_data / "faces" / "deepface_13ids"
    table = pd.read_csv(folder / "identities.csv")
    picked = table[table["identity"].isin(sorted(table["identity"].unique())[:6])]
    root = tmp_path_factory.mktemp("copies")
    for file, identity in zip(*picked.groupby("identity").head(3)[["file", "identity"]].T.values,
                              strict=True):  # fmt: skip
        (root / "raw" / identity).mkdir(parents=True, exist_ok=True)
        Image.open(folder / "images" / file).convert("RGB").save(
            root / "raw" / identity / f"{Path(file).stem}.png"
        )
    run_stage("prepare", config(root, *BLUR_BEYOND_RECOGNITION))
    return root


def test_copies_keep_identity_and_split_and_only_the_training_faces_are_copied(copied: Path):
    prepared = PreparedFaces(copied / "data" / "prepared")
    m = prepared.manifest
    own, copies = m[m["source_id"] == NOT_A_COPY], m[m["source_id"] != NOT_A_COPY]
    assert len(own) == 18 and set(own["split"]) == {"train", "val"}
    assert len(copies) == (own["split"] == "train").sum()  # one per training face, none of val
    assert m["sample_id"].tolist() == list(range(len(m)))
    sources = own.set_index("sample_id").loc[copies["source_id"]]
    assert (sources["identity"].to_numpy() == copies["identity"].to_numpy()).all()
    assert (copies["split"] == "train").all()
    assert (copies["degradation"] == "blur").all() and (copies["severity"] == 4).all()
    assert (own["degradation"] == "none").all() and (own["severity"] == 0).all()
    for copy_row, source_id in zip(copies.index, copies["source_id"], strict=True):
        assert sharpness(prepared.face(copy_row)) < 0.2 * sharpness(prepared.face(source_id))


def test_a_copy_blurred_beyond_recognition_gets_a_lower_label_than_its_source(copied: Path):
    """The label comes from the FR model's behaviour on the copy (the methods never read the
    degradation): per-image SER-FIQ and identity-based CR-FIQA both drop."""
    run_stage("label", config(copied, *BLUR_BEYOND_RECOGNITION, "label=crfiqa",
                              "label.compute=[serfiq]"))  # fmt: skip
    labels = pd.read_parquet(copied / "data" / "labels" / "labels.parquet")
    m = PreparedFaces(copied / "data" / "prepared").manifest
    pairs = m.loc[m["source_id"] != NOT_A_COPY, ["sample_id", "source_id"]]
    by_id = labels.set_index("sample_id")
    for method in ("serfiq", "crfiqa"):
        copy_labels = by_id.loc[pairs["sample_id"], method].to_numpy()
        source_labels = by_id.loc[pairs["source_id"], method].to_numpy()
        assert (copy_labels < source_labels).all(), method


def test_copies_are_seeded_per_source_face():
    face = np.random.default_rng(0).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    settings = CopySettings(per_face=2, seed=3)
    first, kind, severity = degraded_copy(face, 17, 1, settings)
    again, kind2, severity2 = degraded_copy(face, 17, 1, settings)
    assert np.array_equal(first, again) and (kind, severity) == (kind2, severity2)
    assert kind in settings.kinds and severity in settings.severities
    others = [degraded_copy(face, 17, c, settings)[0] for c in range(2, 8)]
    assert not all(np.array_equal(first, o) for o in others)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"per_face": -1}, "per_face must be >= 0"),
    ({"kinds": ["smudge"]}, r"kinds: \['smudge'\]"),
    ({"severities": [0, 5]}, "severities must be in 1..4"),
])  # fmt: skip
def test_bad_copy_settings_name_the_key(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CopySettings(**kwargs)
