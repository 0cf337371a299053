"""Where an output came from: code version, file checksums and content digests."""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
from pathlib import Path

import fiqa


@functools.lru_cache(maxsize=1)
def git_revision() -> str:
    """Commit of the working tree (``+dirty`` when it has changes), or "unknown" outside git."""
    cwd = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("+dirty" if dirty else "")


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
    """The fiqa version and git revision, for provenance records."""
    return {"fiqa": fiqa.__version__, "git_revision": git_revision()}


def digest(obj: object, length: int = 16) -> str:
    """Short SHA-256 hex digest of a JSON-serialisable value (keys sorted): cache keys."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]
