"""Atomic writes (fiqa.core.atomic): an output appears complete or not at all."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from fiqa.core.atomic import (
    atomic_dir,
    atomic_path,
    replace_dir,
    write_json_atomic,
    write_text_atomic,
)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_atomic_path_replaces_on_success_and_keeps_the_old_file_on_failure(tmp_path: Path):
    target = tmp_path / "out" / "table.txt"  # the parent is created
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_text("first")
    assert target.read_text() == "first"
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_text("half of the second")
        raise RuntimeError("disk full")
    assert target.read_text() == "first"
    assert leftovers(target.parent) == []  # no temporary file left behind


def test_atomic_dir_swaps_whole_directories(tmp_path: Path):
    target = tmp_path / "labels"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("a")
        (tmp / "b.txt").write_text("b")
    with pytest.raises(KeyboardInterrupt), atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("new a")
        raise KeyboardInterrupt  # killed mid-write
    assert sorted(p.name for p in target.iterdir()) == ["a.txt", "b.txt"]
    assert (target / "a.txt").read_text() == "a"
    with atomic_dir(target) as tmp:
        (tmp / "c.txt").write_text("c")
    assert sorted(p.name for p in target.iterdir()) == ["c.txt"]  # the old files are gone
    assert leftovers(tmp_path) == []


def test_replace_dir_onto_a_missing_target_and_json(tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    write_json_atomic(src / "m.json", {"pauc@0.2": 0.5, "n": [1, 2]})
    replace_dir(src, tmp_path / "dst")
    assert not src.exists()
    assert json.loads((tmp_path / "dst" / "m.json").read_text()) == {"pauc@0.2": 0.5, "n": [1, 2]}


@pytest.mark.parametrize(("umask", "file_mode", "dir_mode"),
                         [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775)])  # fmt: skip
def test_outputs_get_the_modes_of_the_umask_not_owner_only(
    tmp_path: Path, umask: int, file_mode: int, dir_mode: int
):
    previous = os.umask(umask)
    try:
        write_text_atomic(tmp_path / "report.md", "# report\n")
        with atomic_dir(tmp_path / "labels") as tmp:
            (tmp / "labels.parquet").write_bytes(b"x")
        with atomic_path(tmp_path / "model.onnx") as tmp, open(tmp, "wb") as fh:  # a writer
            fh.write(b"onnx")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "report.md").stat().st_mode) == file_mode
    assert stat.S_IMODE((tmp_path / "model.onnx").stat().st_mode) == file_mode
    assert stat.S_IMODE((tmp_path / "labels").stat().st_mode) == dir_mode
