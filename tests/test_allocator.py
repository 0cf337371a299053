"""fiqa's commands restart once with glibc malloc thresholds that keep freed tensor memory in
the process (fiqa.cli.allocator); the user's own values and the opt-out are respected."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from fiqa.cli.allocator import MALLOC_ENV, OPT_OUT

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
PROBE = ("import os; from fiqa.cli.allocator import restart_with_malloc_env as restart; "
         "print('start', flush=True); restart(); "
         "print(os.environ.get('MALLOC_MMAP_THRESHOLD_'), os.environ.get('MALLOC_TRIM_THRESHOLD_'))")  # fmt: skip


def probe(**env: str) -> list[str]:
    """The probe's output lines, run with ``env`` on top of a clean environment."""
    base = {k: v for k, v in os.environ.items() if k not in (*MALLOC_ENV, OPT_OUT)}
    out = subprocess.run([sys.executable, "-c", PROBE], env=base | env, capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    return out.splitlines()


def test_a_command_restarts_once_with_the_thresholds():
    lines = probe()
    assert lines == ["start", "start", f"{2**32} {2**32}"]  # the restarted process runs it all


def test_the_users_values_and_the_opt_out_are_kept():
    assert probe(MALLOC_MMAP_THRESHOLD_="65536") == ["start", "65536 None"]
    assert probe(**{OPT_OUT: "1"}) == ["start", "None None"]
