"""Markdown/HTML tables of evaluation results (rows = methods, columns = benchmark x FR model)."""

from __future__ import annotations

import html
import json
from pathlib import Path

from fiqa.atomic import write_text_atomic


def _cells(
    results: dict, metric: str
) -> tuple[list[str], list[tuple[str, list[tuple[str, bool]]]]]:
    """Header columns ("benchmark/fr") and, per method, (text, is_best) cells of ``metric``.

    Best = the lowest non-oracle value of a column (the oracle is a bound, not a competitor).
    """
    columns, table = [], {}
    for bench, per_fr in results.items():
        for fr, per_method in per_fr.items():
            column = f"{bench}/{fr}"
            columns.append(column)
            for method, m in per_method.items():
                table.setdefault(method, {})[column] = m[metric]
    best = {
        c: min(v[c] for name, v in table.items() if name != "oracle" and c in v) for c in columns
    }
    rows = []
    for method, values in table.items():
        cells = []
        for c in columns:
            v = values.get(c)
            text = "" if v is None else f"{v:.4f}"
            cells.append((text, v is not None and v == best[c] and method != "oracle"))
        rows.append((method, cells))
    return columns, rows


def eval_markdown(results: dict, metric: str) -> str:
    """One markdown table of ``metric``; the best (lowest) non-oracle value per column in bold."""
    columns, rows = _cells(results, metric)
    lines = [f"| method | {' | '.join(columns)} |", "|---" * (len(columns) + 1) + "|"]
    for method, cells in rows:
        texts = [f"**{text}**" if bold else text for text, bold in cells]
        lines.append(f"| {method} | {' | '.join(texts)} |")
    return "\n".join(lines)


def eval_html(results: dict, metric: str) -> str:
    """The same table as ``eval_markdown``, as HTML."""
    columns, rows = _cells(results, metric)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["method", *columns])
    body = "".join(
        f"<tr><td>{html.escape(method)}</td>"
        + "".join(f"<td>{'<b>' + text + '</b>' if bold else text}</td>" for text, bold in cells)
        + "</tr>"
        for method, cells in rows
    )
    return f"<table border='1' cellspacing='0' cellpadding='4'><tr>{head}</tr>{body}</table>"


def write_eval_markdown(results: dict, path: Path, limits: list[float]) -> None:
    """reports/eval.md: one table per discard limit (normalised pAUC; lower is better)."""
    parts = ["# EDC evaluation", "", "Normalised pAUC (1.0 = random quality, lower is better)."]
    for lim in limits:
        parts += ["", f"## pAUC@{lim:g}", "", eval_markdown(results, f"pauc@{lim:g}")]
    write_text_atomic(path, "\n".join(parts) + "\n")


def write_comparison(eval_files: list[Path], out_stem: Path) -> tuple[Path, Path]:
    """Compare several eval.json files: a markdown and an HTML table per metric."""
    merged: dict = {}
    for path in eval_files:
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found")
        # <run>/metrics/eval.json -> "<run>"; any other file -> its stem
        resolved = path.resolve()
        run = resolved.parent.parent.name if resolved.parent.name == "metrics" else path.stem
        for bench, per_fr in json.loads(path.read_text()).items():
            for fr, per_method in per_fr.items():
                merged.setdefault(f"{run}:{bench}", {})[fr] = per_method
    metrics = sorted(
        {
            k
            for b in merged.values()
            for f in b.values()
            for m in f.values()
            for k in m
            if k.startswith("pauc@")
        }
    )
    md_parts = ["# fiqa evaluation comparison", ""]
    html_parts = ["<html><head><meta charset='utf-8'><title>fiqa comparison</title></head><body>"]
    for metric in metrics:
        md_parts += [f"## {metric}", "", eval_markdown(merged, metric), ""]
        html_parts.append(f"<h2>{html.escape(metric)}</h2>" + eval_html(merged, metric))
    html_parts.append("</body></html>")
    md, page = out_stem.with_suffix(".md"), out_stem.with_suffix(".html")
    write_text_atomic(md, "\n".join(md_parts))
    write_text_atomic(page, "\n".join(html_parts))
    return md, page
