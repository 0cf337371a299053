"""The documentation's command lines, config references and links against the code, ``conf/``
and the repository's files.

The documentation is README.md and docs/*.md, read as one text. Every ``fiqa ...``,
``python train.py ...`` and ``dvc exp run -S ...`` line (code blocks and inline code) is checked
without running anything: Hydra commands (the stages,
``fiqa study``, ``train.py``, DVC's ``-S`` overrides) compose their overrides and pass
``load_settings``; the tools (``fiqa score``, ``report``, ...) get their flags checked against
their own argparse parser. Every config file, group option and table row named exists, and
every relative link of a page points at a file.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from fiqa.cli.main import TOOLS
from fiqa.config import compose_config
from fiqa.config.validate import load_settings
from fiqa.label import METHODS
from fiqa.stages import STAGES

REPO_ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
README = "\n\n".join(path.read_text(encoding="utf-8") for path in DOC_FILES)  # all pages
CONF = REPO_ROOT / "conf"
GROUPS = sorted(str(d.relative_to(CONF)) for d in CONF.rglob("*") if any(d.glob("*.yaml")))

# The README's placeholders, each replaced by a value (any other `<...>` or `...` fails).
PLACEHOLDERS = {
    "data.root=...": "data.root=/datasets/my_faces",
    "data.table=...": "data.table=/datasets/my_faces.csv",
    "model.lr=...": "model.lr=1e-4",
}
# A `...` token on its own elides further overrides: composed, but not validated (incomplete).
ELIDED = "..."
# Command-line patterns rather than commands: not composed, for the reason given.
PATTERNS = {
    "fiqa <stage>": "any stage",
    "fiqa <stage> --config-dir . --config-name params": "dvc.yaml's commands (fiqa dvc-yaml)",
    "fiqa <stage> --config-dir studies/<name> --config-name params ...": "a study's (fiqa study)",
}
# Hydra-only overrides: their config file must exist; composing them needs an optional plugin.
HYDRA_ONLY = {"hydra/launcher=slurm": "the [slurm] extra (hydra-submitit-launcher)"}


@dataclass(frozen=True)
class Command:
    """One command line of the README: its words, and whether a code block shows it."""

    words: tuple[str, ...]
    in_code_block: bool

    def __str__(self) -> str:
        return " ".join(self.words)


def code_blocks(text: str) -> list[str]:
    return re.findall(r"^```\w*\n(.*?)^```", text, flags=re.M | re.S)


def inline_spans(text: str) -> list[str]:
    """Inline code spans outside code blocks (one may wrap a line), whitespace collapsed."""
    prose = re.sub(r"^```\w*\n.*?^```", "", text, flags=re.M | re.S)
    return [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose)]


def command_lines(line: str) -> list[list[str]]:
    """Our commands in one shell line (comments dropped, split at ``&&``, ``;``, ``|``)."""
    if not re.search(r"\bfiqa [<a-z]|\btrain\.py\b|\bdvc exp run\b", line):
        return []  # prose such as "the paper's" is no shell line
    words = shlex.split(line, comments=True)
    commands, current = [], []
    for word in words:
        if word in {"&&", ";", "|", "||"}:
            commands.append(current)
            current = []
        else:
            current.append(word)
    return [c for c in [*commands, current] if is_ours(c)]


def is_ours(words: list[str]) -> bool:
    return (
        (len(words) >= 2 and words[0] == "fiqa" and re.fullmatch(r"<?[a-z-]+>?", words[1]))
        or words[:2] == ["python", "train.py"]
        or words[:3] == ["dvc", "exp", "run"]
    )


def readme_commands() -> list[Command]:
    found: list[Command] = []
    for block in code_blocks(README):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            if is_ours(line.split()):
                found += [Command(tuple(w), True) for w in command_lines(line)]
            for span in re.findall(r"`([^`]+)`", line):  # e.g. in a Python comment
                found += [Command(tuple(w), False) for w in command_lines(span)]
    for span in inline_spans(README):
        found += [Command(tuple(w), False) for w in command_lines(span)]
    unique: dict[tuple[str, ...], Command] = {}
    for command in found:  # a code block's copy wins over an inline mention
        if command.words not in unique or command.in_code_block:
            unique[command.words] = command
    return list(unique.values())


COMMANDS = readme_commands()
HYDRA = [c for c in COMMANDS if str(c) not in PATTERNS and (
    c.words[0] in {"python", "dvc"} or c.words[1] in {*STAGES, "study"})]  # fmt: skip
TOOL_COMMANDS = [c for c in COMMANDS if c.words[0] == "fiqa" and c.words[1] in TOOLS]


def test_every_readme_command_is_checked_or_a_listed_pattern():
    unchecked = [str(c) for c in COMMANDS if c not in HYDRA + TOOL_COMMANDS]
    assert sorted(unchecked) == sorted(PATTERNS), "commands this test neither composes nor parses"
    used = {w for c in COMMANDS for w in c.words}
    assert set(PLACEHOLDERS) | set(HYDRA_ONLY) <= used, "allow-list entries no longer used"


def overrides_of(command: Command) -> tuple[list[str], bool]:
    """(Hydra overrides, multirun) of a Hydra command, placeholders substituted."""
    words = list(command.words)
    if words[0] == "dvc":  # dvc exp run [--queue ...] -S key=value ...: sweeps always expand
        overrides = [w for flag, w in itertools.pairwise(words) if flag in {"-S", "--set-param"}]
        multirun = True
    else:
        args = words[2:]
        multirun = bool({"-m", "--multirun"} & set(args))
        flags = [a for a in args if a.startswith("-") and a not in {"-m", "--multirun"}]
        assert not flags, f"{command}: Hydra flags {flags} this test does not know"
        overrides = [a for a in args if a not in {"-m", "--multirun"}]
    overrides = [PLACEHOLDERS.get(o, o) for o in overrides]
    unresolved = [o for o in overrides if o != ELIDED and ("<" in o or "..." in o)]
    assert not unresolved, f"{command}: placeholders {unresolved}: add them to PLACEHOLDERS"
    return overrides, multirun


def override_sets(overrides: list[str], multirun: bool) -> list[list[str]]:
    """Each job of a sweep (``model.lr=1e-3,3e-4`` -> one list per value)."""
    if not multirun:
        return [overrides]
    choices = []
    for override in OverridesParser.create().parse_overrides(overrides):
        text = override.input_line
        if override.is_sweep_override():
            key = override.get_key_element()
            choices.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            choices.append([text])
    return [list(job) for job in itertools.product(*choices)]


def test_the_readme_shows_commands_of_every_kind():
    """The extraction finds what the README shows (a parser that finds nothing checks nothing)."""
    kinds = {c.words[1] if c.words[0] == "fiqa" else c.words[0] for c in COMMANDS}
    assert {*STAGES, "study", "score", "report", "python", "dvc"} - {"ddpm"} <= kinds
    assert len(HYDRA) >= 20 and len(TOOL_COMMANDS) >= 4
    assert any("-m" in c.words for c in HYDRA)
    assert any(w.startswith("data.exclude=") for c in HYDRA for w in c.words)  # a continuation


@pytest.mark.parametrize("command", HYDRA, ids=str)
def test_hydra_command_of_the_readme_composes_and_validates(command: Command):
    overrides, multirun = overrides_of(command)
    for override in [o for o in overrides if o in HYDRA_ONLY]:
        group, option = override.split("=")
        assert (CONF / group / f"{option}.yaml").is_file(), override
    if any(o in HYDRA_ONLY for o in overrides):  # that launcher's own keys go with it
        overrides = [o for o in overrides if not o.startswith("hydra.launcher.")]
    overrides = [o for o in overrides if o not in HYDRA_ONLY]
    for job in override_sets([o for o in overrides if o != ELIDED], multirun):
        cfg = compose_config(job)
        if ELIDED not in overrides:
            load_settings(cfg)


def tool_parser(tool: str) -> argparse.ArgumentParser:
    """The argparse parser ``fiqa <tool>`` builds, caught as it parses (the tool does not run)."""

    class Parsed(Exception):
        pass

    caught: list[argparse.ArgumentParser] = []

    def catch(parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        caught.append(parser)
        raise Parsed

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", catch)
        with contextlib.suppress(Parsed):
            TOOLS[tool]([])
    assert caught, f"fiqa {tool} ran without parsing its arguments with argparse"
    return caught[0]


@pytest.mark.parametrize("command", TOOL_COMMANDS, ids=str)
def test_tool_command_of_the_readme_uses_its_flags(command: Command):
    """Flags exist; a code block's command line parses in full (an inline one may name a flag
    alone: `fiqa report --wandb`)."""
    parser = tool_parser(command.words[1])
    args = list(command.words[2:])
    known = set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", parser.format_help()))
    flags = [a.split("=")[0] for a in args if re.match(r"--?[A-Za-z]", a)]
    assert set(flags) <= known, f"{command}: unknown flags {sorted(set(flags) - known)}"
    if command.in_code_block:
        error = io.StringIO()
        with contextlib.redirect_stderr(error), contextlib.suppress(SystemExit):
            parser.parse_args(args)
        assert not error.getvalue(), f"{command}: {error.getvalue()}"


def option_exists(group: str, option: str) -> bool:
    if group == "label":  # label=<method> options come from the method registry
        return option in METHODS
    if group.startswith("hydra/"):  # Hydra's own and its installed plugins' options too
        from hydra import initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra

        with initialize_config_dir(str(CONF), version_base="1.3"):
            return option in GlobalHydra.instance().config_loader().get_group_options(group)
    return (CONF / group / f"{option}.yaml").is_file()


def expand_names(cell: str) -> list[str]:
    """Option names of a table's first cell: `iresnet18/34/50` -> iresnet18, iresnet34,
    iresnet50; `ediffiqa_s` / `_m` -> ediffiqa_s, ediffiqa_m; `a`, `b` -> a, b."""
    names: list[str] = []
    for span in re.findall(r"`([^`]+)`", cell):
        first, *rest = span.split("/")
        if span.startswith("_") and names:  # `_m` after `ediffiqa_s`
            names.append(names[-1].rsplit("_", 1)[0] + span)
            continue
        names.append(first)
        stem = re.fullmatch(r"(.*?)\d+", first)
        names += [stem.group(1) + r for r in rest if stem and r.isdigit()]
    return names


def table_options() -> list[tuple[str, str]]:
    """(group, option) of each table whose first header names a group (`data=`, `conf/fr/`)."""
    found: list[tuple[str, str]] = []
    group = None
    for line in README.splitlines():
        if not line.startswith("|"):
            group = None
            continue
        first = line.split("|")[1]
        header = re.search(r"`([\w/]+)=`|`conf/([\w/]+)/`", first)
        if group is None and header:
            group = header.group(1) or header.group(2)
        elif group and not set(first.strip()) <= {"-"}:
            found += [(group, name) for name in expand_names(first)]
    return found


def inline_options() -> list[tuple[str, str]]:
    """(group, option) of the `group=option` words of inline code and code blocks
    (`trainer=cpu|gpu|ddp`: each; `label=<method>`: a placeholder, left out)."""
    spans = inline_spans(README) + [s for b in code_blocks(README) for s in re.findall(r"`([^`]+)`", b)]  # fmt: skip
    spans += [block.replace("\\\n", " ") for block in code_blocks(README)]
    found = []
    for word in (w for s in spans for w in s.replace("'", " ").split()):
        key, _, value = word.partition("=")
        if key.lstrip("+~") in GROUPS and value and not value.startswith("<"):
            found += [(key.lstrip("+~"), v) for v in re.split(r"[|,]", value) if v]
    return sorted(set(found))


def test_the_config_files_the_readme_names_exist():
    paths = set(re.findall(r"[\w./<>-]+\.yaml", README))
    assert {"conf/label/common.yaml", "experiment/base/ediffiqa.yaml"} <= paths
    for path in sorted(paths):
        if "<" in path:  # `conf/fr/<name>.yaml`: a pattern; its folder exists or fiqa writes it
            folder = path.split("<")[0].rstrip("/")
            assert (REPO_ROOT / folder).is_dir() or folder in output_folders(), path
        elif "/" in path:
            assert (REPO_ROOT / path).is_file() or (CONF / path).is_file(), path
        else:  # `params.yaml`, or `common.yaml` named beside its group
            assert (REPO_ROOT / path).is_file() or list(CONF.rglob(path)), path


def output_folders() -> set[str]:
    """The folders the stages write (``paths.*`` below ``paths.root``): absent from a fresh clone."""
    paths = compose_config(["logger=none"]).paths
    return {str(Path(v)) for k, v in paths.items() if k != "root" and not Path(v).is_absolute()}


def test_the_group_options_the_readme_names_exist():
    named = table_options() + inline_options()
    groups = {g for g, _ in named}
    assert {"data", "fr", "ddpm", "experiment", "label", "model", "eval/benchmark"} <= groups
    missing = [f"{g}={o}" for g, o in named if not option_exists(g, o)]
    assert not missing, f"README names options with no conf/<group>/<option>.yaml: {missing}"


def configuration_lists() -> dict[str, list[str]]:
    """The option lists of the Configuration section: `data` (demo, folder, ...), ..."""
    section = README.split("Hydra config groups in `conf/`:", 1)[1].split("\n\n", 1)[0]
    lists: dict[str, list[str]] = {}
    for group, inside in re.findall(r"`([a-z_/]+)`\s*\(([^)]*)\)", section):
        for segment in inside.split(";"):
            name, parts = group, segment.split(":")
            if len(parts) == 2 and not is_name_list(parts[0]):  # `eval/benchmark`: a, b
                inner = re.search(r"`([a-z_/]+)`", parts[0])
                name, parts = (inner.group(1) if inner else group), parts[1:]
            if is_name_list(parts[0]):
                lists.setdefault(name, []).extend(n.strip() for n in parts[0].split(","))
    return lists


def is_name_list(text: str) -> bool:
    return all(re.fullmatch(r"\w+", n.strip()) for n in text.split(","))


def test_the_configuration_section_lists_exactly_the_options():
    lists = configuration_lists()
    assert {"data", "fr", "label", "ddpm", "model", "trainer", "logger", "eval",
            "eval/benchmark", "study", "debug", "hydra/launcher"} <= set(lists)  # fmt: skip
    for group, listed in lists.items():
        present = sorted(METHODS) if group == "label" else sorted(
            p.stem for p in (CONF / group).glob("*.yaml")
        )  # fmt: skip
        assert sorted(listed) == present, f"README Configuration, `{group}`"


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def broken_links(page: Path, text: str) -> list[str]:
    """The relative link targets of ``text`` (a markdown page at ``page``) that name no file
    or folder; web links and in-page anchors are not checked."""
    prose = re.sub(r"^```\w*\n.*?^```", "", text, flags=re.M | re.S)
    targets = [t for t in LINK.findall(prose) if not re.match(r"[a-z]+:|#", t)]
    return [t for t in targets if not (page.parent / t.split("#", 1)[0]).exists()]


def test_a_broken_link_is_caught(tmp_path: Path):
    (tmp_path / "there.md").write_text("x")
    text = "[ok](there.md) [web](https://example.org) [anchor](#top) [gone](missing.md#part)"
    assert broken_links(tmp_path / "page.md", text) == ["missing.md#part"]


@pytest.mark.parametrize("page", DOC_FILES, ids=[p.name for p in DOC_FILES])
def test_relative_links_point_at_files(page: Path):
    assert not broken_links(page, page.read_text(encoding="utf-8")), page.name
