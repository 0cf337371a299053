"""prepare on awkward inputs: files edited before a resume, decompression bombs, odd folder
entries (symlink loops, dangling links, loose files, sub-folders)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skimage.data
from PIL import Image

import fiqa.data.preparation as preparation
from fiqa.config import compose_config
from fiqa.config.typed import typed
from fiqa.config.validate import load_settings
from fiqa.data.face_pipeline import PrepareDataset
from fiqa.data.face_store import PreparedFaces
from fiqa.data.folder import LISTING_FAILURE_REASONS
from fiqa.data.ms1m import write_ms1m
from fiqa.data.sources import FileBytes, RecordBytes, Source, read_source
from fiqa.stages.runner import run_stage
from test_images import black_png
from test_prepare import die_after_two_shards

FACE = skimage.data.astronaut()[:300, 100:400]


def make_faces(root: Path, identities: int = 3, per_identity: int = 2) -> None:
    """``root/id<k>/<i>.jpg``: shifted astronaut crops, all with one detectable face."""
    for k in range(identities):
        (root / f"id{k}").mkdir(parents=True)
        for i in range(per_identity):
            shifted = np.roll(FACE, 4 * (k * per_identity + i), axis=1)
            Image.fromarray(shifted).save(root / f"id{k}" / f"{i}.jpg", quality=90)


def config(root: Path, *overrides: str):
    return compose_config(
        [
            "data=folder",
            f"data.root={root / 'raw'}",
            f"paths.root={root}",
            "logger=none",
            "prepare.shard_size=2",
            "prepare.num_workers=0",
            *overrides,
        ]
    )


def failure_reasons(root: Path) -> dict[str, str]:
    failures = PreparedFaces(root / "data" / "prepared").failures
    return dict(zip(failures["path"], failures["reason"], strict=True))


# --- resume after an edit -------------------------------------------------------------------------


def test_resume_starts_afresh_when_a_finished_shards_input_was_replaced(
    tmp_path, monkeypatch, caplog
):
    make_faces(tmp_path / "raw")  # 6 images, 3 shards of 2
    real_write = die_after_two_shards(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run_stage("prepare", config(tmp_path))
    assert (tmp_path / "data" / "prepared.partial" / "part-00000.parquet").is_file()
    # id0/0.jpg (shard 0, done) is replaced by a photo without a face
    Image.fromarray(skimage.data.rocket()).save(tmp_path / "raw" / "id0" / "0.jpg")
    monkeypatch.setattr(preparation, "write_shard_part", real_write)
    with caplog.at_level(logging.INFO, logger="fiqa.data.preparation"):
        summary = run_stage("prepare", config(tmp_path))
    assert "starting afresh" in caplog.text
    assert summary["prepare/resumed_shards"] == 0.0
    assert failure_reasons(tmp_path) == {"id0/0.jpg": "no_face"}  # the new file, not the old
    assert "id0/0.jpg" not in set(PreparedFaces(tmp_path / "data" / "prepared").manifest["path"])


def _fingerprint(source: Source) -> str:
    settings = load_settings(compose_config(["logger=none"]))
    return preparation.fingerprint(settings.prepare, settings.data, source)


def test_fingerprint_follows_size_and_mtime_and_survives_missing_files(tmp_path):
    make_faces(tmp_path, identities=1)
    table = read_source(
        load_settings(compose_config(["data=folder", f"data.root={tmp_path}"])).data
    ).table
    source = Source(table, FileBytes(tmp_path))
    first = _fingerprint(source)
    assert _fingerprint(source) == first
    image = tmp_path / "id0" / "1.jpg"
    mtime = image.stat().st_mtime_ns
    image.write_bytes(image.read_bytes()[::-1])  # same size, other bytes
    os.utime(image, ns=(mtime, mtime))
    assert _fingerprint(source) == first  # what a stat sees did not change: one stat, no read
    os.utime(image, ns=(mtime + 1_000_000, mtime + 1_000_000))
    second = _fingerprint(source)
    assert second != first
    image.unlink()  # a missing input is a failure row later, not a crash here
    assert _fingerprint(source) not in (first, second)


def test_fingerprint_follows_the_recordio_files(tmp_path):
    write_ms1m(tmp_path, [(0, b"record 0"), (1, b"record 1")], image_size=(112, 112))
    table = pd.DataFrame({"path": ["train.rec#1", "train.rec#2"], "identity": ["0", "1"]})
    source = Source(table, RecordBytes(tmp_path / "train.rec", tmp_path / "train.idx"))
    first = _fingerprint(source)
    os.utime(tmp_path / "train.rec", ns=(1, 1))  # a rewritten .rec
    second = _fingerprint(source)
    os.utime(tmp_path / "train.idx", ns=(1, 1))
    assert len({first, second, _fingerprint(source)}) == 3


# --- image size limit -----------------------------------------------------------------------------


def test_prepare_max_image_pixels_reaches_the_reader(tmp_path):
    make_faces(tmp_path, identities=1, per_identity=1)
    table = read_source(
        load_settings(compose_config(["data=folder", f"data.root={tmp_path}"])).data
    ).table
    read = FileBytes(tmp_path)
    for limit, reason in ((100, "too_large"), (300 * 300, None)):
        cfg = compose_config(["logger=none", f"prepare.max_image_pixels={limit}"])
        aligner = typed(cfg.prepare, preparation.PrepareSettings).aligner()
        assert PrepareDataset(table, np.array([0]), read, aligner)[0].reason == reason
    with pytest.raises(ValueError, match=r"prepare\.max_image_pixels must be >= 1"):
        typed(compose_config(["prepare.max_image_pixels=0"]).prepare, preparation.PrepareSettings)


# --- odd folder entries ---------------------------------------------------------------------------


def make_odd_folder(raw: Path) -> dict[str, str]:
    """Two identities of good faces plus every odd entry; returns the expected failures."""
    make_faces(raw, identities=2)
    person = raw / "id0"
    os.symlink("loop.jpg", person / "loop.jpg")  # a link to itself: ELOOP
    os.symlink("gone.jpg", person / "dangling.jpg")
    (person / "x.jpg").mkdir()  # a folder named like an image
    (person / "sub").mkdir()  # a nested folder, with an image that is not descended into
    Image.fromarray(FACE).save(person / "sub" / "0.jpg")
    (person / ".hidden.jpg").write_bytes(b"ignored like today")
    (person / "bomb.png").write_bytes(black_png(20000, 20000))
    Image.fromarray(FACE).save(raw / "loose.jpg")  # outside any identity folder
    os.symlink("loop_id", raw / "loop_id")  # an identity folder that is a link loop
    os.symlink("../id1/0.jpg", person / "linked.jpg")  # a link to a good file: an image
    (raw / ".cache").mkdir()  # hidden: ignored
    return {
        "id0/loop.jpg": "symlink_loop",
        "id0/dangling.jpg": "dangling_link",
        "id0/x.jpg": "not_a_file",
        "id0/sub": "nested_folder",
        "id0/bomb.png": "too_large",
        "loose.jpg": "outside_identity_folder",
        "loop_id": "symlink_loop",
    }


def test_odd_folder_entries_become_failure_rows_and_good_images_are_prepared(tmp_path, caplog):
    expected = make_odd_folder(tmp_path / "raw")
    with caplog.at_level(logging.WARNING, logger="fiqa.data.folder"):
        summary = run_stage("prepare", config(tmp_path, "prepare.max_failure_rate=0.9"))
    assert failure_reasons(tmp_path) == expected
    assert {r for r in expected.values() if r != "too_large"} <= set(LISTING_FAILURE_REASONS)
    manifest = PreparedFaces(tmp_path / "data" / "prepared").manifest
    assert sorted(manifest["path"]) == ["id0/0.jpg", "id0/1.jpg", "id0/linked.jpg", "id1/0.jpg",
                                        "id1/1.jpg"]  # fmt: skip
    assert summary["prepare/images_read"] == 12.0  # 6 listed files + 6 odd entries
    assert summary["prepare/failed/too_large"] == 1.0
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "fiqa.data.folder"]
    assert "6 entries are not <identity>/<file> images" in warning
