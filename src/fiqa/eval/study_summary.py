"""A study's result as a small committed file, and the documentation tables made from it.

``fiqa study`` ends by writing ``<study>/study.json``: for every FR model, benchmark and row of
the study's evaluation, the pAUCs with their bootstrap intervals and the genuine errors behind
them (``metrics/eval.json`` cut down to what the tables show), and every regressor's validation
metrics (``metrics/<method>/train.json``). A study of several seeds (``study.seeds``) has one
row ``<m>(R)-s<seed>`` per training: the summary gives ``<m>(R)`` their mean, with the standard
deviation over seeds (``<metric>/sd``) and an interval that holds both the mean of the seeds'
bootstrap intervals and mean +- sd. ``fiqa study-tables study.json --write docs/study.md
README.md`` renders it into each page between marker lines, with the evaluation reports' rules
(a column of fewer than ``MIN_ERRORS`` genuine errors flagged and left out of the mean, bold for
the best and for every value inside its interval): the full tables between ``BEGIN`` and
``END``, the headline (each method's mean per FR model, with its interval) between
``HEADLINE_BEGIN`` and ``HEADLINE_END``. ``--check`` fails when a page and the file disagree, so
the numbers cannot go stale (a test runs it on the committed study).
"""

from __future__ import annotations

import json
import math
import re
import statistics
from pathlib import Path
from typing import Any

from fiqa.core.artifacts import EVAL_METRICS, TRAIN_METRICS
from fiqa.core.atomic import write_json_atomic, write_text_atomic
from fiqa.eval.report import (
    BLIND,
    FEW,
    FEW_NOTE,
    MIN_ERRORS,
    Table,
    best_line,
    metric_tables,
    table_markdown,
    tied_blind,
)

STUDY_SUMMARY = "study.json"
METRIC = "pauc@0.3"
KEPT = ("pauc@0.2", "pauc@0.3", "pauc@0.2/lo", "pauc@0.2/hi", "pauc@0.3/lo", "pauc@0.3/hi",
        "fnmr@0", "n_errors", "n_genuine", "n_impostor", "same_model", "kind", "fmr")  # fmt: skip
TRAINING = ("val/spearman", "train/best_val_spearman", "train/beats_constant")
BEGIN = "<!-- study tables: made by fiqa study-tables from the study's study.json; do not edit -->"
END = "<!-- end of the study tables -->"
HEADLINE_BEGIN = ("<!-- study headline: made by fiqa study-tables from the study's study.json; "
                  "do not edit -->")  # fmt: skip
HEADLINE_END = "<!-- end of the study headline -->"


def study_summary(directory: str | Path) -> dict[str, Any]:
    """The small record of the study in ``directory`` (``metrics/eval.json`` and each
    regressor's ``metrics/<method>/train.json``).

    Raises:
        FileNotFoundError: When the study has no evaluation yet.
    """
    metrics = Path(directory) / "metrics"
    if not (metrics / EVAL_METRICS).is_file():
        raise FileNotFoundError(f"{metrics / EVAL_METRICS} not found: the study has not been "
                                "evaluated yet (run fiqa study)")  # fmt: skip
    results = json.loads((metrics / EVAL_METRICS).read_text())
    slim = {bench: {fr: over_seeds({method: {k: v for k, v in entry.items() if k in KEPT}
                                    for method, entry in per_method.items()})
                    for fr, per_method in per_fr.items()}
            for bench, per_fr in results.items()}  # fmt: skip
    runs: dict[str, list[dict[str, float]]] = {}
    rows = sorted({row for per_fr in results.values() for per_method in per_fr.values()
                   for row in per_method})  # fmt: skip
    for row in rows:  # only the evaluated regressors: a folder may hold an older run's files
        match = REGRESSOR.match(row)
        if not match:
            continue
        seed = f"s{match['seed']}" if match["seed"] is not None else ""
        record = metrics / match["method"] / seed / TRAIN_METRICS
        if not record.is_file():
            continue
        train = json.loads(record.read_text())
        runs.setdefault(match["method"], []).append({k: train[k] for k in TRAINING if k in train})
    regressors = {m: _mean_sd(r, TRAINING) for m, r in runs.items()}
    return {"study": Path(directory).name, "metric": METRIC, "results": slim,
            "regressors": regressors}  # fmt: skip


REGRESSOR = re.compile(r"^(?P<method>.+)\(R\)(?:-s(?P<seed>\d+))?$")  # <m>(R) or <m>(R)-s<seed>


def over_seeds(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One cell's rows with each regressor's seeds (``<m>(R)-s<seed>``) merged into ``<m>(R)``
    (module docstring); other rows as they are."""
    out: dict[str, dict[str, Any]] = {}
    seeded: dict[str, list[dict[str, Any]]] = {}
    for name, entry in rows.items():
        match = REGRESSOR.match(name)
        if match and match["seed"] is not None:
            row = f"{match['method']}(R)"
            seeded.setdefault(row, []).append(entry)
            out.setdefault(row, {})
        else:
            out[name] = entry
    for name, entries in seeded.items():
        merged = dict(entries[0]) | _mean_sd(entries, ("pauc@0.2", "pauc@0.3"))
        for key in ("pauc@0.2", "pauc@0.3"):
            mean, sd = merged.get(key), merged.get(f"{key}/sd", 0.0)
            for side, sign, pick in (("lo", -1, min), ("hi", 1, max)):
                bounds = [e.get(f"{key}/{side}") for e in entries]
                if mean is None or math.isnan(mean):
                    continue
                spread = mean + sign * (sd if not math.isnan(sd) else 0.0)
                known = [b for b in bounds if b is not None and not math.isnan(b)]
                merged[f"{key}/{side}"] = pick(spread, sum(known) / len(known)) if known \
                    else spread  # fmt: skip
        out[name] = merged | {"seeds": len(entries)}
    return out


def _mean_sd(entries: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, float]:
    """``key`` = the mean over ``entries`` and ``key/sd`` their sample standard deviation
    (only the mean with one entry; NaN values left out)."""
    out: dict[str, float] = {}
    for key in keys:
        values = [float(e[key]) for e in entries if key in e and not math.isnan(float(e[key]))]
        if not values:
            continue
        out[key] = statistics.fmean(values)
        if len(entries) > 1:
            out[f"{key}/sd"] = statistics.stdev(values) if len(values) > 1 else math.nan
    return out


def write_study_summary(directory: str | Path) -> Path:
    """``<directory>/study.json`` from the study's metrics; returns its path."""
    path = Path(directory) / STUDY_SUMMARY
    write_json_atomic(path, study_summary(directory))
    return path


def study_tables(summary: dict[str, Any]) -> str:
    """The markdown of a study summary: one table of its metric per FR model (the evaluation
    reports' rules), then each regressor's validation Spearman."""
    metric = summary["metric"]
    lines = [f"{metric} at FMR {_fmr(summary)}, normalised (1.0 = random quality, lower is "
             "better); † = the FR model of the labels (same-model)."]  # fmt: skip
    tables = metric_tables([("", summary["results"])], metric)
    if any(FEW in column for table in tables for column in table.columns):
        lines.append(FEW_NOTE)
    for table in tables:
        lines += ["", f"**{table.fr_model}**", "", table_markdown(table)]
        if line := best_line(table):
            lines += ["", line]
    if summary["regressors"]:
        lines += ["", "| regressor | validation Spearman | beats the constant (share of seeds) |",
                  "|---|---|---|"]  # fmt: skip
        for name, train in summary["regressors"].items():
            rho = f"{train.get('val/spearman', math.nan):.2f}"
            if "val/spearman/sd" in train:
                rho += f" ± {train['val/spearman/sd']:.2f}"
            beats = train.get("train/beats_constant")
            lines.append(f"| {name} | {rho} | {'' if beats is None else f'{beats:.0%}'} |")
    return "\n".join(lines)


def study_headline(summary: dict[str, Any]) -> str:
    """The markdown of a study's headline: every blind row's mean over the unflagged benchmarks
    of each FR model (bold: best or tied, as in the full tables), with the mean of the columns'
    interval bounds, and which columns each mean leaves out."""
    metric = summary["metric"]
    tables = metric_tables([("", summary["results"])], metric)
    names = list(dict.fromkeys(row.label for table in tables for row in table.rows
                               if row.kind == BLIND))  # fmt: skip
    heads = [f"{t.fr_model}{' †' if _same_model(summary, t.fr_model) else ''}" for t in tables]
    lines = [f"Mean {metric} at FMR {_fmr(summary)} over the benchmarks with at least "
             f"{MIN_ERRORS} genuine errors, normalised (1.0 = random quality, lower is better), "
             "[mean of the columns' interval bounds]; bold = best, or inside the best's "
             "interval (a tie); † = the FR model of the labels (same-model).", "",
             f"| method | {' | '.join(heads)} |", "|---" * (len(tables) + 1) + "|"]  # fmt: skip
    for name in names:
        cells = [_headline_cell(summary, table, name) for table in tables]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    lines.append("")
    for table in tables:
        left_out = [c.removesuffix(f" {FEW}") for c in table.columns if c.endswith(FEW)]
        tied = tied_blind(table)
        line = (f"{len(tied)} methods tied for the best mean (bold: inside the best's interval)."
                if tied else best_line(table) or "No best blind method (mean).")  # fmt: skip
        note = f" Left out ({FEW}): {', '.join(left_out)}." if left_out else ""
        lines.append(f"- {table.fr_model}: {line}{note}")
    return "\n".join(lines)


def _headline_cell(summary: dict[str, Any], table: Table, name: str) -> str:
    """A row's mean cell of ``table`` with its interval (``[lo, hi]``), bold when best."""
    row = next((r for r in table.rows if r.label == name), None)
    if row is None:
        return ""
    text, best = row.cells[-1]
    benchmarks = [c for c in table.columns[:-1] if not c.endswith(FEW)]
    bounds = []
    for side in ("lo", "hi"):
        values = [summary["results"][b][table.fr_model].get(name, {}).get(f"{summary['metric']}"
                                                                          f"/{side}")
                  for b in benchmarks]  # fmt: skip
        finite = [v for v in values if v is not None and not math.isnan(v)]
        bounds.append(statistics.fmean(finite) if finite and len(finite) == len(values) else None)
    if None not in bounds:
        text += f" [{bounds[0]:.3f}, {bounds[1]:.3f}]"
    return f"**{text}**" if best else text


def _same_model(summary: dict[str, Any], fr_model: str) -> bool:
    return any(entry.get("same_model") for per_fr in summary["results"].values()
               for entry in per_fr.get(fr_model, {}).values())  # fmt: skip


def _fmr(summary: dict[str, Any]) -> str:
    fmrs = {entry.get("fmr") for per_fr in summary["results"].values()
            for per_method in per_fr.values() for entry in per_method.values()}  # fmt: skip
    return ", ".join(f"{f:g}" for f in sorted(f for f in fmrs if f is not None)) or "?"


def page_with_tables(page: str, summary: dict[str, Any]) -> str:
    """``page`` with each block between study markers (the tables', the headline's) made anew.

    Raises:
        ValueError: When the page has neither block.
    """
    found = False
    for begin, end, render in ((BEGIN, END, study_tables),
                               (HEADLINE_BEGIN, HEADLINE_END, study_headline)):  # fmt: skip
        start, stop = page.find(begin), page.find(end)
        if start < 0 or stop < start:
            continue
        found = True
        page = page[:start] + begin + "\n\n" + render(summary) + "\n\n" + page[stop:]
    if not found:
        raise ValueError(f"no block between {BEGIN!r} and {END!r} (or {HEADLINE_BEGIN!r} and "
                         f"{HEADLINE_END!r}) to put the tables in")  # fmt: skip
    return page


def refresh_page(summary_path: str | Path, page_path: str | Path, check: bool) -> bool:
    """Write (or, with ``check``, compare) the tables of ``summary_path`` into ``page_path``;
    True when the page was already current."""
    summary = json.loads(Path(summary_path).read_text())
    page = Path(page_path).read_text()
    updated = page_with_tables(page, summary)
    if updated != page and not check:
        write_text_atomic(page_path, updated)
    return updated == page
