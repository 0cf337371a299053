"""The embedded demo dataset and its graded degradations."""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import skimage.data

from fiqa.core.images import ImageReadError, read_image
from fiqa.data.degrade import (
    DEGRADATIONS,
    DOWNSCALE_FACTOR,
    JPEG_QUALITY,
    NOISE_STD,
    OCCLUDED_FRACTION,
    apply_degradation,
    random_jitter,
)
from fiqa.data.demo import (
    DEMO_JSON,
    METADATA_COLUMNS,
    METADATA_CSV,
    build_demo,
    degradation_schedule,
    pair_counts,
)
from fiqa.data.detect import YuNetDetector

SMALL = {"portrait_images": 10, "lfw_identities": 3, "lfw_images": 5}


def _hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _rows(root: Path) -> list[dict[str, str]]:
    with open(root / METADATA_CSV, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "raw"
    build_demo(root, seed=0, **SMALL)
    return root


def test_build_is_byte_identical_for_the_same_seed(demo_root: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    build_demo(again, seed=0, **SMALL)
    assert _hashes(again) == _hashes(demo_root)
    other = tmp_path / "other"
    build_demo(other, seed=1, **SMALL)
    assert _hashes(other) != _hashes(demo_root)


def test_metadata_rows_match_the_files(demo_root: Path) -> None:
    rows = _rows(demo_root)
    assert list(rows[0]) == METADATA_COLUMNS
    on_disk = {p for p in _hashes(demo_root) if p not in (METADATA_CSV, DEMO_JSON)}
    assert {r["path"] for r in rows} == on_disk
    assert len(rows) == len(on_disk)
    for row in rows:
        identity, name = row["path"].split("/")
        assert identity == row["identity"] and name.startswith(f"{identity}_")
        assert name.endswith(".jpg")
    per_identity = Counter(r["identity"] for r in rows if int(r["severity"]) >= 0)
    assert per_identity["eileen_collins"] == 10 and per_identity["lfw_002"] == 5
    assert len(per_identity) == 6


def test_kinds_and_severities_are_recorded(demo_root: Path) -> None:
    faces = [r for r in _rows(demo_root) if int(r["severity"]) >= 0]
    for row in faces:
        severity = int(row["severity"])
        assert 0 <= severity <= 4
        assert (row["degradation"] == "none") == (severity == 0)
        assert row["degradation"] in {"none", *DEGRADATIONS}
        if row["degradation"] == "jpeg":
            assert int(row["jpeg_quality"]) == JPEG_QUALITY[severity]
        else:
            assert int(row["jpeg_quality"]) == JPEG_QUALITY[0]
        if row["degradation"] == "downscale":
            assert float(row["level"]) == pytest.approx(DOWNSCALE_FACTOR[severity], abs=1e-4)
        assert abs(float(row["rotation"])) <= 8.0 and 0.5 <= float(row["scale"]) <= 1.1
        assert row["flip"] in ("0", "1")
    severities = Counter(int(r["severity"]) for r in faces)
    assert set(severities) == {0, 1, 2, 3, 4}
    assert max(severities.values()) - min(severities.values()) <= 3  # spread evenly
    assert {r["degradation"] for r in faces} == {"none", *DEGRADATIONS}


def test_bad_files_are_present_and_fail_as_expected(demo_root: Path) -> None:
    bad = {
        r["degradation"]: demo_root / r["path"] for r in _rows(demo_root) if r["severity"] == "-1"
    }
    assert set(bad) == {"corrupt", "not_image", "no_face"}
    with pytest.raises(ImageReadError) as truncated:
        read_image(bad["corrupt"])
    assert truncated.value.reason == "truncated"
    with pytest.raises(ImageReadError) as text:
        read_image(bad["not_image"])
    assert text.value.reason == "not_an_image"
    assert YuNetDetector().detect(read_image(bad["no_face"])) is None


def test_yunet_finds_the_clean_faces(demo_root: Path) -> None:
    detector = YuNetDetector()
    clean = [r for r in _rows(demo_root) if r["severity"] == "0"]
    found = {r["path"]: detector.detect(read_image(demo_root / r["path"])) for r in clean}
    portraits = [p for p in found if not p.startswith("lfw")]
    assert len(portraits) == 6 and all(found[p] is not None for p in portraits)
    assert sum(d is not None for d in found.values()) >= 0.85 * len(found)


def test_summary_and_default_pair_counts(demo_root: Path) -> None:
    record = json.loads((demo_root / DEMO_JSON).read_text())
    summary = record["summary"]
    assert summary == {
        "n_images": 45,
        "n_identities": 6,
        "n_genuine_pairs": 3 * 45 + 3 * 10,
        "n_impostor_pairs": 45 * 44 // 2 - (3 * 45 + 3 * 10),
        "n_bad_files": 3,
    }
    assert pair_counts([2, 3]) == (4, 6)
    genuine, impostor = pair_counts([30] * 3 + [10] * 17)  # the default build: 260 images
    assert (genuine, impostor) == (2070, 31600)
    assert impostor >= 1000


def test_rebuild_is_skipped_when_complete(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    params = {"portrait_images": 0, "lfw_identities": 2, "lfw_images": 3, "bad_files": False}
    first = build_demo(root, **params)
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    assert build_demo(root, **params) == first
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == stamps
    # A damaged file or new parameters trigger a rebuild.
    victim = root / "lfw_000" / "lfw_000_001.jpg"
    victim.write_bytes(b"damaged")
    build_demo(root, **params)
    assert victim.read_bytes()[:2] == b"\xff\xd8"
    assert build_demo(root, **{**params, "lfw_images": 4}).n_images == 8


def test_refuses_to_replace_a_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match=r"demo\.json"):
        build_demo(tmp_path, portrait_images=0, lfw_identities=1, lfw_images=1)
    assert (tmp_path / "mine.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="no images"):
        build_demo(tmp_path / "x", portrait_images=0, lfw_identities=0)


def test_schedule_covers_every_kind_and_severity() -> None:
    schedule = degradation_schedule(30, identity_index=2)
    assert schedule.count(("none", 0)) == 6
    assert set(schedule) == {("none", 0)} | {(k, s) for k in DEGRADATIONS for s in range(1, 5)}
    across = {pair for i in range(6) for pair in degradation_schedule(10, i)}
    assert len(across) == 1 + 6 * 4  # ten images per identity still cover all over identities


# --- degradations ---------------------------------------------------------------------------

FACE = np.ascontiguousarray(skimage.data.astronaut()[30:230, 140:310])
BOX = np.array([40.0, 30.0, 90.0, 115.0])


@pytest.mark.parametrize("kind", list(DEGRADATIONS))
def test_severity_zero_is_identity_and_output_is_rgb(kind: str) -> None:
    rng = np.random.default_rng(0)
    same, applied = apply_degradation(FACE, kind, 0, rng, face_box=BOX)
    np.testing.assert_array_equal(same, FACE)
    assert applied.kind == "none"
    for severity in range(1, 5):
        out, applied = apply_degradation(FACE, kind, severity, rng, face_box=BOX)
        assert out.shape == FACE.shape and out.dtype == np.uint8
        assert (applied.kind, applied.severity) == (kind, severity)
        assert not np.array_equal(out, FACE)


def test_degradations_grow_with_severity() -> None:
    def sharpness(image: np.ndarray) -> float:
        gray = image.astype(np.float64).mean(axis=2)
        return float(np.abs(np.diff(gray, axis=0)).mean() + np.abs(np.diff(gray, axis=1)).mean())

    rng = np.random.default_rng(0)
    for kind in ("blur", "downscale"):
        values = [sharpness(apply_degradation(FACE, kind, s, rng, BOX)[0]) for s in range(5)]
        assert values == sorted(values, reverse=True), kind
    flat = np.full((200, 200, 3), 128, np.uint8)
    for severity in range(1, 5):
        noisy = apply_degradation(flat, "noise", severity, rng)[0].astype(np.float64)
        assert noisy.std() == pytest.approx(NOISE_STD[severity], rel=0.05)
        occluded = apply_degradation(flat, "occlusion", severity, rng, BOX)[0]
        changed = (occluded != flat).any(axis=2)
        if not changed.any():  # the drawn grey level equalled the background
            continue
        assert changed.mean() * flat.shape[0] * flat.shape[1] == pytest.approx(
            OCCLUDED_FRACTION[severity] * BOX[2] * BOX[3], rel=0.1
        )
        rows, cols = np.nonzero(changed)
        assert cols.min() >= BOX[0] - 1 and cols.max() <= BOX[0] + BOX[2]
        assert rows.min() >= BOX[1] - 1 and rows.max() <= BOX[1] + BOX[3]


def test_degradation_errors() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="severity"):
        apply_degradation(FACE, "blur", 5, rng)
    with pytest.raises(KeyError, match="occlusion"):
        apply_degradation(FACE, "smudge", 1, rng)
    with pytest.raises(ValueError, match="uint8"):
        apply_degradation(FACE.astype(np.float32), "noise", 1, rng)


def test_jitter_keeps_the_face_inside() -> None:
    image = skimage.data.astronaut()
    detection = YuNetDetector().detect(image)
    assert detection is not None
    for seed in range(20):
        rng = np.random.default_rng(seed)
        out, box, jitter = random_jitter(image, detection.landmarks, detection.box, rng)
        assert out.shape == image.shape
        assert abs(jitter.rotation) <= 8 and 0.5 <= jitter.scale <= 1.1
        x, y, w, h = box
        assert x >= -1 and y >= -1 and x + w <= 513 and y + h <= 513
        if seed < 3:  # the jittered face is still found where the box says
            found = YuNetDetector().detect(out)
            assert found is not None
            centre = found.box[:2] + found.box[2:] / 2
            assert np.all(np.abs(centre - (box[:2] + box[2:] / 2)) < 0.25 * box[2:])
