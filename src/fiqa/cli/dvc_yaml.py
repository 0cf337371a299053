"""``fiqa dvc-yaml``: write the project's ``dvc.yaml`` from the stage declarations and the
stages' code (``fiqa.pipeline.dvc_yaml``), with paths from ``conf/paths/``.

    fiqa dvc-yaml            # rewrite dvc.yaml (make dvc-yaml)
    fiqa dvc-yaml --check    # exit 1 when dvc.yaml is not what this command writes
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fiqa.config.compose import compose_config
from fiqa.core.atomic import write_text_atomic
from fiqa.pipeline.dvc_yaml import project_stages, relative, render

HEADER = """\
# Written by `fiqa dvc-yaml` (make dvc-yaml): do not edit by hand. Params, data deps and outputs
# come from fiqa.stages.STAGES, code deps from each stage's import closure, paths from
# conf/paths/. Each stage runs `fiqa <stage>` on the committed params.yaml (composed from conf/
# by `make params`; `dvc exp run -S group=option` recomposes it).
"""


def project_dvc_yaml(repo: Path) -> str:
    """The text of ``dvc.yaml`` for the repository at ``repo``."""
    cfg = compose_config(["paths.root=."], directory=repo / "conf")
    paths = {key: relative(repo / value, repo) for key, value in cfg.paths.items()}
    return render(project_stages(repo, paths), HEADER)


def main(argv: list[str] | None = None) -> int:
    """Write (or, with ``--check``, compare) ``dvc.yaml`` in the current repository."""
    parser = argparse.ArgumentParser(prog="fiqa dvc-yaml", description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=".", help="repository root (default: .)")
    parser.add_argument("--check", action="store_true", help="exit 1 when dvc.yaml is stale")
    args = parser.parse_args(argv)
    repo = Path(args.repo).resolve()
    text, target = project_dvc_yaml(repo), repo / "dvc.yaml"
    if args.check:
        current = target.read_text(encoding="utf-8") if target.is_file() else ""
        if current != text:
            sys.stderr.write(f"{target} is stale: run `fiqa dvc-yaml` (make dvc-yaml)\n")
            return 1
        return 0
    write_text_atomic(target, text)
    return 0
