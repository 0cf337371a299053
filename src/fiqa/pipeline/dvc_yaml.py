"""DVC stage entries and their ``dvc.yaml`` text, from the stage declarations and their code.

Each stage's code ``deps`` are the static import closure of ``fiqa.stages.<stage>`` (every
``fiqa`` module reachable by an ``import``, module-level or inside a function, and the packages'
own ``__init__``; imports for type checking only are not run and do not count), followed by its
input paths. Every value a stage reads passes through the config's typing first
(``fiqa.config.validate`` builds the settings from the classes of ``fiqa.config.schemas``, some
with derived values), so those two files are code deps of every stage; their own imports are not
followed (the settings classes they gather live in the modules that use them, already in the
closure of each stage that does). The entry points around a stage (``fiqa.cli``,
``fiqa.stages.runner``: dispatch and locks, ``fiqa.config.ranges``: range checks) can stop a
stage but not change its outputs, and are left out, so a stage re-runs only when code that can
change its outputs changes. Editing any module a stage can run makes ``dvc status`` report that
stage as changed.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from fiqa.core.artifacts import EDC_PLOTS
from fiqa.stages import STAGES

TYPE_CHECKING_TESTS = ("TYPE_CHECKING", "typing.TYPE_CHECKING")
# What every stage's settings pass through (the files, not their imports).
SETTINGS_CODE = ("fiqa.config.validate", "fiqa.config.schemas")
# How `dvc plots show / diff` draws each plots directory: the EDC files hold one record per
# method and discard fraction (fiqa.eval.figures.sampled_curves), drawn by the repository's
# template .dvc/plots/edc.json, one figure per benchmark x FR model file, a colour per method
# and a dash per revision.
PLOT_PROPERTIES = {
    EDC_PLOTS: {"template": "edc", "x": "discard", "y": "fnmr",
                "x_label": "fraction of genuine comparisons discarded",
                "y_label": "FNMR at the fixed FMR threshold"},
}  # fmt: skip


@dataclass(frozen=True)
class DvcStage:
    """One stage entry of a ``dvc.yaml``.

    Attributes:
        name: Stage name.
        cmd: Its command.
        deps: Files and directories it reads (code first).
        params: Config keys its outputs depend on, read from ``params_file``.
        outs: Directories it writes (cached).
        metrics: Metrics files (not cached).
        plots: ``(directory, name in PLOT_PROPERTIES)`` of its plots (not cached).
        params_file: The params file (None: ``params.yaml`` beside the ``dvc.yaml``).
        wdir: Working directory of ``cmd``, relative to the ``dvc.yaml`` (None: its folder);
            the paths above are relative to it.
    """

    name: str
    cmd: str
    deps: Sequence[str]
    params: Sequence[str]
    outs: Sequence[str]
    metrics: Sequence[str] = ()
    plots: Sequence[tuple[str, str]] = ()
    params_file: str | None = None
    wdir: str | None = None

    def entry(self) -> dict:
        """The stage's mapping in ``dvc.yaml``."""
        out: dict = {}
        if self.wdir is not None:
            out["wdir"] = self.wdir
        out["cmd"] = self.cmd
        out["deps"] = list(self.deps)
        params = list(self.params)
        out["params"] = [{self.params_file: params}] if self.params_file else params
        out["outs"] = list(self.outs)
        if self.metrics:
            out["metrics"] = [{path: {"cache": False}} for path in self.metrics]
        if self.plots:
            out["plots"] = [{path: {"cache": False, **PLOT_PROPERTIES[kind]}}
                            for path, kind in self.plots]  # fmt: skip
        return out


def render(stages: Sequence[DvcStage], header: str) -> str:
    """The text of a ``dvc.yaml`` holding ``stages``, after the comment ``header``."""
    body = yaml.safe_dump({"stages": {s.name: s.entry() for s in stages}}, sort_keys=False,
                          width=100)  # fmt: skip
    return header + body


def module_file(src: Path, name: str) -> Path | None:
    """The file of module ``name`` under ``src`` (a package's ``__init__.py``), or None."""
    base = src.joinpath(*name.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path, src: Path) -> set[str]:
    """Project modules ``path`` imports anywhere in its code (``fiqa`` and ``hydra_plugins``),
    but for type checking only (``if TYPE_CHECKING:``: never run, so never a cause of an
    output)."""
    package = ".".join(path.relative_to(src).with_suffix("").parts)
    if path.name == "__init__.py":
        package = package.rsplit(".", 1)[0]
    else:
        package = package.rpartition(".")[0]
    names: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
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


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of ``tree`` but those under ``if TYPE_CHECKING:``."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and ast.unparse(node.test) in TYPE_CHECKING_TESTS:
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


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


def code_deps(stage: str, src: Path, relative_to: Path) -> list[str]:
    """The code ``deps`` of ``stage``: its import closure and the ``SETTINGS_CODE`` files,
    relative to ``relative_to``, sorted."""
    files = set(import_closure([f"fiqa.stages.{stage}"], src))
    for name in SETTINGS_CODE:
        path = module_file(src, name)
        if path is None:
            raise FileNotFoundError(f"no module {name} under {src}")
        files.add(path)
    return [relative(p, relative_to) for p in sorted(files)]


def relative(path: str | Path, start: Path) -> str:
    """``path`` relative to ``start`` in POSIX form (``../data`` for paths outside it)."""
    return Path(os.path.relpath(Path(path).absolute(), start.absolute())).as_posix()


def project_stages(repo: Path, paths: Mapping[str, str]) -> list[DvcStage]:
    """The project pipeline's stages (``fiqa.stages.STAGES``), with ``paths`` the composed
    ``paths`` group relative to ``repo``: each runs ``fiqa <stage>`` on the committed
    ``params.yaml``."""
    src = repo / "src"
    return [
        DvcStage(
            name=s.name,
            cmd=f"fiqa {s.name} --config-dir . --config-name params",
            deps=[*code_deps(s.name, src, repo), *(paths[k] for k in s.deps)],
            params=list(s.params),
            outs=[paths[k] for k in s.outs],
            metrics=[f"{paths[key]}/{name}" for key, name in s.metrics],
            plots=[(f"{paths[key]}/{name}", name) for key, name in s.plots],
        )
        for s in STAGES.values()
    ]
