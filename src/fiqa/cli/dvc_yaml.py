"""``fiqa dvc-yaml``: write ``dvc.yaml`` from the stage declarations and the stages' code.

Each stage's ``deps`` are its code, computed as the static import closure of
``fiqa.stages.<stage>`` (every ``fiqa`` module reachable by an ``import``, module-level or inside
a function, and the packages' own ``__init__``), followed by its input directories. The entry
point around it (``fiqa.cli``, ``fiqa.stages.runner``: validation and dispatch) can stop a stage
but not change its outputs, and is left out, so a stage re-runs only when its own code changes; ``params``, ``outs``, ``metrics`` and
``plots`` come from ``fiqa.stages.STAGES``, with paths from ``conf/paths/``. Editing any module a
stage can run therefore makes ``dvc status`` report that stage as changed.

    fiqa dvc-yaml            # rewrite dvc.yaml (make dvc-yaml)
    fiqa dvc-yaml --check    # exit 1 when dvc.yaml is not what this command writes
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

from fiqa.config.compose import compose_config
from fiqa.core.artifacts import EDC_PLOTS
from fiqa.core.atomic import write_text_atomic
from fiqa.stages import STAGES, Stage

HEADER = """\
# Written by `fiqa dvc-yaml` (make dvc-yaml): do not edit by hand. Params, data deps and outputs
# come from fiqa.stages.STAGES, code deps from each stage's import closure, paths from
# conf/paths/. Each stage runs `fiqa <stage>` on the committed params.yaml (composed from conf/
# by `make params`; `dvc exp run -S group=option` recomposes it).
"""
# How `dvc plots show / diff` draws each plots directory: the EDC files hold one record per
# method and discard fraction (fiqa.eval.figures.sampled_curves), drawn by the repository's
# template .dvc/plots/edc.json, one figure per benchmark x FR model file, a colour per method
# and a dash per revision.
PLOT_PROPERTIES = {
    EDC_PLOTS: ("template: edc", "x: discard", "y: fnmr",
                "x_label: fraction of genuine comparisons discarded",
                "y_label: FNMR at the fixed FMR threshold"),
}  # fmt: skip


def module_file(src: Path, name: str) -> Path | None:
    """The file of module ``name`` under ``src`` (a package's ``__init__.py``), or None."""
    base = src.joinpath(*name.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path, src: Path) -> set[str]:
    """Project modules ``path`` imports anywhere in its code (``fiqa`` and ``hydra_plugins``)."""
    package = ".".join(path.relative_to(src).with_suffix("").parts)
    if path.name == "__init__.py":
        package = package.rsplit(".", 1)[0]
    else:
        package = package.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}  # submodules
    return {n for n in names if n.split(".")[0] in ("fiqa", "hydra_plugins")}


def import_closure(roots: list[str], src: Path) -> list[Path]:
    """Every project file the modules ``roots`` can import, and the ``__init__`` of each package
    on the way, sorted."""
    seen: set[Path] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__, a/b/__init__
            path = module_file(src, ".".join(parts[:i]))
            if path is not None and path not in seen:
                seen.add(path)
                todo.extend(imported_modules(path, src))
    return sorted(seen)


def _relative(path: str) -> str:
    return Path(path).as_posix().removeprefix("./")


def render(repo: Path) -> str:
    """The text of ``dvc.yaml`` for the repository at ``repo``."""
    src = repo / "src"
    cfg = compose_config(["paths.root=."], directory=repo / "conf")
    paths = {key: _relative(value) for key, value in cfg.paths.items()}
    lines = [HEADER + "stages:"]
    for stage in STAGES.values():
        lines += _stage_lines(stage, repo, src, paths)
    return "\n".join(lines) + "\n"


def _stage_lines(stage: Stage, repo: Path, src: Path, paths: dict[str, str]) -> list[str]:
    code = import_closure([f"fiqa.stages.{stage.name}"], src)
    deps = [p.relative_to(repo).as_posix() for p in code] + [paths[k] for k in stage.deps]
    lines = [f"  {stage.name}:", f"    cmd: fiqa {stage.name} --config-dir . --config-name params"]
    lines += ["    deps:", *(f"      - {d}" for d in deps)]
    lines += ["    params:", *(f"      - {p}" for p in stage.params)]
    lines += ["    outs:", *(f"      - {paths[k]}" for k in stage.outs)]
    for section, entries in (("metrics", stage.metrics), ("plots", stage.plots)):
        if entries:
            lines.append(f"    {section}:")
            for key, name in entries:
                lines += [f"      - {paths[key]}/{name}:", "          cache: false"]
                if section == "plots":
                    lines += [f"          {prop}" for prop in PLOT_PROPERTIES[name]]
    return lines


def main(argv: list[str] | None = None) -> int:
    """Write (or, with ``--check``, compare) ``dvc.yaml`` in the current repository."""
    parser = argparse.ArgumentParser(prog="fiqa dvc-yaml", description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=".", help="repository root (default: .)")
    parser.add_argument("--check", action="store_true", help="exit 1 when dvc.yaml is stale")
    args = parser.parse_args(argv)
    repo = Path(args.repo).resolve()
    text, target = render(repo), repo / "dvc.yaml"
    if args.check:
        current = target.read_text(encoding="utf-8") if target.is_file() else ""
        if current != text:
            sys.stderr.write(f"{target} is stale: run `fiqa dvc-yaml` (make dvc-yaml)\n")
            return 1
        return 0
    write_text_atomic(target, text)
    return 0
