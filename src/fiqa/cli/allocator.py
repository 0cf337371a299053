"""Keep freed tensor memory in the process: glibc's malloc thresholds for fiqa's commands.

glibc serves every allocation above its mmap threshold (adjusted at run time, at most 32 MiB)
with fresh pages and returns them to the kernel when freed. A batched forward pass allocates
activations of tens of MiB per layer, so every batch re-maps and re-zeroes them: on 2 CPU cores,
SFace on 64 faces spends more time in page faults than in its convolutions (49 ms per face;
22.7 ms with the thresholds below, 8x fewer page faults). The thresholds can be raised past
32 MiB only through the environment, before the process starts, so the ``fiqa`` command and
``train.py`` restart themselves once with them set. Every process they start (DVC's stage
commands, Hydra's launchers, data-loader workers) inherits them. Values set by the user are
kept as they are; ``FIQA_KEEP_MALLOC=1`` leaves glibc's defaults.
"""

from __future__ import annotations

import os
import platform
import sys

# Freed blocks stay in the heap for the next batch (peak memory is unchanged: nothing more is
# allocated, it is only not handed back between batches).
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(2**32), "MALLOC_TRIM_THRESHOLD_": str(2**32)}
OPT_OUT = "FIQA_KEEP_MALLOC"


def restart_with_malloc_env() -> None:
    """Re-execute this command with ``MALLOC_ENV`` (glibc on Linux only), unless it is set,
    the user opted out, or this is already the restarted process."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return
    if os.environ.get(OPT_OUT) or any(key in os.environ for key in MALLOC_ENV):
        return
    os.environ.update(MALLOC_ENV)
    os.execv(sys.executable, sys.orig_argv)
