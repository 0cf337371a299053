"""params.yaml: the default config composed from ``conf/`` exactly as DVC composes it.

``dvc repro`` reads params.yaml as committed; ``dvc exp run -S group=option`` recomposes it with
DVC's own Hydra composition. Regenerate after editing ``conf/``::

    python -m fiqa.config.params_file            # or: make params
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from dvc.utils.hydra import compose_and_dump

from fiqa.core.atomic import write_text_atomic


def compose_params(config_dir: Path, overrides: list[str] | None = None) -> str:
    """The YAML text DVC would write for ``conf/config.yaml`` with ``overrides``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "params.yaml"
        compose_and_dump(out, str(config_dir.resolve()), None, "config", "", overrides or [])
        return out.read_text(encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Write ``params.yaml`` from ``conf/`` (arguments: Hydra overrides)."""
    argv = sys.argv[1:] if argv is None else argv
    write_text_atomic("params.yaml", compose_params(Path("conf"), argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
