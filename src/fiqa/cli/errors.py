"""How fiqa's commands report errors: a user's mistake in one line, a bug with its traceback.

A known user error (``USER_ERRORS``: a config key missing or out of range, a stage that cannot
produce its outputs, a missing input file, a held output lock, inputs of different runs) ends
``fiqa <stage>``, ``fiqa study``, ``python train.py`` and the tools (``fiqa score``, ``fiqa
report``, ...) with one line ``<prog>: <message>`` on stderr and exit code 2 (a config error) or
1. ``-v``/``--verbose`` or ``HYDRA_FULL_ERROR=1`` show its full traceback instead. Any other exception is a bug and keeps Hydra's report (its
traceback). In a Hydra multirun the job fails as before and Hydra reports it when the sweep's
batch is done: ``Error executing job with overrides: [...]``, then the same one line.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode

from fiqa.config.typed import ConfigError
from fiqa.core.lineage import LineageError
from fiqa.core.lock import LockHeldError
from fiqa.stages import StageError

USER_ERRORS = (ConfigError, StageError, LineageError, LockHeldError, FileNotFoundError)
VERBOSE_FLAGS = ("-v", "--verbose")
FULL_ERROR = "HYDRA_FULL_ERROR"  # Hydra's own switch: set, it re-raises what a job raised


class JobError(CompactHydraException):
    """A user error of one multirun job: Hydra reports a compact exception by its message."""


def verbose_errors(argv: list[str]) -> list[str]:
    """``argv`` without ``-v``/``--verbose``; when one was given, errors are shown with their
    full traceback (``HYDRA_FULL_ERROR=1``, which Hydra reads too)."""
    rest = [arg for arg in argv if arg not in VERBOSE_FLAGS]
    if len(rest) < len(argv):
        os.environ[FULL_ERROR] = "1"
    return rest


def full_errors() -> bool:
    """Whether errors are shown with their full traceback (``-v`` or ``HYDRA_FULL_ERROR=1``)."""
    return os.environ.get(FULL_ERROR) == "1"


@contextlib.contextmanager
def reported_errors(prog: str, stage: str) -> Iterator[None]:
    """Around a Hydra task function's body or a tool: a user error ends the command in one line.

    Args:
        prog: The command, first on the line (``fiqa train``, ``train.py``).
        stage: The stage; a message's own ``<stage>: `` prefix is not repeated after ``prog``.

    Raises:
        SystemExit: 2 after a config error, 1 after another user error (in a single run).
        JobError: The user error's one line, in a Hydra multirun (the job fails).
    """
    try:
        yield
    except USER_ERRORS as err:
        if full_errors():
            raise
        message = f"{prog}: {str(err).removeprefix(f'{stage}: ')}"
        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            raise JobError(message) from err
        sys.stderr.write(message + "\n")
        raise SystemExit(2 if isinstance(err, ConfigError) else 1) from None
