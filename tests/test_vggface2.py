"""VGGFace2 reader: listing, NAME_ID joins, landmark convention on real faces, meta, references."""

from __future__ import annotations

import csv
import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from fiqa.core.align import align_face, get_template
from fiqa.core.images import read_image
from fiqa.data.detect import YuNetDetector
from fiqa.data.vggface2 import (
    check_landmark_convention,
    read_identity_names,
    read_reference_list,
    read_vggface2,
)

TEMPLATE = get_template("arcface_112").points
# Written out, not imported: the files' own header, so a reader bug cannot cancel itself out.
LANDMARK_COLUMNS = ["P1X", "P1Y", "P2X", "P2Y", "P3X", "P3Y", "P4X", "P4Y", "P5X", "P5Y"]
BOX_COLUMNS = ["X", "Y", "W", "H"]


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _touch(root: Path, *relative: str) -> None:
    for rel in relative:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"\xff\xd8 not decoded by the reader")


def _template_rows(n: int, scale: float = 2.0) -> np.ndarray:
    """``n`` plausible pixel landmark rows: the template scaled and shifted."""
    shifts = np.arange(n, dtype=np.float64)[:, None, None] * 3.0
    return (TEMPLATE[None] * scale + 40.0 + shifts).reshape(n, 10)


# --- synthetic trees: no ../shared needed -------------------------------------------------------


@pytest.fixture()
def synthetic_root(tmp_path: Path) -> Path:
    root = tmp_path / "vggface2"
    _touch(
        root,
        "train/n000003/0001_01.jpg",
        "train/n000002/0002_01.jpg",
        "train/n000002/0001_01.jpg",
        "train/n000002/0010_02.png",
        "train/n000002/.hidden.jpg",
        "test/n000001/0001_01.jpg",
    )
    (root / "train/n000002/notes.txt").write_text("any file counts")
    lm = "NAME_ID," + ",".join(LANDMARK_COLUMNS)
    (root / "bb_landmark").mkdir()
    (root / "bb_landmark/loose_landmark_train.csv").write_text(
        f"{lm}\n"
        '"n000002/0001_01",75.81253,110.2077,103.1778,104.6074,90.5,125.25,80,140,101,139.5\n'
        " n000002/0002_01 , 1,2,3,4,5,6,7,8,9\n"  # one value short
        "n000002/0010_02,10,20,30,20,20,30,12,40,28,40\n"
        "n000003/0001_01,10,20,30,20,20,nan,12,40,28,40\n"
        "n000099/0001_01,10,20,30,20,20,30,12,40,28,40\n"  # no such file
    )
    (root / "bb_landmark/loose_bb_train.csv").write_text(
        "NAME_ID,X,Y,W,H\n"
        '"n000002/0001_01",60,60,79,109\n'
        "n000002/0010_02,5,10,0,40\n"  # zero width: no box
        "n000003/0001_01,1.5,2.5,30,40\n"
    )
    return root


def test_lists_every_file_sorted_and_joins_by_name_id(
    synthetic_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="fiqa.data.vggface2"):
        table = read_vggface2(synthetic_root)
    assert table["path"].tolist() == [
        "train/n000002/0001_01.jpg",
        "train/n000002/0002_01.jpg",
        "train/n000002/0010_02.png",
        "train/n000002/notes.txt",
        "train/n000003/0001_01.jpg",
    ]
    assert table["identity"].tolist() == ["n000002"] * 4 + ["n000003"]
    assert set(table["subset"]) == {"train"}
    rows = table.set_index("path")
    assert rows.loc["train/n000002/0001_01.jpg", "landmarks"] == [
        75.81253, 110.2077, 103.1778, 104.6074, 90.5, 125.25, 80.0, 140.0, 101.0, 139.5
    ]  # fmt: skip
    assert rows.loc["train/n000002/0001_01.jpg", "box"] == [60.0, 60.0, 79.0, 109.0]
    assert rows.loc["train/n000003/0001_01.jpg", "box"] == [1.5, 2.5, 30.0, 40.0]
    assert rows.loc["train/n000002/0010_02.png", "box"] is None  # W = 0
    issues = rows["landmark_issue"].to_dict()
    assert issues == {
        "train/n000002/0001_01.jpg": None,
        "train/n000002/0002_01.jpg": "nan",  # short row
        "train/n000002/0010_02.png": None,
        "train/n000002/notes.txt": "missing",
        "train/n000003/0001_01.jpg": "nan",
    }
    assert rows["landmarks"].isna().tolist() == [False, True, False, True, True]
    assert rows["name"].isna().all()  # no identity_meta.csv
    assert "1 rows name absent files: ['n000099/0001_01']" in caplog.text


def test_missing_csv_warns_and_flags_every_row(
    synthetic_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="fiqa.data.vggface2"):
        table = read_vggface2(synthetic_root, subsets=("train", "test"), meta=False)
    test_rows = table[table["subset"] == "test"]
    assert test_rows["path"].tolist() == ["test/n000001/0001_01.jpg"]
    assert table["path"].iloc[0].startswith("test/")  # sorted by subset first
    assert test_rows["landmarks"].tolist() == [None] and test_rows["box"].tolist() == [None]
    assert test_rows["landmark_issue"].tolist() == ["missing"]
    assert "loose_landmark_test.csv not found" in caplog.text
    assert "name" not in table.columns and "is_reference" not in table.columns


def test_landmarks_false_reads_no_csv(synthetic_root: Path) -> None:
    table = read_vggface2(synthetic_root, landmarks=False)
    assert len(table) == 5
    assert table[["landmarks", "box", "landmark_issue"]].isna().all().all()


def test_meta_archive_layout_and_bad_roots(tmp_path: Path, synthetic_root: Path) -> None:
    (synthetic_root / "meta").mkdir()
    (synthetic_root / "bb_landmark").rename(synthetic_root / "meta" / "bb_landmark")
    table = read_vggface2(synthetic_root)
    assert table["landmark_issue"].isna().sum() == 2
    with pytest.raises(FileNotFoundError, match="n000000"):
        read_vggface2(tmp_path / "n000000")
    with pytest.raises(FileNotFoundError, match="val"):
        read_vggface2(synthetic_root, subsets=("val",))
    (tmp_path / "empty" / "train" / "n000001").mkdir(parents=True)
    with pytest.raises(ValueError, match="empty"):
        read_vggface2(tmp_path / "empty")


def test_broken_annotation_files_name_the_file(synthetic_root: Path) -> None:
    csv_path = synthetic_root / "bb_landmark" / "loose_bb_train.csv"
    csv_path.write_text("NAME_ID,X,Y,Width,H\nn000002/0001_01,1,2,3,4\n")
    with pytest.raises(ValueError, match=r"loose_bb_train\.csv lacks column\(s\) \['W'\]"):
        read_vggface2(synthetic_root)
    csv_path.write_text("")
    with pytest.raises(ValueError, match=r"loose_bb_train\.csv is empty"):
        read_vggface2(synthetic_root)


def test_identity_meta_quirks(tmp_path: Path, synthetic_root: Path) -> None:
    (synthetic_root / "identity_meta.csv").write_text(
        "Class_ID, Name, Sample_Num, Flag, Gender\n"
        'n000002, "A_Fine_Frenzy",315,1, f,\n'
        'n000003, "Smith, Jr.",205,1, m\n'  # quoted comma, no trailing comma
        "n000004,Doe,John,100,0, m,\n"  # unquoted comma splits the name
    )
    names = read_identity_names(synthetic_root / "identity_meta.csv")
    assert names == {"n000002": "A_Fine_Frenzy", "n000003": "Smith, Jr.", "n000004": "Doe,John"}
    table = read_vggface2(synthetic_root)
    assert table.groupby("identity")["name"].first().to_dict() == {
        "n000002": "A_Fine_Frenzy",
        "n000003": "Smith, Jr.",
    }


def test_reference_list_forms(
    tmp_path: Path, synthetic_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plain = tmp_path / "refs.txt"
    plain.write_text(
        "# FaceQnet references\n\ntrain/n000002/0002_01.jpg\nn000002/0001_01\n"
        "n000003\\0007_01.jpg\nn000001/0001_01\n"
    )
    assert read_reference_list(plain) == [
        ("train", "n000002/0002_01"),
        (None, "n000002/0001_01"),
        (None, "n000003/0007_01"),
        (None, "n000001/0001_01"),
    ]
    with caplog.at_level(logging.INFO, logger="fiqa.data.vggface2"):
        table = read_vggface2(synthetic_root, references=plain)
    assert table.loc[table["is_reference"], "path"].tolist() == ["train/n000002/0002_01.jpg"]
    assert "1 second references ignored" in caplog.text
    assert "1 references name no file: ['n000003/0007_01']" in caplog.text
    assert "1 of 2 identities have no reference image" in caplog.text
    assert "1 references name identities outside the subsets read" in caplog.text  # n000001

    table_csv = tmp_path / "refs.csv"
    _write_csv(table_csv, ["identity", "reference"], [["n000003", "n000003/0001_01.jpg"]])
    (synthetic_root / "faceqnet_refs.csv").write_bytes(table_csv.read_bytes())
    table = read_vggface2(synthetic_root, references="faceqnet_refs.csv")  # found under root
    assert table.loc[table["is_reference"], "path"].tolist() == ["train/n000003/0001_01.jpg"]
    with pytest.raises(FileNotFoundError, match=r"nope\.csv"):
        read_vggface2(synthetic_root, references="nope.csv")


def test_convention_check_rejects_wrong_order_units_and_frames() -> None:
    good = _template_rows(30)
    boxes = np.tile([40.0, 40.0, 240.0, 240.0], (30, 1)) + np.arange(30)[:, None] * [3, 3, 0, 0]
    check_landmark_convention(good, boxes, "good.csv")  # passes
    mirrored = good.reshape(30, 5, 2)[:, [1, 0, 2, 4, 3]].reshape(30, 10)
    with pytest.raises(ValueError, match=r"mirrored\.csv: P1 has the larger x on 100%"):
        check_landmark_convention(mirrored, boxes, "mirrored.csv")
    with pytest.raises(ValueError, match="normalised"):
        check_landmark_convention(good / 1000.0, boxes, "units.csv")
    upside_down = good.copy()
    upside_down[:, 1::2] *= -1
    with pytest.raises(ValueError, match="eyes below the mouth"):
        check_landmark_convention(upside_down, boxes, "flip.csv")
    with pytest.raises(ValueError, match="outside their box"):
        check_landmark_convention(good, boxes + np.array([900.0, 0, 0, 0]), "frame.csv")
    check_landmark_convention(mirrored[:5], boxes[:5], "few.csv")  # too few rows to judge


def test_reader_rejects_a_mirrored_landmark_file(tmp_path: Path) -> None:
    root = tmp_path / "vgg"
    points = _template_rows(25).reshape(25, 5, 2)[:, [1, 0, 2, 4, 3]].reshape(25, 10)
    ids = [f"n000001/{k:04d}_01" for k in range(25)]
    _touch(root, *(f"train/{i}.jpg" for i in ids))
    header = ["NAME_ID", *LANDMARK_COLUMNS]
    _write_csv(
        root / "bb_landmark/loose_landmark_train.csv",
        header,
        list(zip(ids, *points.T, strict=True)),
    )
    with pytest.raises(ValueError, match=r"loose_landmark_train\.csv: P1 has the larger x"):
        read_vggface2(root)


# --- real faces from ../shared/data ---------------------------------------------------------------


@pytest.fixture(scope="module")
def real_tree(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> dict:
    """A VGGFace2-layout tree of real faces, CSVs written from YuNet detections."""
    source = shared_data / "faces" / "deepface_13ids"
    with (source / "identities.csv").open() as handle:
        listed = list(csv.DictReader(handle))
    root = tmp_path_factory.mktemp("vggface2_real")
    detector = YuNetDetector()
    expected: dict[str, list[float]] = {}
    landmark_rows, box_rows, per_identity = [], [], {}
    for row in listed:
        number = int(row["identity"].removeprefix("id"))
        identity, subset = f"n{number:06d}", "test" if number >= 12 else "train"
        if number == 11 and identity in per_identity:
            continue  # n000011 keeps a single image
        per_identity[identity] = per_identity.get(identity, 0) + 1
        name_id = f"{identity}/{per_identity[identity]:04d}_01"
        (root / subset / identity).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / "images" / row["file"], root / subset / f"{name_id}.jpg")
        found = detector.detect(read_image(source / "images" / row["file"]))
        assert found is not None, row["file"]
        values = [float(v) for v in found.landmarks.reshape(-1)]  # ArcFace = MTCNN order
        expected[f"{subset}/{name_id}.jpg"] = values
        landmark_rows.append((subset, [name_id, *values]))
        box_rows.append((subset, [name_id, *(float(v) for v in found.box)]))
    dropped, with_nan = landmark_rows[3][1][0], landmark_rows[7][1][0]
    del landmark_rows[3]
    landmark_rows[6][1][5] = float("nan")
    landmark_rows.append(("train", ["n000001/0999_01", *landmark_rows[0][1][1:]]))  # no file
    for subset in ("train", "test"):
        for kind, columns, rows in (
            ("landmark", LANDMARK_COLUMNS, landmark_rows),
            ("bb", BOX_COLUMNS, box_rows),
        ):
            picked = [r for s, r in rows if s == subset]
            _write_csv(
                root / f"bb_landmark/loose_{kind}_{subset}.csv", ["NAME_ID", *columns], picked
            )
    (root / "train/n000001/0998_01.jpg").write_text("a text file named .jpg")
    return {"root": root, "expected": expected, "dropped": dropped, "nan": with_nan}


def test_real_tree_round_trip(real_tree: dict, caplog: pytest.LogCaptureFixture) -> None:
    root, expected = real_tree["root"], real_tree["expected"]
    refs = root / "refs.txt"
    refs.write_text("".join(f"{p.rsplit('.', 1)[0]}\n" for p in sorted(expected)[::4]))
    with caplog.at_level(logging.WARNING, logger="fiqa.data.vggface2"):
        table = read_vggface2(root, subsets=("train", "test"), references=refs)
    assert len(table) == len(expected) + 1  # + the text file
    assert table["path"].tolist() == sorted(table["path"])  # subset, identity, file
    assert table["identity"].nunique() == 13
    assert table.groupby("identity").size()["n000011"] == 1
    assert set(table.loc[table["subset"] == "test", "identity"]) == {"n000012", "n000013"}
    rows = table.set_index("path")
    flagged = rows["landmark_issue"].dropna().to_dict()
    assert flagged == {
        f"train/{real_tree['dropped']}.jpg": "missing",
        f"train/{real_tree['nan']}.jpg": "nan",
        "train/n000001/0998_01.jpg": "missing",
    }
    for path, values in expected.items():
        if path not in flagged:
            assert rows.loc[path, "landmarks"] == values, path  # exact float round trip
            assert len(rows.loc[path, "box"]) == 4
    assert "1 rows name absent files: ['n000001/0999_01']" in caplog.text
    first_pick: dict[str, str] = {}
    for path in sorted(expected)[::4]:
        first_pick.setdefault(path.split("/")[1], path)
    assert sorted(table.loc[table["is_reference"], "path"]) == sorted(first_pick.values())


def test_real_landmarks_land_on_the_template(real_tree: dict) -> None:
    """Given landmarks align faces onto the ArcFace template; a mirrored order would not."""
    table = read_vggface2(real_tree["root"], subsets=("train", "test"))
    table = table[table["landmarks"].notna()]
    detector = YuNetDetector(pad_ratio=0.0)
    errors, mirrored_errors = [], []
    for path, values in zip(table["path"], table["landmarks"], strict=True):
        image = read_image(real_tree["root"] / path)
        points = np.asarray(values).reshape(5, 2)
        assert points[0, 0] < points[1, 0] and points[3, 0] < points[4, 0]
        for order, sink in (([0, 1, 2, 3, 4], errors), ([1, 0, 2, 4, 3], mirrored_errors)):
            face = align_face(image, points[order])
            pad = round(0.3 * face.shape[0])
            padded = cv2.copyMakeBorder(face, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
            found = detector.detect(padded)
            if found is None:
                sink.append(np.inf)
                continue
            eyes = found.landmarks[:2].astype(np.float64) - pad
            assert eyes[0, 0] < eyes[1, 0]  # re-detected right eye (image left) first
            sink.append(float(np.linalg.norm(eyes - TEMPLATE[:2], axis=1).max()))
    errors, mirrored_errors = np.array(errors), np.array(mirrored_errors)
    assert len(errors) >= 50
    assert errors.max() < 7.0 and np.median(errors) < 4.5, errors.round(1)
    assert (mirrored_errors > 15.0).all(), mirrored_errors.round(1)
