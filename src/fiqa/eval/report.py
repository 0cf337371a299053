"""Markdown/HTML evaluation tables in the layout of the eDifFIQA paper's tables
(Babnik et al., TBIOM 2024).

One table per FR model: rows = quality methods, columns = benchmarks plus ``mean`` (the mean
over benchmarks), one section per discard limit and FMR. Rows come in three groups: the blind
methods (trained models, per-image methods, simple baselines such as the detector's
confidence), ranked, the best (lowest) value of each column in bold; then the *label* rows,
``<method> (label)``: identity-based formulas applied to the evaluated identities themselves,
which see the answer, so they are shown apart and never ranked; last the ``random`` and
``oracle`` references. Markdown and HTML are rendered from the same ``Table`` cells.

Results shape (``metrics/eval.json``, written by the evaluate stage)::

    results[benchmark][fr_model][method] = {
        "pauc@0.2": 0.83,          # normalised pAUC at the default FMR (lower is better)
        "pauc_raw@0.2": 0.05,      # raw area; likewise "pauc@0.3", "pauc_raw@0.3"
        "fnmr@0": 0.06, "threshold": 0.41, "n_genuine": 3000, "n_impostor": 3000,
        "fmr": 0.001,              # optional: the default FMR the unsuffixed keys refer to
        "same_model": True,        # optional: the method's training labels came from this
                                   # FR model (cell marked with a dagger); absent = cross-model
        "kind": "blind",           # blind | label | baseline (absent: baseline for random and
                                   # oracle, blind otherwise)
        "pauc@0.2/fmr=0.0001": 0.91,   # other FMRs: the same keys with "/fmr=<fmr:g>" appended
        "pauc_raw@0.2/fmr=0.0001": 0.1, "fnmr@0/fmr=0.0001": 0.1, "threshold/fmr=0.0001": 0.5,
    }

Files with only the unsuffixed keys (one FMR) stay valid; ``metric_key`` builds the names.
``write_comparison`` compares several runs' eval.json in the same layout: each method gets one
row per run, ``"<method> (<run>)"``, grouped by method, so the runs of a sweep sit next to each
other in every column and the ``mean`` column ranks them; best is marked across all runs.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fiqa.core.atomic import write_text_atomic

BASELINES = ("random", "oracle")
BLIND, LABEL, BASELINE = "blind", "label", "baseline"
KIND_ORDER = (BLIND, LABEL, BASELINE)
KIND_HEADINGS = {
    LABEL: "label rows: identity-based formulas on the evaluated identities (they see the "
    "answer; not ranked)",
    BASELINE: "references: random and oracle quality",
}
DAGGER = "†"
INTRO = (
    "Normalised pAUC of the EDC (1.0 = no better than random quality, lower is better). "
    "One table per FR model; **bold** = best per column among the blind quality methods "
    "(trained models, per-image methods, simple baselines). The label rows, `<method> (label)`, "
    "apply an identity-based label formula to the evaluated identities themselves: they see "
    "the answer and are shown apart, never ranked; the random and oracle references come last. "
    "`mean` = mean over the benchmarks (n/a values skipped, empty when a benchmark is missing)."
)
LEGEND = (
    f"{DAGGER} same-model: the method was trained on labels produced with this FR model; "
    "unmarked cells are cross-model."
)
# A column whose FNMR(0) rests on fewer genuine errors than this (at its FMR, with this FR
# model) is decided by a handful of pairs: shown, flagged, left out of the mean and of "best".
MIN_ERRORS = 25
FEW = "⚑"
FEW_NOTE = (
    f"{FEW} the column's FNMR(0) rests on fewer than {MIN_ERRORS} genuine errors at this FMR: its "
    "values are shown but left out of the mean and of the best."
)
_NUMBER = r"\d*\.?\d+(?:[eE][+-]?\d+)?"
_PAUC_KEY = re.compile(rf"^pauc@(?P<limit>{_NUMBER})(?:/fmr=(?P<fmr>{_NUMBER}))?$")


def metric_key(metric: str, fmr: float | None = None) -> str:
    """Result key of ``metric`` (e.g. ``"pauc@0.2"``) at a non-default ``fmr``.

    ``metric_key("pauc@0.2")`` -> ``"pauc@0.2"``; ``metric_key("pauc@0.2", 1e-4)`` ->
    ``"pauc@0.2/fmr=0.0001"``.
    """
    return metric if fmr is None else f"{metric}/fmr={fmr:g}"


@dataclass(frozen=True)
class Row:
    """One table row: its label, its kind (``BLIND``, ``LABEL``, ``BASELINE``) and its
    (text, best) cells."""

    label: str
    kind: str
    cells: list[tuple[str, bool]]


@dataclass(frozen=True)
class Table:
    """The cells of one table (one FR model, one metric); rendered as markdown or HTML."""

    fr_model: str
    columns: list[str]
    rows: list[Row]


def row_kind(method: str, entry: dict | None) -> str:
    """The kind of a method's row (files written before kinds were recorded: by name)."""
    if entry is not None and entry.get("kind"):
        return str(entry["kind"])
    return BASELINE if method in BASELINES else BLIND


def _value(entry: dict | None, metric: str) -> float | None:
    value = None if entry is None else entry.get(metric)
    return None if value is None else float(value)


def _text(value: float | None) -> str:
    if value is None:
        return ""
    return "n/a" if math.isnan(value) else f"{value:.4f}"


def genuine_errors(entry: dict | None, metric: str) -> int | None:
    """The genuine errors at FNMR(0) behind ``metric`` (``pauc@0.3`` or ``.../fmr=<x>``) of a
    cell entry: ``n_errors`` (or FNMR(0) x genuine pairs in files written before it), None
    when the entry does not say."""
    suffix = metric.partition("/")[2]
    key = "/".join(filter(None, ["n_errors", suffix]))
    if entry is None:
        return None
    if key in entry:
        return int(entry[key])
    fnmr = entry.get("/".join(filter(None, ["fnmr@0", suffix])))
    if fnmr is None or "n_genuine" not in entry or math.isnan(float(fnmr)):
        return None
    return round(float(fnmr) * int(entry["n_genuine"]))


def _mean(values: list[float | None], few: list[bool]) -> float | None:
    """Mean over the columns not flagged: None when one of them is missing, NaN when none is
    finite."""
    counted = [v for v, flagged in zip(values, few, strict=True) if not flagged]
    if any(v is None for v in counted):
        return None
    finite = [v for v in counted if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _cells(sources: Sequence[tuple[str, dict]], metric: str, fr_model: str) -> Table:
    """The table of ``metric`` for one FR model from one or more (run label, results) pairs.

    A single source with an empty label gives one row per method. A benchmark whose FNMR(0)
    rests on fewer than ``MIN_ERRORS`` genuine errors (in any source) is flagged (``FEW``) and
    left out of the mean and of the best. Bold marks the best blind value of a column and every
    blind value inside its bootstrap interval (``<metric>/hi``, ``fiqa.core.intervals``; the
    mean's bound is the mean of the columns' bounds): two bold cells in a column are a tie.
    Without intervals only the best (on the printed 4 decimals) is bold. A value with a
    ``<metric>/sd`` (a study's mean over seeds) is shown as ``mean ± sd``.
    """
    benchmarks: list[str] = []
    methods: list[str] = []
    for _, results in sources:
        for bench, per_fr in results.items():
            if fr_model in per_fr:
                benchmarks += [bench] if bench not in benchmarks else []
                methods += [m for m in per_fr[fr_model] if m not in methods]
    methods = [m for m in methods if m not in BASELINES] + [m for m in BASELINES if m in methods]
    few = []
    for bench in benchmarks:
        counts = [genuine_errors(entry, metric) for _, results in sources
                  for entry in results.get(bench, {}).get(fr_model, {}).values()]  # fmt: skip
        known = [c for c in counts if c is not None]
        few.append(bool(known) and min(known) < MIN_ERRORS)

    raw: list[tuple[str, str, list[float | None], list[float | None], list, list[bool]]] = []
    for method in methods:
        for run, results in sources:
            entries = [results.get(b, {}).get(fr_model, {}).get(method) for b in benchmarks]
            values = [_value(e, metric) for e in entries]
            if all(v is None for v in values):  # no such method here, or not at this FMR
                continue
            highs = [_value(e, f"{metric}/hi") for e in entries]
            sds = [_value(e, f"{metric}/sd") for e in entries]  # over seeds (a study's)
            same = [bool(e and e.get("same_model")) for e in entries] + [False]
            kind = row_kind(method, next(e for e in entries if e is not None))
            label = f"{method} (label)" if kind == LABEL else method
            raw.append((f"{label} ({run})" if run else label, kind,
                        [*values, _mean(values, few)], [*highs, _mean(highs, few)],
                        [*sds, None], same))  # fmt: skip
    raw.sort(key=lambda row: KIND_ORDER.index(row[1]) if row[1] in KIND_ORDER else 0)

    bound: list[float | None] = []  # per column: blind values up to it are bold
    for col in range(len(benchmarks) + 1):
        blind = [(round(vals[col], 4), highs[col]) for _, kind, vals, highs, _, _ in raw
                 if kind == BLIND and vals[col] is not None and not math.isnan(vals[col])]  # fmt: skip
        if not blind or (col < len(few) and few[col]):
            bound.append(None)
            continue
        value, high = min(blind, key=lambda pair: pair[0])
        bound.append(value if high is None or math.isnan(high) else max(value, round(high, 4)))
    rows = []
    for label, kind, values, _, sds, same in raw:
        cells = []
        for col, value in enumerate(values):
            text = _text(value) + (DAGGER if same[col] and value is not None else "")
            if sds[col] is not None and not math.isnan(sds[col]):
                text += f" ± {sds[col]:.3f}"
            is_best = (
                kind == BLIND
                and bound[col] is not None
                and value is not None
                and not math.isnan(value)
                and round(value, 4) <= bound[col]
            )
            cells.append((text, is_best))
        rows.append(Row(label, kind, cells))
    columns = [f"{b} {FEW}" if flagged else b for b, flagged in zip(benchmarks, few, strict=True)]
    return Table(fr_model, [*columns, "mean"], rows)


def best_blind(table: Table) -> tuple[str, str] | None:
    """The blind row with the best ``mean`` and its value as printed, or None (also when the
    mean is a tie: ``tied_blind``)."""
    marked = [(row.label, row.cells[-1][0]) for row in table.rows
              if row.kind == BLIND and row.cells[-1][1]]  # fmt: skip
    return marked[0] if len(marked) == 1 else None


def best_line(table: Table) -> str | None:
    """The sentence under a table: its best blind method by mean, or the ones tied for it."""
    if best := best_blind(table):
        return f"Best blind method (mean): `{best[0]}` {best[1]}."
    if tied := tied_blind(table):
        names = ", ".join(f"`{name}`" for name in tied)
        return f"Tied for the best mean (inside the best's bootstrap interval): {names}."
    return None


def tied_blind(table: Table) -> list[str]:
    """The blind rows tied for the best ``mean`` (inside the best's interval), when several."""
    marked = [row.label for row in table.rows if row.kind == BLIND and row.cells[-1][1]]
    return marked if len(marked) > 1 else []


def metric_tables(sources: Sequence[tuple[str, dict]], metric: str) -> list[Table]:
    """The non-empty tables of ``metric``, one per FR model in order of first appearance."""
    fr_models: list[str] = []
    for _, results in sources:
        for per_fr in results.values():
            fr_models += [fr for fr in per_fr if fr not in fr_models]
    return [t for t in (_cells(sources, metric, fr) for fr in fr_models) if t.rows]


def table_markdown(table: Table) -> str:
    """A ``Table`` as a markdown table (best cells in bold)."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = [
        f"| method | {' | '.join(cell(c) for c in table.columns)} |",
        "|---" * (len(table.columns) + 1) + "|",
    ]
    for row, heading in _with_headings(table):
        if heading:
            lines.append(f"| *{heading}* |" + " |" * len(table.columns))
        texts = [f"**{text}**" if best else text for text, best in row.cells]
        lines.append(f"| {cell(row.label)} | {' | '.join(texts)} |")
    return "\n".join(lines)


def _with_headings(table: Table) -> list[tuple[Row, str | None]]:
    """Each row with the heading of its group when it starts one (label rows, references)."""
    out, previous = [], BLIND
    for row in table.rows:
        starts = row.kind != previous and row.kind in KIND_HEADINGS
        out.append((row, KIND_HEADINGS[row.kind] if starts else None))
        previous = row.kind
    return out


def table_html(table: Table) -> str:
    """The same ``Table`` as HTML (best cells in ``<b>``)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["method", *table.columns])
    width = len(table.columns) + 1
    body = "".join(
        (f"<tr><td colspan='{width}'><i>{html.escape(heading)}</i></td></tr>" if heading else "")
        + f"<tr><td>{html.escape(row.label)}</td>"
        + "".join(
            f"<td>{'<b>' + html.escape(t) + '</b>' if best else html.escape(t)}</td>"
            for t, best in row.cells
        )
        + "</tr>"
        for row, heading in _with_headings(table)
    )
    return f"<table border='1' cellspacing='0' cellpadding='4'><tr>{head}</tr>{body}</table>"


def eval_markdown(results: dict, metric: str) -> str:
    """Markdown tables of ``metric``, one per FR model (``### <fr model>`` headings)."""
    tables = metric_tables([("", results)], metric)
    return "\n\n".join(f"### {t.fr_model}\n\n{table_markdown(t)}" for t in tables)


def eval_html(results: dict, metric: str) -> str:
    """The same tables as ``eval_markdown``, as HTML."""
    tables = metric_tables([("", results)], metric)
    return "".join(f"<h3>{html.escape(t.fr_model)}</h3>{table_html(t)}" for t in tables)


def _sections(
    sources: Sequence[tuple[str, dict]], limits: Sequence[float] | None
) -> list[tuple[str, str]]:
    """(heading, metric key) per FMR (default first, then descending) and discard limit."""
    found: dict[str, set[str]] = {}  # fmr suffix ("" = default) -> limits present
    default_fmrs: set[float] = set()
    for _, results in sources:
        for per_fr in results.values():
            for per_method in per_fr.values():
                for entry in per_method.values():
                    default_fmrs |= {float(entry["fmr"])} if "fmr" in entry else set()
                    for key in entry:
                        if match := _PAUC_KEY.match(key):
                            found.setdefault(match["fmr"] or "", set()).add(match["limit"])
    default = f"FMR={default_fmrs.pop():g}" if len(default_fmrs) == 1 else "default FMR"
    wanted = None if limits is None else [f"{lim:g}" for lim in limits]
    if wanted is not None:
        found.setdefault("", set())
    sections = []
    for suffix in sorted(found, key=lambda s: (s != "", -float(s or 0))):
        for limit in wanted or sorted(found[suffix], key=float):
            # Requested limits always get a default-FMR section; other FMRs only where present.
            if limit in found[suffix] or suffix == "":
                key = f"pauc@{limit}" + (f"/fmr={suffix}" if suffix else "")
                label = f"FMR={suffix}" if suffix else default
                sections.append((f"pAUC@{limit}, {label}", key))
    return sections


CELL_SECTIONS = (  # (heading, note, metric prefix) of the per-cell tables of one run
    ("Operating points", "The quality threshold below which a share of the faces (templates "
     "on IJB) falls (`op@discard=<share>/threshold`) and the FNMR of the genuine pairs it keeps "
     "at the fixed comparison threshold; the lowest threshold whose kept pairs reach the target "
     "FNMR (`op@fnmr=<f>/threshold`) and the share of faces it discards.", "op@"),
    ("Template verification (TAR at FAR)", "`tar`: plain templates (per media the mean unit "
     "embedding, summed); `tar_qaware`: each image weighted by the method's quality percentile "
     "inside its media. n/a: too few impostor pairs to show that FAR.", "tar"),
)  # fmt: skip


def cell_tables(results: dict, prefix: str) -> list[Table]:
    """Per (benchmark, FR model): the metrics starting with ``prefix`` as columns, one row per
    method that has them (``Table.fr_model`` = ``<benchmark>, <fr model>``); none without."""
    tables = []
    for bench, per_fr in results.items():
        for fr_model, per_method in per_fr.items():
            columns = list(dict.fromkeys(k for e in per_method.values() for k in e
                                         if k.startswith(prefix)))  # fmt: skip
            rows = [Row(method, row_kind(method, entry),
                        [(_text(_value(entry, c)), False) for c in columns])
                    for method, entry in per_method.items()
                    if any(c in entry for c in columns)]  # fmt: skip
            if rows:
                tables.append(Table(f"{bench}, {fr_model}", columns, rows))
    return tables


def _has_same_model(sources: Sequence[tuple[str, dict]]) -> bool:
    return any(
        entry.get("same_model")
        for _, results in sources
        for per_fr in results.values()
        for per_method in per_fr.values()
        for entry in per_method.values()
    )


def _inline_markdown_to_html(text: str) -> str:
    """The two inline marks the notes use: ``**bold**`` and ```code```."""
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(text))
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def _documents(
    sources: Sequence[tuple[str, dict]],
    title: str,
    limits: Sequence[float] | None,
    figures: Sequence[str] = (),
) -> tuple[str, str]:
    """The markdown and HTML documents, built from the same tables (one run: with its
    operating points and template TARs)."""
    notes = [INTRO] + ([LEGEND] if _has_same_model(sources) else [])
    sections = _sections(sources, limits)
    flagged = any(
        FEW in c for _, m in sections for t in metric_tables(sources, m) for c in t.columns
    )
    notes += [FEW_NOTE] if flagged else []
    md = [f"# {title}", "", *[line for note in notes for line in (note, "")]]
    page = [
        f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        *[f"<p>{_inline_markdown_to_html(note)}</p>" for note in notes],
    ]
    for heading, metric in sections:
        md += [f"## {heading}", ""]
        page.append(f"<h2>{html.escape(heading)}</h2>")
        for table in metric_tables(sources, metric):
            md += [f"### {table.fr_model}", "", table_markdown(table), ""]
            page.append(f"<h3>{html.escape(table.fr_model)}</h3>{table_html(table)}")
            if line := best_line(table):
                md += [line, ""]
                page.append(f"<p>{_inline_markdown_to_html(line)}</p>")
    for heading, note, prefix in CELL_SECTIONS if len(sources) == 1 else ():
        tables = cell_tables(sources[0][1], prefix)
        if tables:
            md += [f"## {heading}", "", note, ""]
            page += [f"<h2>{html.escape(heading)}</h2>", f"<p>{_inline_markdown_to_html(note)}</p>"]
        for table in tables:
            md += [f"### {table.fr_model}", "", table_markdown(table), ""]
            page.append(f"<h3>{html.escape(table.fr_model)}</h3>{table_html(table)}")
    if figures:
        md += ["## EDC curves", ""] + [f"![{Path(f).stem}]({f})" for f in figures] + [""]
        page.append("<h2>EDC curves</h2>")
        page += [
            f"<figure><img src='{html.escape(f)}' alt='{html.escape(Path(f).stem)}'>"
            f"<figcaption>{html.escape(Path(f).stem)}</figcaption></figure>"
            for f in figures
        ]
    page.append("</body></html>")
    return "\n".join(md).rstrip("\n") + "\n", "\n".join(page) + "\n"


def write_eval_report(
    results: dict, out_stem: Path, limits: Sequence[float], figures: Sequence[str] = ()
) -> tuple[Path, Path]:
    """reports/eval.md and reports/eval.html: one section per limit and FMR, figures embedded.

    Args:
        results: The results dict (module docstring).
        out_stem: Output path without suffix, e.g. ``reports/eval``.
        limits: Discard limits to report (e.g. ``[0.2, 0.3]``).
        figures: EDC figure paths relative to the report files (e.g. ``edc_lfw__sface.png``).

    Returns:
        The markdown and HTML paths.
    """
    md, page = _documents([("", results)], "EDC evaluation", limits, figures)
    md_path, html_path = out_stem.with_suffix(".md"), out_stem.with_suffix(".html")
    write_text_atomic(md_path, md)
    write_text_atomic(html_path, page)
    return md_path, html_path


def write_eval_markdown(
    results: dict, path: Path, limits: list[float], figures: Sequence[str] = ()
) -> None:
    """reports/eval.md only (``write_eval_report`` writes the HTML next to it as well)."""
    write_text_atomic(path, _documents([("", results)], "EDC evaluation", limits, figures)[0])


def write_comparison(eval_files: list[Path], out_stem: Path) -> tuple[Path, Path]:
    """Compare several eval.json files: markdown and HTML, one row per method and run.

    A file ``<run>/metrics/eval.json`` is labelled ``<run>``, any other file by its stem (the
    full path when labels repeat); a single file gives plain method rows. Every pAUC key found
    in any file gets a section.
    """
    loaded = []
    for path in eval_files:
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found (give metrics/eval.json files)")
        try:
            results = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from err
        resolved = path.resolve()
        run = resolved.parent.parent.name if resolved.parent.name == "metrics" else path.stem
        loaded.append((run, path, results))
    labels = [run for run, _, _ in loaded]
    sources = [
        (run if labels.count(run) == 1 else str(path), results) for run, path, results in loaded
    ]
    return write_comparison_of(sources, out_stem)


def write_comparison_of(sources: list[tuple[str, dict]], out_stem: Path) -> tuple[Path, Path]:
    """Markdown and HTML comparison of named results dicts (runs, DVC experiments)."""
    title = "fiqa evaluation comparison"
    if len(sources) == 1:  # one run: plain method rows, the run named in the title
        title, sources = f"{title}: {sources[0][0]}", [("", sources[0][1])]
    md, page = _documents(sources, title, None)
    md_path, html_path = out_stem.with_suffix(".md"), out_stem.with_suffix(".html")
    write_text_atomic(md_path, md)
    write_text_atomic(html_path, page)
    return md_path, html_path


_OP_KEY = re.compile(rf"^op@(?P<kind>discard|fnmr)=(?P<at>{_NUMBER})/(?P<what>\w+)$")


def thresholds_text(results: dict, method: str) -> str:
    """``method``'s operating points in every (benchmark, FR model) of an eval.json, as text.

    Raises:
        ValueError: When no cell has operating points of ``method`` (the message lists the
            methods that have them).
    """
    lines, known = [], set()
    for bench, per_fr in results.items():
        for fr_model, per_method in per_fr.items():
            known |= {m for m, e in per_method.items() if any(_OP_KEY.match(k) for k in e)}
            entry = per_method.get(method, {})
            points: dict[tuple[str, str], dict[str, float]] = {}
            for key, value in entry.items():
                if match := _OP_KEY.match(key):
                    points.setdefault((match["kind"], match["at"]), {})[match["what"]] = value
            if not points:
                continue
            lines.append(f"{method} on {bench} with {fr_model} (comparison threshold "
                         f"{entry['threshold']:.4f} at FMR {entry['fmr']:g}):")  # fmt: skip
            for (kind, at), p in points.items():
                if kind == "discard":
                    lines.append(f"  discard {float(at):>6.1%}: quality < {p['threshold']:.4f}"
                                 f"  -> FNMR {p['fnmr']:.4f}")  # fmt: skip
                elif math.isnan(p["threshold"]):
                    lines.append(f"  FNMR <= {at}: not reached by any quality threshold")
                else:
                    lines.append(f"  FNMR <= {at}: quality < {p['threshold']:.4f} (discards "
                                 f"{p['discarded']:.1%})")  # fmt: skip
    if not lines:
        raise ValueError(f"no operating points of {method!r} in this eval.json; methods with "
                         f"them: {', '.join(sorted(known)) or 'none (an older eval.json?)'}")  # fmt: skip
    return "\n".join(lines) + "\n"
