"""A W&B Report comparing the evaluate runs of one group (the evaluate stage's
``metrics/eval.json``).

Built with ``wandb_workspaces.reports.v2`` from what the evaluate stage logs:

- summary metrics ``eval/<benchmark>/<fr>/<method>/pauc@<limit>`` (``/fmr=<fmr>`` appended for
  non-default FMRs, see ``fiqa.eval.report``): pinned in the runs table, compared by a run
  comparer and a bar plot;
- ``eval/edc/<benchmark>__<fr>``: ``wandb.plot.line_series``, i.e. a custom chart
  (``wandb/lineseries/v0``) over the table ``eval/edc/<benchmark>__<fr>_table``;
- ``eval/pauc/<benchmark>__<fr>``: a ``wandb.Table`` of every method's metrics.

Runs are selected by ``Group = <group> and JobType = 'evaluate'`` (the run group is the
experiment name; each stage is a job type). ``build_report`` works offline with no login;
``save_report`` needs a logged-in W&B API and says so when there is none. The equivalent
local report is ``fiqa.eval.report.write_comparison``.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterable
from typing import Any

import requests
import wandb
import wandb_workspaces.reports.v2 as wr

from fiqa.eval.report import LABEL, row_kind

log = logging.getLogger(__name__)

EDC_CHART = "wandb/lineseries/v0"  # the vega spec wandb.plot.line_series logs
EDC_FIELDS = {"step": "step", "lineKey": "lineKey", "lineVal": "lineVal"}
_METRIC = re.compile(r"^eval/(?P<bench>[^/]+)/(?P<fr>[^/]+)/(?P<method>[^/]+)/pauc(_raw)?@[^/]+")
PROTOCOL = """\
**Protocol** (ISO/IEC 29794-1; Schlett et al., "Considerations on the evaluation of biometric
quality assessment algorithms", IEEE TBIOM 2024).
Pair quality = min of the two sample qualities; comparison score = cosine similarity of the FR
model's embeddings, match iff score >= t. The threshold t is fixed once from ALL impostor
scores at the target FMR (the smallest t with FMR <= target) and never recomputed. Only
genuine comparisons are discarded, lowest pair quality first, equal qualities together; the
EDC value is the FNMR of the remaining genuine comparisons at t.
pAUC = area under the EDC step curve up to the discard limit (0.2, 0.3), normalised by
FNMR(0) x limit: 1.0 = no better than random quality, lower is better.
Baselines: `random` (flat at FNMR(0)) and `oracle` (quality = genuine score).
Metric names: `eval/<benchmark>/<fr>/<method>/pauc@<limit>`.
"""


class ReportSaveError(RuntimeError):
    """The W&B report could not be saved (e.g. not logged in); the message says what to do."""


def parse_target(target: str) -> tuple[str, str]:
    """``"ENTITY/PROJECT"`` -> ``(entity, project)``.

    Raises:
        ValueError: If ``target`` is not two non-empty names separated by one slash.
    """
    entity, sep, project = target.partition("/")
    if not (sep and entity and project) or "/" in project:
        raise ValueError(f"--wandb expects ENTITY/PROJECT, got {target!r}")
    return entity, project


def summary_metrics(results: dict, limit: float = 0.3) -> list[str]:
    """Summary metric names ``eval/<benchmark>/<fr>/<method>/pauc@<limit>`` of a results dict,
    for the ranking: the blind methods and the references, not the label rows (identity-based
    formulas on the evaluated identities, which see the answer)."""
    return [
        f"eval/{bench}/{fr}/{method}/pauc@{limit:g}"
        for bench, per_fr in results.items()
        for fr, per_method in per_fr.items()
        for method, entry in per_method.items()
        if f"pauc@{limit:g}" in entry and row_kind(method, entry) != LABEL
    ]


def edc_stems(metrics: Iterable[str]) -> list[str]:
    """``<benchmark>__<fr>`` of each metric, in order of first appearance.

    Raises:
        ValueError: If a metric is not named ``eval/<benchmark>/<fr>/<method>/pauc@<limit>``.
    """
    stems: list[str] = []
    for metric in metrics:
        match = _METRIC.match(metric)
        if match is None:
            raise ValueError(
                f"metric {metric!r} is not an evaluate summary metric; expected "
                "eval/<benchmark>/<fr>/<method>/pauc@<limit> (e.g. eval/lfw/sface/model/pauc@0.3)"
            )
        stem = f"{match['bench']}__{match['fr']}"
        stems += [stem] if stem not in stems else []
    return stems


def _runset(entity: str, project: str, group: str, metrics: list[str]) -> wr.Runset:
    return wr.Runset(
        entity=entity,
        project=project,
        name=f"group {group}",
        filters=f"Group = '{group}' and JobType = 'evaluate'",
        pinned_columns=[f"summary:{m}" for m in metrics],
    )


def build_report(entity: str, project: str, group: str, metrics: list[str]) -> wr.Report:
    """The report spec: protocol text, a pAUC comparison grid and one EDC grid row per stem.

    Needs no login or network (saving does: ``save_report``).

    Args:
        entity: W&B entity (user or team).
        project: W&B project.
        group: Run group to compare (the experiment name; a sweep's runs share it).
        metrics: Summary metrics for the pAUC table, ``eval/<benchmark>/<fr>/<method>/pauc@..``.

    Returns:
        The unsaved ``wandb_workspaces.reports.v2.Report``.

    Raises:
        ValueError: On an empty or malformed metric list or a group name with quotes.
    """
    if not metrics:
        raise ValueError("metrics is empty; give eval/<benchmark>/<fr>/<method>/pauc@0.3 names")
    if not group or any(c in group for c in "'\"\\"):
        raise ValueError(f"group must be a non-empty run group name without quotes: {group!r}")
    stems = edc_stems(metrics)
    pauc_grid = wr.PanelGrid(
        runsets=[_runset(entity, project, group, metrics)],
        panels=[
            wr.RunComparer(diff_only="split", layout=wr.Layout(x=0, y=0, w=12, h=10)),
            wr.BarPlot(
                title="normalised pAUC (lower is better)",
                metrics=[wr.SummaryMetric(m) for m in metrics],
                layout=wr.Layout(x=12, y=0, w=12, h=10),
            ),
        ],
    )
    edc_panels: list = []
    for row, stem in enumerate(stems):
        edc_panels += [
            wr.CustomChart(
                query={"summaryTable": {"tableKey": f"eval/edc/{stem}_table"}},
                chart_name=EDC_CHART,
                chart_fields=dict(EDC_FIELDS),
                chart_strings={"title": f"EDC {stem}", "xname": "discard fraction"},
                layout=wr.Layout(x=0, y=8 * row, w=12, h=8),
            ),
            wr.WeavePanelSummaryTable(
                table_name=f"eval/pauc/{stem}", layout=wr.Layout(x=12, y=8 * row, w=12, h=8)
            ),
        ]
    edc_grid = wr.PanelGrid(runsets=[_runset(entity, project, group, metrics)], panels=edc_panels)
    return wr.Report(
        project=project,
        entity=entity,
        title=f"fiqa evaluation: {group}"[:128],
        description=f"EDC and pAUC of the evaluate runs in group {group}",
        blocks=[
            wr.MarkdownBlock(text=PROTOCOL),
            wr.H2(text="pAUC (runs table: pinned pAUC columns)"),
            pauc_grid,
            wr.H2(text="EDC curves and pAUC tables per benchmark and FR model"),
            edc_grid,
        ],
    )


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = [f.name for f in dataclasses.fields(obj) if not f.name.startswith("_")]
        return {"type": type(obj).__name__} | {name: _plain(getattr(obj, name)) for name in fields}
    if isinstance(obj, dict):
        return {str(key): _plain(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(value) for value in obj]
    return obj


def report_spec(report: wr.Report) -> dict:
    """The report as JSON-able data, each object tagged with its ``type`` (offline).

    Random panel ids and other private fields are left out, so equal specs compare equal.
    """
    return _plain(report)


def save_report(report: wr.Report, draft: bool = False) -> str:
    """Save ``report`` to W&B and return its URL.

    Raises:
        ReportSaveError: If no W&B API key is configured (not logged in), W&B cannot be
            reached, or the entity/project does not exist.
    """
    try:
        wandb.Api()  # raises UsageError without an API key; no network call
    except wandb.errors.UsageError as err:
        raise ReportSaveError(
            f"W&B report for {report.entity}/{report.project} not saved: not logged in to W&B "
            f"({err}). Run `wandb login` or set WANDB_API_KEY, then rerun `fiqa report --wandb "
            f"{report.entity}/{report.project} --group ...`. The local report "
            "(fiqa report <eval.json ...>) needs no login."
        ) from err
    try:
        report.save(draft=draft)
    except (wandb.errors.Error, requests.RequestException, ValueError) as err:
        # ValueError: wandb-workspaces' "project not found" for a run set.
        raise ReportSaveError(
            f"W&B report for {report.entity}/{report.project} not saved: {err}"
        ) from err
    log.info("saved W&B report %s", report.url)
    return report.url
