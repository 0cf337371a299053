"""Atomic file writes: every output appears complete or not at all.

Temporary files and directories are created with the modes a plain ``open`` / ``mkdir`` gives
(``0o666`` / ``0o777`` less the process umask, applied by the kernel at creation), not the
owner-only ``0o600`` / ``0o700`` of ``tempfile.mkstemp`` / ``mkdtemp``: they become the outputs
others read. Creating them with the wanted mode, instead of a ``chmod`` afterwards, never reads
the umask (``os.umask`` can only be read by setting it, process-wide and racy with threads) and
honours default ACLs like any other file.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

_ATTEMPTS = 100  # names tried before giving up (a clash of 64 random bits is a bug elsewhere)


def _create_unique(parent: Path, prefix: str, create: Callable[[Path], None]) -> Path:
    """Create a new entry ``parent/<prefix><random>.tmp`` with ``create`` (which must fail
    with ``FileExistsError`` when the name is taken); returns its path."""
    for _ in range(_ATTEMPTS):
        candidate = parent / f"{prefix}{secrets.token_hex(8)}.tmp"
        try:
            create(candidate)
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"no free temporary name {prefix}*.tmp in {parent}")


def _new_file(path: Path) -> None:
    """Create the empty file ``path`` (mode 0o666 less the umask), failing if it exists."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


def _new_dir(path: Path) -> None:
    """Create the directory ``path`` (mode 0o777 less the umask), failing if it exists."""
    path.mkdir(mode=0o777)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    The temporary file lives in the same directory so the final ``os.replace`` is atomic; it
    has the mode of a plain ``open`` (0o666 less the umask). On any exception the temporary
    file is removed and ``path`` is left untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_unique(target.parent, f".{target.name}.", _new_file)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` (a directory) on success.

    The directory has the mode of a plain ``mkdir`` (0o777 less the umask).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_unique(target.parent, f".{target.name}.", _new_dir)
    try:
        yield tmp
        replace_dir(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(src: Path, target: Path) -> None:
    """Put directory ``src`` at ``target`` (same filesystem), replacing any previous one.

    The old directory is first renamed aside, so ``target`` is at every moment either the
    complete old or the complete new directory (absent only between two renames).
    """
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(src, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, target)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
