"""One run per stage output (fiqa.core.lock, fiqa.stages.runner): concurrent runs fail at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fiqa.core.lock import LockHeldError, lock_path, output_lock

# A second process that takes the lock of argv[1] through the same API, says so, and sleeps.
HOLDER = """
import sys, time
from fiqa.core.lock import output_lock
with output_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""
# A second process that tries the lock of argv[1] once: exit 0 if it got it, 3 if held.
TRY = """
import sys
from fiqa.core.lock import LockHeldError, output_lock
try:
    with output_lock(sys.argv[1]):
        pass
except LockHeldError as err:
    print(err.pid)
    sys.exit(3)
"""


def start_holder(directory: Path) -> subprocess.Popen[str]:
    """A subprocess holding the lock of ``directory`` (returns once it holds it)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(directory)],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def try_in_other_process(directory: Path) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-c", TRY, str(directory)], capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    return done.returncode, done.stdout.strip()


def stop(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait(timeout=30)


def test_lock_file_sits_beside_the_output_directory(tmp_path: Path):
    assert lock_path(tmp_path / "data" / "prepared") == tmp_path / "data" / ".prepared.fiqa-lock"


def test_a_second_process_fails_at_once_naming_the_holder(tmp_path: Path):
    out = tmp_path / "labels"
    holder = start_holder(out)
    try:
        start = time.monotonic()
        with pytest.raises(LockHeldError) as err, output_lock(out):
            pass
        assert time.monotonic() - start < 5  # at once, not after waiting
        assert err.value.pid == holder.pid and str(holder.pid) in str(err.value)
        assert try_in_other_process(out) == (3, str(holder.pid))
    finally:
        stop(holder)


def test_a_concurrent_stage_run_fails_before_any_work_and_leaves_nothing(tmp_path: Path):
    from fiqa.config import compose_config
    from fiqa.stages import StageError
    from fiqa.stages.runner import run_stage

    cfg = compose_config([f"paths.root={tmp_path}", f"data.root={tmp_path / 'raw'}",
                          "logger=none"])  # fmt: skip
    holder = start_holder(tmp_path / "data" / "prepared")
    try:
        before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
        message = rf"another fiqa prepare is running \(pid {holder.pid}\)"
        with pytest.raises(StageError, match=message):
            run_stage("prepare", cfg)
        assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
        assert before == [Path("data"), Path("data/.prepared.fiqa-lock")]  # the holder's only
    finally:
        stop(holder)


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path: Path):
    out = tmp_path / "models"
    holder = start_holder(out)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    stale = lock_path(out)
    assert stale.read_text().strip() == str(holder.pid)  # left behind by the killed run
    with output_lock(out) as path:
        assert path == stale and path.read_text().strip() == str(os.getpid())
    assert not stale.exists()  # removed by its last holder


def test_the_lock_is_reentrant_within_a_process_and_released_after(tmp_path: Path):
    from fiqa.stages.runner import stage_lock

    out = tmp_path / "reports"
    with stage_lock("evaluate", [out]):
        with stage_lock("evaluate", [out]), output_lock(out):  # nested: no self-deadlock
            pass
        assert try_in_other_process(out) == (3, str(os.getpid()))  # still held by the outer
    assert not lock_path(out).exists()
    assert try_in_other_process(out) == (0, "")
    for _ in range(2):  # sequential runs (a multirun's jobs) each take and release it
        with stage_lock("evaluate", [out]):
            pass


def test_a_stage_run_inside_a_held_lock_of_its_own_process_does_not_block(tmp_path: Path):
    from fiqa.config import compose_config
    from fiqa.config.validate import load_settings
    from fiqa.stages import StageError
    from fiqa.stages.runner import output_dirs, run_stage, stage_lock

    cfg = compose_config([f"paths.root={tmp_path}", f"data.root={tmp_path / 'absent'}",
                          "logger=none"])  # fmt: skip
    outputs = output_dirs("prepare", load_settings(cfg).paths)
    with stage_lock("prepare", outputs), pytest.raises(StageError) as err:
        run_stage("prepare", cfg)  # fails for the missing data, not on its own process's lock
    assert "another fiqa" not in str(err.value) and "absent" in str(err.value)


def test_a_waiting_acquirer_gets_the_lock_when_its_holder_is_done(tmp_path: Path):
    """Work one process does for all (a shared cache entry): the second waits instead of
    failing, and takes the lock as soon as the first releases it."""
    entry = tmp_path / "cache" / "sface-0123"
    holder = start_holder(entry)
    released: list[float] = []
    try:
        import threading

        def release_soon() -> None:
            time.sleep(1.0)
            released.append(time.monotonic())
            stop(holder)

        threading.Thread(target=release_soon).start()
        with output_lock(entry, wait=True):
            acquired = time.monotonic()
        assert released and acquired >= released[0]
    finally:
        if holder.poll() is None:
            stop(holder)
