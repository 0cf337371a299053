"""Evaluation tables: one per FR model, methods x benchmarks + mean, best marked, baselines last."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from fiqa.eval.report import (
    eval_html,
    eval_markdown,
    metric_key,
    write_comparison,
    write_eval_markdown,
    write_eval_report,
)


def entry(p2: float, p3: float, same_model: bool | None = None, **extra: float) -> dict:
    out = {"pauc@0.2": p2, "pauc_raw@0.2": p2 / 10, "pauc@0.3": p3, "fnmr@0": 0.1, "fmr": 0.001}
    return out | ({} if same_model is None else {"same_model": same_model}) | extra


def results() -> dict:
    """2 benchmarks x 2 FR models x 3 methods + baselines (listed first, shown last).

    The methods were trained on labels from sface: same-model there, cross-model on arcface.
    """
    return {
        "lfw": {
            "sface": {
                "oracle": entry(0.30, 0.25),
                "random": entry(1.0, 1.0),
                "model": entry(0.80, 0.75, True, **{"pauc@0.2/fmr=0.0001": 0.70}),
                "serfiq": entry(0.90, 0.85, True),
                "crfiqa": entry(0.85, 0.70, False),
            },
            "arcface": {
                "oracle": entry(0.35, 0.30),
                "random": entry(1.0, 1.0),
                "model": entry(0.82, 0.78, False),
                "serfiq": entry(0.82, 0.86, False),
                "crfiqa": entry(0.95, 0.90, False),
            },
        },
        "cfp_fp": {
            "sface": {
                "oracle": entry(0.40, 0.35),
                "random": entry(1.0, 1.0),
                "model": entry(0.90, 0.85, True, **{"pauc@0.2/fmr=0.0001": 0.80}),
                "serfiq": entry(0.86, 0.84, True),
                "crfiqa": entry(0.92, 0.91, False),
            },
            "arcface": {
                "oracle": entry(0.45, 0.40),
                "random": entry(1.0, 1.0),
                "model": entry(0.84, 0.80, False),
                "serfiq": entry(0.89, 0.87, False),
                "crfiqa": entry(0.93, 0.91, False),
            },
        },
    }


# Means by hand: sface model (0.80 + 0.90) / 2 = 0.85, serfiq (0.90 + 0.86) / 2 = 0.88,
# crfiqa (0.85 + 0.92) / 2 = 0.885; oracle 0.35 (never bold, though lowest).
SFACE_PAUC_02 = """\
| method | lfw | cfp_fp | mean |
|---|---|---|---|
| model | **0.8000†** | 0.9000† | **0.8500** |
| serfiq | 0.9000† | **0.8600†** | 0.8800 |
| crfiqa | 0.8500 | 0.9200 | 0.8850 |
| *references: random and oracle quality* | | | |
| random | 1.0000 | 1.0000 | 1.0000 |
| oracle | 0.3000 | 0.4000 | 0.3500 |"""

# arcface: model and serfiq tie on lfw (0.82): both bold; model mean 0.83, serfiq 0.855.
ARCFACE_PAUC_02 = """\
| method | lfw | cfp_fp | mean |
|---|---|---|---|
| model | **0.8200** | **0.8400** | **0.8300** |
| serfiq | **0.8200** | 0.8900 | 0.8550 |
| crfiqa | 0.9500 | 0.9300 | 0.9400 |
| *references: random and oracle quality* | | | |
| random | 1.0000 | 1.0000 | 1.0000 |
| oracle | 0.3500 | 0.4500 | 0.4000 |"""

# pAUC@0.3 on sface: crfiqa wins lfw (0.70), serfiq cfp_fp (0.84), and the model the mean:
# (0.75 + 0.85) / 2 = 0.80 < crfiqa (0.70 + 0.91) / 2 = 0.805 < serfiq 0.845.
SFACE_PAUC_03 = """\
| method | lfw | cfp_fp | mean |
|---|---|---|---|
| model | 0.7500† | 0.8500† | **0.8000** |
| serfiq | 0.8500† | **0.8400†** | 0.8450 |
| crfiqa | **0.7000** | 0.9100 | 0.8050 |
| *references: random and oracle quality* | | | |
| random | 1.0000 | 1.0000 | 1.0000 |
| oracle | 0.2500 | 0.3500 | 0.3000 |"""

# The same with crfiqa as a label row: lfw's best blind value is now the model's 0.75.
SFACE_PAUC_03_LABEL = """\
| method | lfw | cfp_fp | mean |
|---|---|---|---|
| model | **0.7500†** | 0.8500† | **0.8000** |
| serfiq | 0.8500† | **0.8400†** | 0.8450 |
| *label rows: identity-based formulas on the evaluated identities (they see the answer; not ranked)* | | | |
| crfiqa (label) | 0.7000 | 0.9100 | 0.8050 |
| *references: random and oracle quality* | | | |
| random | 1.0000 | 1.0000 | 1.0000 |
| oracle | 0.2500 | 0.3500 | 0.3000 |"""

# Only the model was evaluated at FMR 1e-4 (sface): one row, mean (0.7 + 0.8) / 2.
SFACE_PAUC_02_FMR_1E4 = """\
| method | lfw | cfp_fp | mean |
|---|---|---|---|
| model | **0.7000†** | **0.8000†** | **0.7500** |"""


def test_eval_markdown_tables_by_hand() -> None:
    text = eval_markdown(results(), "pauc@0.2")
    assert text == f"### sface\n\n{SFACE_PAUC_02}\n\n### arcface\n\n{ARCFACE_PAUC_02}"
    assert eval_markdown(results(), "pauc@0.3").startswith(f"### sface\n\n{SFACE_PAUC_03}\n")


def test_label_rows_are_shown_apart_and_never_ranked() -> None:
    """An identity-based label formula on the evaluated identities sees the answer: its row is
    named as such, sits in its own group and is never bold, however low its pAUC."""
    data = results()
    for bench in data.values():
        bench["sface"]["crfiqa"]["kind"] = "label"
        bench["sface"]["model"]["kind"] = "blind"
    text = eval_markdown(data, "pauc@0.3").split("### arcface")[0]
    assert text.startswith(f"### sface\n\n{SFACE_PAUC_03_LABEL}")
    from fiqa.eval.report import best_blind, metric_tables

    (sface, _) = metric_tables([("", data)], "pauc@0.3")
    assert [r.kind for r in sface.rows] == ["blind", "blind", "label", "baseline", "baseline"]
    assert best_blind(sface) == ("model", "0.8000")  # crfiqa's lfw 0.70 is not a winner


def test_metric_key_for_several_fmrs() -> None:
    assert metric_key("pauc@0.2") == "pauc@0.2"
    assert metric_key("pauc@0.2", 1e-4) == "pauc@0.2/fmr=0.0001"
    assert metric_key("fnmr@0", 0.01) == "fnmr@0/fmr=0.01"


def test_write_eval_report_sections_legend_and_figures(tmp_path: Path) -> None:
    figures = ["edc_lfw__sface.png", "edc_cfp_fp__sface.png"]
    md_path, html_path = write_eval_report(results(), tmp_path / "eval", [0.2, 0.3], figures)
    assert (md_path.name, html_path.name) == ("eval.md", "eval.html")
    md = md_path.read_text(encoding="utf-8")
    headings = [line for line in md.splitlines() if line.startswith("## ")]
    assert headings == [
        "## pAUC@0.2, FMR=0.001",
        "## pAUC@0.3, FMR=0.001",
        "## pAUC@0.2, FMR=0.0001",
        "## EDC curves",
    ]
    best = "Best blind method (mean): `model` {}.\n\n"
    assert (f"### sface\n\n{SFACE_PAUC_02}\n\n{best.format('0.8500')}### arcface\n\n"
            f"{ARCFACE_PAUC_02}\n\n{best.format('0.8300')}") in md  # fmt: skip
    assert f"### sface\n\n{SFACE_PAUC_03}\n\n{best.format('0.8000')}" in md
    # The 1e-4 section has the sface table only (nothing was evaluated there on arcface).
    fmr_section = md.split("## pAUC@0.2, FMR=0.0001")[1].split("## EDC curves")[0]
    assert fmr_section == f"\n\n### sface\n\n{SFACE_PAUC_02_FMR_1E4}\n\n{best.format('0.7500')}"
    assert "† same-model: the method was trained on labels produced with this FR model" in md
    assert "![edc_lfw__sface](edc_lfw__sface.png)" in md

    page = html_path.read_text(encoding="utf-8")
    assert page.count("<table") == 5
    assert "<td>model</td><td><b>0.8000†</b></td><td>0.9000†</td><td><b>0.8500</b></td>" in page
    assert "<td>oracle</td><td>0.3000</td><td>0.4000</td><td>0.3500</td>" in page
    for number in ["0.8850", "0.8550", "0.9400", "0.8050", "0.7500"]:
        assert number in page
    for figure in figures:
        assert f"<img src='{figure}'" in page
    assert "<b>bold</b>" in page and "**" not in page
    assert page == page.strip() + "\n" and page.startswith("<html>")


def test_write_eval_markdown_keeps_its_signature(tmp_path: Path) -> None:
    write_eval_markdown(results(), tmp_path / "eval.md", [0.3])
    md = (tmp_path / "eval.md").read_text(encoding="utf-8")
    assert "## pAUC@0.3, FMR=0.001" in md and "## pAUC@0.2, FMR=0.001" not in md
    assert SFACE_PAUC_03 in md


def test_eval_html_uses_the_same_cells() -> None:
    page = eval_html(results(), "pauc@0.2")
    assert page.startswith("<h3>sface</h3><table")
    assert "<td>serfiq</td><td><b>0.8200</b></td><td>0.8900</td><td>0.8550</td>" in page


def test_no_legend_without_same_model_and_nan_columns(tmp_path: Path) -> None:
    # FNMR(0) = 0 on a benchmark makes its normalised pAUC NaN for every method: n/a, and the
    # mean is taken over the other benchmarks.
    data = {
        "a": {"fr": {"m1": {"pauc@0.2": 0.5}, "m2": {"pauc@0.2": 0.6}}},
        "b": {"fr": {"m1": {"pauc@0.2": math.nan}, "m2": {"pauc@0.2": math.nan}}},
        "c": {"fr": {"m1": {"pauc@0.2": 0.9}}},  # m2 missing on c: no mean
    }
    assert eval_markdown(data, "pauc@0.2") == (
        "### fr\n\n| method | a | b | c | mean |\n|---|---|---|---|---|\n"
        "| m1 | **0.5000** | n/a | **0.9000** | **0.7000** |\n"
        "| m2 | 0.6000 | n/a |  |  |"
    )
    md_path, html_path = write_eval_report(data, tmp_path / "eval", [0.2])
    assert "†" not in md_path.read_text(encoding="utf-8")
    assert "same-model" not in html_path.read_text(encoding="utf-8")
    assert "## pAUC@0.2, default FMR" in md_path.read_text(encoding="utf-8")


def test_comparison_of_two_runs(tmp_path: Path) -> None:
    a, b = tmp_path / "a" / "metrics" / "eval.json", tmp_path / "b" / "metrics" / "eval.json"
    second = results()
    second["lfw"]["sface"]["model"] |= {"pauc@0.2": 0.78}
    second["cfp_fp"]["sface"]["model"] |= {"pauc@0.2": 0.84}
    for path, data in [(a, results()), (b, second)]:
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(data))
    md_path, html_path = write_comparison([a, b], tmp_path / "out" / "compare")
    md = md_path.read_text(encoding="utf-8")
    # Rows per method and run, grouped by method; best across both runs; baselines last.
    # b's model: lfw 0.78, cfp_fp 0.84 (best), mean 0.81 (best).
    expected = """\
| method | lfw | cfp_fp | mean |
|---|---|---|---|
| model (a) | 0.8000† | 0.9000† | 0.8500 |
| model (b) | **0.7800†** | **0.8400†** | **0.8100** |
| serfiq (a) | 0.9000† | 0.8600† | 0.8800 |
| serfiq (b) | 0.9000† | 0.8600† | 0.8800 |
| crfiqa (a) | 0.8500 | 0.9200 | 0.8850 |
| crfiqa (b) | 0.8500 | 0.9200 | 0.8850 |
| *references: random and oracle quality* | | | |
| random (a) | 1.0000 | 1.0000 | 1.0000 |
| random (b) | 1.0000 | 1.0000 | 1.0000 |
| oracle (a) | 0.3000 | 0.4000 | 0.3500 |
| oracle (b) | 0.3000 | 0.4000 | 0.3500 |"""
    assert md.startswith("# fiqa evaluation comparison\n")
    assert f"## pAUC@0.2, FMR=0.001\n\n### sface\n\n{expected}\n" in md
    assert "## pAUC@0.3, FMR=0.001" in md and "## pAUC@0.2, FMR=0.0001" in md
    page = html_path.read_text(encoding="utf-8")
    assert "<td>model (b)</td><td><b>0.7800†</b></td><td><b>0.8400†</b></td>" in page
    assert "<td><b>0.8100</b></td>" in page


def test_comparison_labels_and_errors(tmp_path: Path) -> None:
    # Two files with the same run name are labelled by their paths.
    one, two = tmp_path / "x" / "eval.json", tmp_path / "y" / "eval.json"
    for path in (one, two):
        path.parent.mkdir()
        path.write_text(json.dumps({"lfw": {"sface": {"model": {"pauc@0.3": 0.5}}}}))
    md_path, _ = write_comparison([one, two], tmp_path / "cmp")
    md = md_path.read_text(encoding="utf-8")
    assert f"| model ({one}) | **0.5000** | **0.5000** |" in md
    with pytest.raises(FileNotFoundError, match=r"missing\.json not found"):
        write_comparison([tmp_path / "missing.json"], tmp_path / "x2")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ValueError, match=r"bad\.json is not valid JSON"):
        write_comparison([bad], tmp_path / "x3")


def test_edc_figures_keep_each_methods_colour_and_name_the_pauc_limit():
    import numpy as np

    from fiqa.core.edc import EDCCurve
    from fiqa.eval.figures import edc_figure, method_colour

    def curve(level: float) -> EDCCurve:
        return EDCCurve(np.array([0.0, 0.5, 1.0]), np.array([level, level / 2, 0.0]), 0.3,
                        1e-3, 10, 40)  # fmt: skip

    def lines(names: list[str]) -> dict[str, tuple]:
        fig = edc_figure({n: curve(0.2) for n in names}, dict.fromkeys(names, 0.25), 0.3, "t")
        ax = fig.axes[0]
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert legend[0] == f"{names[0]} (pAUC@0.3 0.250)"
        return {n: line.get_color() for n, line in zip(names, ax.get_lines(), strict=True)}

    first = lines(["model", "serfiq", "random", "oracle"])
    second = lines(["oracle", "crfiqa", "my_quality_model", "model"])  # other methods and order
    assert first["model"] == second["model"] == method_colour("model")
    assert first["oracle"] == second["oracle"]
    assert len(set(first.values())) == len(first)
    assert method_colour("my_quality_model") == method_colour("my_quality_model")


def test_an_edc_figure_file_is_the_same_bytes_every_time(tmp_path: Path):
    """A DVC output: no date in the SVG, no random element ids (a rerun would change its hash)."""
    import numpy as np

    from fiqa.core.edc import EDCCurve
    from fiqa.eval.figures import plot_edc

    curve = EDCCurve(np.array([0.0, 0.5, 1.0]), np.array([0.2, 0.1, 0.0]), 0.3, 1e-3, 10, 40)
    for suffix in ("svg", "png"):
        a, b = tmp_path / f"a.{suffix}", tmp_path / f"b.{suffix}"
        for path in (a, b):
            plot_edc({"model": curve}, {"model": 0.25}, 0.3, "demo_val x sface", path)
        assert a.read_bytes() == b.read_bytes(), suffix
    assert b"<dc:date>" not in a.with_suffix(".svg").read_bytes()


def test_a_column_of_few_genuine_errors_is_flagged_and_left_out_of_mean_and_best(
    tmp_path: Path,
) -> None:
    """big: 50 genuine errors behind FNMR(0); tiny: 10 (< 25). Over both columns `b` would have
    the best mean (0.45 vs 0.70); without the flagged column `a` has (0.50 vs 0.70)."""

    def cell(a: float, b: float, errors: int) -> dict:
        return {m: {"pauc@0.3": v, "fnmr@0": errors / 100, "n_genuine": 100, "n_errors": errors}
                for m, v in (("a", a), ("b", b))}  # fmt: skip

    data = {"big": {"sface": cell(0.5, 0.7, 50)}, "tiny": {"sface": cell(0.9, 0.2, 10)}}
    text = eval_markdown(data, "pauc@0.3")
    assert text.splitlines()[2:6] == [
        "| method | big | tiny ⚑ | mean |",
        "|---|---|---|---|",
        "| a | **0.5000** | 0.9000 | **0.5000** |",
        "| b | 0.7000 | 0.2000 | 0.7000 |",
    ]
    md, _ = write_eval_report(data, tmp_path / "eval", [0.3])
    assert "fewer than 25 genuine errors" in md.read_text()
    del data["tiny"]["sface"]["a"]["n_errors"]  # older files: FNMR(0) x genuine pairs
    assert "tiny ⚑" in eval_markdown(data, "pauc@0.3")


def test_values_inside_the_best_interval_are_tied() -> None:
    """a is best (0.50, interval up to 0.60): b (0.55) is inside it, tied; c (0.70) is not."""
    data = {"big": {"sface": {
        "a": {"pauc@0.3": 0.50, "pauc@0.3/lo": 0.42, "pauc@0.3/hi": 0.60},
        "b": {"pauc@0.3": 0.55, "pauc@0.3/lo": 0.47, "pauc@0.3/hi": 0.66},
        "c": {"pauc@0.3": 0.70, "pauc@0.3/lo": 0.61, "pauc@0.3/hi": 0.80},
    }}}  # fmt: skip
    assert eval_markdown(data, "pauc@0.3").splitlines()[4:7] == [
        "| a | **0.5000** | **0.5000** |",
        "| b | **0.5500** | **0.5500** |",
        "| c | 0.7000 | 0.7000 |",
    ]
    text = write_eval_report(data, Path("/tmp") / "fiqa-tied-report", [0.3])[0].read_text()
    assert "Tied for the best mean (inside the best's bootstrap interval): `a`, `b`." in text
