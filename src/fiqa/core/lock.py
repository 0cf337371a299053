"""One writer per output directory: an exclusive ``flock`` on a lock file beside it.

``output_lock(directory)`` holds ``<parent>/.<name>.fiqa-lock`` (beside the directory, never
inside it: the directory is a DVC output, replaced whole) while a run writes ``directory``; a
second process asking for it fails at once with :class:`LockHeldError`, which names the pid the
holder wrote into the file, or, for work one process does for all (``wait=True``: an entry of
the shared extraction cache), waits until the holder is done. The lock is the kernel's ``flock``, which dies with its process: a
lock file left by a killed run (``kill -9``, OOM, power loss) locks nothing and is simply taken
over. The holder removes the file when it is done; an acquirer checks that the file it locked is
still the one at the path, so removal cannot let two processes in.

Within one process the lock is re-entrant (a nested or repeated request for the same directory,
from any thread, only counts): ``flock`` on a second descriptor of the same file would fail
against the process's own lock. Forked children do not inherit the ownership: their requests
fail against the parent's lock. Without ``fcntl`` (not POSIX, e.g. Windows) there is no lock:
``output_lock`` warns once and lets every run in.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".fiqa-lock"
_PID_READS = 20  # tries to read the holder's pid, written just after it locked the file
_PID_WAIT_S = 0.01


class LockHeldError(RuntimeError):
    """Another process holds the lock of an output directory.

    Attributes:
        path: The lock file.
        pid: The holder's pid (None if it could not be read).
    """

    def __init__(self, path: Path, pid: int | None) -> None:
        self.path, self.pid = path, pid
        super().__init__(f"{path} is locked by pid {pid if pid is not None else 'unknown'}")


@dataclass
class _Held:
    fd: int
    pid: int
    depth: int


_HELD: dict[Path, _Held] = {}
_HELD_GUARD = threading.Lock()
_warned = False


def lock_path(directory: str | os.PathLike[str]) -> Path:
    """The lock file of ``directory``: ``<parent>/.<name>.fiqa-lock`` (absolute)."""
    target = Path(os.path.abspath(directory))
    return target.parent.resolve() / f".{target.name}{LOCK_SUFFIX}"


@contextlib.contextmanager
def output_lock(directory: str | os.PathLike[str], wait: bool = False) -> Iterator[Path]:
    """Hold the lock of ``directory`` for the block; yields the lock file.

    Args:
        directory: The directory written under the lock.
        wait: Wait for another process's lock to be released (work that one process does for
            all, e.g. a shared cache entry) instead of failing at once.

    Raises:
        LockHeldError: At once, when another process holds it (and not ``wait``).
    """
    path = lock_path(directory)
    if fcntl is None:
        _warn_unlocked()
        yield path
        return
    _enter(path, wait)
    try:
        yield path
    finally:
        _exit(path)


def _enter(path: Path, wait: bool) -> None:
    """Take the lock of ``path`` or count one more use of it by this process."""
    with _HELD_GUARD:
        held = _HELD.get(path)
        if held is not None and held.pid == os.getpid():
            held.depth += 1
            return
        _HELD[path] = _Held(_acquire(path, wait), os.getpid(), 1)


def _exit(path: Path) -> None:
    """Count one use less; the last removes the lock file and releases the lock."""
    with _HELD_GUARD:
        held = _HELD[path]
        held.depth -= 1
        if held.depth:
            return
        del _HELD[path]
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # while still locked: a waiting acquirer sees the file is gone
        os.close(held.fd)  # releases the flock


def _acquire(path: Path, wait: bool) -> int:
    """A descriptor of ``path`` holding its exclusive flock, with this pid written in it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _holder_pid(fd)
                if not wait:
                    raise LockHeldError(path, pid) from None
                log.info("%s is held by pid %s: waiting for it", path, pid)
                fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        if _is_current(fd, path):
            break
        os.close(fd)  # its holder removed it after we opened it: lock the new file
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _is_current(fd: int, path: Path) -> bool:
    """Whether the open file ``fd`` is still the file at ``path``."""
    try:
        here = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)


def _holder_pid(fd: int) -> int | None:
    """The pid in the lock file (its holder writes it just after locking: retried briefly)."""
    for _ in range(_PID_READS):
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        if text.isdigit():
            return int(text)
        time.sleep(_PID_WAIT_S)
    return None


def _warn_unlocked() -> None:
    global _warned
    if not _warned:
        log.warning("no fcntl on this platform: concurrent runs on one output are not locked")
        _warned = True
