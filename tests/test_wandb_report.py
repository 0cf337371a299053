"""The W&B Report spec builds offline; saving without a login fails with a clear message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import wandb_workspaces.reports.v2 as wr
from wandb_workspaces import expr

from fiqa.eval.wandb_report import (
    PROTOCOL,
    build_report,
    edc_stems,
    parse_target,
    report_spec,
    summary_metrics,
)

METRICS = [
    "eval/lfw/sface/model/pauc@0.3",
    "eval/lfw/sface/serfiq/pauc@0.3",
    "eval/cfp_fp/arcface/model/pauc@0.3",
    "eval/lfw/sface/model/pauc@0.3/fmr=0.0001",
]


def offline_env(tmp_path: Path) -> dict[str, str]:
    """A child environment with no W&B credentials: no API key, empty HOME and config dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env |= {"HOME": str(tmp_path), "WANDB_MODE": "offline", "NO_ALBUMENTATIONS_UPDATE": "1"}
    for name in ("CONFIG_DIR", "DIR", "CACHE_DIR", "DATA_DIR"):
        env[f"WANDB_{name}"] = str(tmp_path / name.lower())
    return env


def test_report_spec_builds_offline_with_panels_and_group_filter() -> None:
    report = build_report("my-team", "fiqa", "sweep-7", METRICS)
    assert isinstance(report, wr.Report)
    assert (report.entity, report.project) == ("my-team", "fiqa")
    text, _, pauc_grid, _, edc_grid = report.blocks
    assert isinstance(text, wr.MarkdownBlock) and text.text == PROTOCOL
    assert "fixed once from ALL impostor" in text.text

    # pAUC grid: runs of the group, pAUC summary metrics pinned, run comparer + bar plot.
    (runset,) = pauc_grid.runsets
    assert runset.filters == "Group = 'sweep-7' and JobType = 'evaluate'"
    parsed = expr.filters_tree_to_v2(expr.expr_to_filters(runset.filters))["filters"]
    assert [(f["key"]["name"], f["value"]) for f in parsed] == [
        ("group", "sweep-7"),
        ("jobType", "evaluate"),
    ]
    assert runset.pinned_columns == [f"summary:{m}" for m in METRICS]
    comparer, bars = pauc_grid.panels
    assert isinstance(comparer, wr.RunComparer)
    assert [m.name for m in bars.metrics] == METRICS

    # EDC grid: one line-series chart and one pAUC table per benchmark x FR model.
    assert edc_grid.runsets[0].filters == runset.filters
    charts = [p for p in edc_grid.panels if isinstance(p, wr.CustomChart)]
    tables = [p for p in edc_grid.panels if isinstance(p, wr.WeavePanelSummaryTable)]
    assert [c.query for c in charts] == [
        {"summaryTable": {"tableKey": "eval/edc/lfw__sface_table"}},
        {"summaryTable": {"tableKey": "eval/edc/cfp_fp__arcface_table"}},
    ]
    assert {c.chart_name for c in charts} == {"wandb/lineseries/v0"}
    assert [t.table_name for t in tables] == ["eval/pauc/lfw__sface", "eval/pauc/cfp_fp__arcface"]


def test_report_spec_dump_names_the_metrics() -> None:
    spec = report_spec(build_report("my-team", "fiqa", "sweep-7", METRICS))
    dumped = json.dumps(spec)  # JSON-able as is
    for metric in METRICS:
        assert f'"summary:{metric}"' in dumped and f'"name": "{metric}"' in dumped
    grids = [b for b in spec["blocks"] if b["type"] == "PanelGrid"]
    panel_types = [p["type"] for g in grids for p in g["panels"]]
    assert panel_types == ["RunComparer", "BarPlot"] + ["CustomChart", "WeavePanelSummaryTable"] * 2
    # Private fields (random panel ids) are left out: two builds give the same spec.
    assert spec == report_spec(build_report("my-team", "fiqa", "sweep-7", METRICS))


def test_metric_names_and_inputs_are_checked() -> None:
    results = {"lfw": {"sface": {"model": {"pauc@0.3": 0.8}, "random": {"pauc@0.2": 1.0}}}}
    assert summary_metrics(results) == ["eval/lfw/sface/model/pauc@0.3"]
    assert summary_metrics(results, limit=0.2) == ["eval/lfw/sface/random/pauc@0.2"]
    assert edc_stems(METRICS) == ["lfw__sface", "cfp_fp__arcface"]
    with pytest.raises(ValueError, match=r"metric 'pauc@0.3' is not an evaluate summary metric"):
        build_report("e", "p", "g", ["pauc@0.3"])
    with pytest.raises(ValueError, match="metrics is empty"):
        build_report("e", "p", "g", [])
    with pytest.raises(ValueError, match="group must be"):
        build_report("e", "p", "it's", METRICS)
    assert parse_target("team/proj") == ("team", "proj")
    for bad in ("team", "team/", "/proj", "a/b/c"):
        with pytest.raises(ValueError, match="--wandb expects ENTITY/PROJECT"):
            parse_target(bad)


def test_cli_without_login_fails_clearly_and_still_writes_the_local_report(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "exp" / "metrics"
    run_dir.mkdir(parents=True)
    results = {"lfw": {"sface": {"model": {"pauc@0.3": 0.8}, "random": {"pauc@0.3": 1.0}}}}
    (run_dir / "eval.json").write_text(json.dumps(results))
    out = tmp_path / "compare"
    command = [sys.executable, "-m", "fiqa.cli.main", "report", str(run_dir / "eval.json")]
    command += ["--out", str(out), "--wandb", "my-team/fiqa", "--group", "exp"]
    done = subprocess.run(
        command, env=offline_env(tmp_path), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1, done.stderr
    assert "fiqa report: W&B report for my-team/fiqa not saved: not logged in to W&B" in (
        done.stderr
    )
    assert "Run `wandb login` or set WANDB_API_KEY" in done.stderr
    assert "| model | **0.8000** | **0.8000** |" in out.with_suffix(".md").read_text()


def test_cli_report_argument_errors(tmp_path: Path) -> None:
    env = offline_env(tmp_path)
    base = [sys.executable, "-m", "fiqa.cli.main", "report"]
    cases = [
        ([], "give eval.json files, --dvc, or --wandb ENTITY/PROJECT --group G"),
        (["--wandb", "team/proj"], "--wandb needs --group G"),
        (["--wandb", "team", "--group", "g"], "--wandb expects ENTITY/PROJECT"),
        (["--wandb", "team/proj", "--group", "g"], "--wandb needs eval.json files or --metric"),
    ]
    for args, message in cases:
        done = subprocess.run(base + args, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr, (args, done.stderr)
