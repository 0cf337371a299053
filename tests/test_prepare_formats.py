"""`fiqa prepare` on the VGGFace2 and MS1M RecordIO formats, with their bad inputs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import skimage.data
from PIL import Image

from fiqa.config import compose_config
from fiqa.core.align import align_face
from fiqa.data.detect import YuNetDetector
from fiqa.data.face_store import PreparedFaces
from fiqa.data.ms1m import export_prepared, write_ms1m
from fiqa.stages import StageError
from fiqa.stages.runner import run_stage


def config(root: Path, data: str, *overrides: str):
    return compose_config(
        [
            f"data={data}",
            f"data.root={root / 'raw'}",
            f"paths.root={root}",
            "logger=none",
            "prepare.num_workers=0",
            "prepare.max_failure_rate=0.5",
            *overrides,
        ]
    )


def jittered_faces(n: int) -> list[np.ndarray]:
    face = skimage.data.astronaut()[:300, 100:400]
    rng = np.random.default_rng(1)
    out = []
    for _ in range(n):
        m = cv2.getRotationMatrix2D((150, 150), rng.uniform(-8, 8), rng.uniform(0.9, 1.1))
        out.append(cv2.warpAffine(face, m, (300, 300), borderMode=cv2.BORDER_REFLECT))
    return out


def jpeg(image: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()


@pytest.fixture(scope="module")
def aligned_jpegs() -> list[bytes]:
    detector = YuNetDetector()
    return [jpeg(align_face(img, detector.detect(img).landmarks)) for img in jittered_faces(6)]


def test_ms1m_recordio_keeps_the_original_bytes(tmp_path, aligned_jpegs):
    labels = [0, 0, 0, 1, 1, 2]
    write_ms1m(tmp_path / "raw", zip(labels, aligned_jpegs, strict=True))
    summary = run_stage("prepare", config(tmp_path, "ms1m"))
    prepared = PreparedFaces(tmp_path / "data" / "prepared")
    m = prepared.manifest
    assert summary["prepare/aligned"] == 6 and prepared.failures.empty
    assert m["path"].tolist() == [f"train.rec#{k}" for k in range(1, 7)]
    assert m["identity"].tolist() == ["0", "0", "0", "1", "1", "2"]
    assert (m["detector"] == "pre_aligned").all()
    shard = (tmp_path / "data" / "prepared" / m["shard"][0]).read_bytes()
    assert shard[m["offset"][4] : m["offset"][4] + m["nbytes"][4]] == aligned_jpegs[4]


def test_prepared_set_exports_back_to_recordio(tmp_path, aligned_jpegs):
    write_ms1m(tmp_path / "raw", zip([0, 0, 1, 1, 2, 2], aligned_jpegs, strict=True))
    run_stage("prepare", config(tmp_path, "ms1m"))
    assert export_prepared(tmp_path / "data" / "prepared", tmp_path / "export") == 6
    again = tmp_path / "again"
    run_stage("prepare", config(again, "ms1m", f"data.root={tmp_path / 'export'}"))
    first = PreparedFaces(tmp_path / "data" / "prepared")
    second = PreparedFaces(again / "data" / "prepared")
    assert second.manifest["identity"].tolist() == ["0", "0", "1", "1", "2", "2"]
    np.testing.assert_array_equal(first.faces(), second.faces())


def test_ms1m_damage_and_mismatched_property(tmp_path, aligned_jpegs):
    small = jpeg(np.zeros((64, 64, 3), np.uint8))  # not 112x112: not an aligned face
    write_ms1m(tmp_path / "raw", zip([0, 0, 1, 1], [*aligned_jpegs[:3], small], strict=True))
    rec = tmp_path / "raw" / "train.rec"
    (tmp_path / "raw" / "train.idx").unlink()  # missing index: rebuilt by scanning
    run_stage("prepare", config(tmp_path, "ms1m"))
    failures = PreparedFaces(tmp_path / "data" / "prepared").failures
    assert failures["reason"].tolist() == ["wrong_size"]
    (tmp_path / "raw" / "property").write_text("7,112,112")
    with pytest.raises(StageError, match="declares 7 identities"):
        run_stage("prepare", config(tmp_path, "ms1m"))
    (tmp_path / "raw" / "property").write_text("2,112,112")
    data = rec.read_bytes()
    rec.write_bytes(data[:-10])  # truncated last record
    (tmp_path / "raw" / "train.idx").unlink(missing_ok=True)
    run_stage("prepare", config(tmp_path, "ms1m"))
    failures = PreparedFaces(tmp_path / "data" / "prepared").failures
    assert "truncated" in set(failures["reason"])


def test_vggface2_layout_uses_given_landmarks_and_detects_missing_ones(tmp_path):
    detector = YuNetDetector()
    raw = tmp_path / "raw"
    landmark_rows, bb_rows = [], []
    for k, img in enumerate(jittered_faces(4)):
        ident = f"n00000{k % 2 + 1}"
        name = f"{k:04d}_01"
        (raw / "train" / ident).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(raw / "train" / ident / f"{name}.jpg", quality=95)
        found = detector.detect(img)
        if k != 3:  # the last face has no landmark row: prepare must detect it
            points = ",".join(f"{v:.3f}" for v in found.landmarks.reshape(-1))
            landmark_rows.append(f'"{ident}/{name}",{points}')
        bb_rows.append(f'"{ident}/{name}",' + ",".join(f"{v:.1f}" for v in found.box))
    (raw / "train" / "n000002" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    meta = raw / "bb_landmark"
    meta.mkdir()
    header = "NAME_ID," + ",".join(f"P{i}{a}" for i in range(1, 6) for a in "XY")
    (meta / "loose_landmark_train.csv").write_text("\n".join([header, *landmark_rows]) + "\n")
    (meta / "loose_bb_train.csv").write_text("\n".join(["NAME_ID,X,Y,W,H", *bb_rows]) + "\n")
    (raw / "references.txt").write_text("n000001/0002_01.jpg\nn000002/0001_01.jpg\n")
    run_stage("prepare", config(tmp_path, "vggface2", f"data.references={raw / 'references.txt'}"))
    prepared = PreparedFaces(tmp_path / "data" / "prepared")
    m = prepared.manifest.set_index("path")
    assert m.loc["train/n000001/0000_01.jpg", "detector"] == "given"
    assert m.loc["train/n000002/0003_01.jpg", "detector"] == "yunet_2023mar"
    assert m.loc["train/n000002/0003_01.jpg", "landmark_issue"] == "missing"
    assert prepared.failures["path"].tolist() == ["train/n000002/broken.jpg"]
    assert set(m["subset"]) == {"train"}
    assert m.index[m["is_reference"]].tolist() == [
        "train/n000001/0002_01.jpg",
        "train/n000002/0001_01.jpg",
    ]

    # FaceQnet labels against the dataset's reference images: each reference is its
    # identity's best-quality sample (distance 0 to itself).
    overrides = ["label.methods.faceqnet.reference=manifest", "label.methods.serfiq.passes=4"]
    run_stage("label", config(tmp_path, "vggface2", *overrides))
    labels = pd.read_parquet(tmp_path / "data" / "labels" / "labels.parquet").set_index("path")
    best = labels.groupby("identity")["faceqnet"].idxmax().sort_values().tolist()
    assert best == ["train/n000001/0002_01.jpg", "train/n000002/0001_01.jpg"]


def test_identity_table_with_min_images_exclusions_and_a_missing_file(tmp_path):
    images = tmp_path / "raw" / "images"
    images.mkdir(parents=True)
    faces = jittered_faces(7)
    rows = []
    for k, ident in enumerate(["a", "a", "a", "b", "b", "c", "solo"]):
        Image.fromarray(faces[k]).save(images / f"{ident}_{k}.jpg")
        rows.append({"file": f"images/{ident}_{k}.jpg", "person": ident, "session": k % 2})
    rows.append({"file": "images/a_gone.jpg", "person": "a", "session": 0})  # not on disk
    table = tmp_path / "ids.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    (tmp_path / "exclude.csv").write_text("identity\nc\n")
    summary = run_stage("prepare", config(
        tmp_path, "table", f"data.table={table}", "data.path_column=file",
        "data.identity_column=person", "data.min_images=2",
        f"data.exclude={tmp_path / 'exclude.csv'}"))  # fmt: skip
    prepared = PreparedFaces(tmp_path / "data" / "prepared")
    m = prepared.manifest
    assert sorted(m["identity"].unique()) == ["a", "b"]  # c excluded, solo below min_images
    assert len(m) == 5 and "session" in m.columns  # the table's other columns are kept
    assert prepared.failures["reason"].tolist() == ["missing"]
    assert summary["prepare/images_read"] == 6.0
    with pytest.raises(StageError, match=r"has no column \['name', 'identity'\]"):
        run_stage("prepare", config(tmp_path, "table", f"data.table={table}",
                                    "data.path_column=name"))  # fmt: skip


def test_max_identities_keeps_identities_spread_over_the_sorted_list():
    from fiqa.data.sources import spread_identities

    table = pd.DataFrame({"identity": list("abcdefghij") * 2, "path": range(20)})
    # 10 identities, 4 kept: positions round(linspace(0, 9, 4)) = 0, 3, 6, 9
    kept = spread_identities(table, 4)
    assert sorted(kept["identity"].unique()) == ["a", "d", "g", "j"]
    assert len(kept) == 8 and kept.index.tolist() == list(range(8))
    assert spread_identities(table, 10) is table


def test_max_images_per_identity_keeps_images_spread_over_each_identitys_paths():
    from fiqa.data.sources import spread_images

    # "a": 5 images (paths listed out of order), "b": 2, "c": 1
    paths = ["a/4", "b/0", "a/0", "a/2", "c/0", "a/1", "b/1", "a/3"]
    table = pd.DataFrame({"identity": [p[0] for p in paths], "path": paths})
    # a: sorted a/0..a/4, 3 kept at round(linspace(0, 4, 3)) = 0, 2, 4; b and c: all
    kept = spread_images(table, 3)
    assert kept["path"].tolist() == ["a/4", "b/0", "a/0", "a/2", "c/0", "b/1"]
    assert kept.index.tolist() == list(range(6))
    assert spread_images(table, 5) is table
    assert spread_images(table, 1)["path"].tolist() == ["b/0", "a/0", "c/0"]


def test_debug_small_limits_every_stage_to_few_identities(tmp_path):
    cfg = compose_config(["debug=small", f"paths.root={tmp_path}"])
    assert cfg.data.max_identities == 12 and cfg.data.max_images_per_identity == 6
    from fiqa.config.ranges import check_ranges
    from fiqa.config.typed import ConfigError

    with pytest.raises(ConfigError, match=r"data\.max_identities=0: must be >= 1"):
        check_ranges(compose_config(["data.max_identities=0", f"paths.root={tmp_path}"]))
    with pytest.raises(ConfigError, match=r"data\.max_images_per_identity=0: must be >= 1"):
        check_ranges(compose_config(["data.max_images_per_identity=0", f"paths.root={tmp_path}"]))
