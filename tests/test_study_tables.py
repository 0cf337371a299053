"""The study's tables in docs/ are made from its committed study.json and cannot go stale."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fiqa.cli.main import main
from fiqa.eval.study_summary import (
    BEGIN,
    END,
    HEADLINE_BEGIN,
    HEADLINE_END,
    over_seeds,
    page_with_tables,
    refresh_page,
    study_headline,
    study_summary,
    study_tables,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("page", ["docs/study.md", "README.md"])
def test_the_docs_tables_are_those_of_the_committed_study(page: str):
    summary = REPO / "studies" / "lfw_dev" / "study.json"
    assert refresh_page(summary, REPO / page, check=True), (
        f"{page} differs from studies/lfw_dev/study.json: run "
        f"fiqa study-tables studies/lfw_dev/study.json --write {page}"
    )


def test_the_readme_headline_fails_on_a_changed_digit(tmp_path: Path):
    readme = (REPO / "README.md").read_text()
    block = readme.index(HEADLINE_BEGIN)
    value = re.compile(r"^\| \S+ \| \**(\d\.\d{4})", re.M).search(readme, block)  # a mean
    assert value is not None and value.start() < readme.index(HEADLINE_END)
    last = value.end(1) - 1
    changed = tmp_path / "README.md"
    changed.write_text(readme[:last] + str((int(readme[last]) + 1) % 10) + readme[last + 1 :])
    assert not refresh_page(REPO / "studies" / "lfw_dev" / "study.json", changed, check=True)


def tiny_study(root: Path) -> Path:
    """A study folder with one benchmark, two rows and one regressor's train.json."""
    entry = {"pauc@0.3": 0.4, "pauc@0.3/lo": 0.3, "pauc@0.3/hi": 0.5, "n_errors": 40,
             "fmr": 0.001, "threshold": 0.3, "op@discard=0.1/fnmr": 0.1}  # fmt: skip
    results = {"val": {"sface": {"a(R)": entry, "random": entry | {"pauc@0.3": 1.0}}}}
    (root / "metrics" / "a").mkdir(parents=True)
    (root / "metrics" / "eval.json").write_text(json.dumps(results))
    (root / "metrics" / "a" / "train.json").write_text(json.dumps({"val/spearman": 0.5}))
    return root


def test_the_summary_keeps_what_the_tables_show(tmp_path: Path):
    root = tiny_study(tmp_path / "mine")
    (root / "metrics" / "a" / "s0").mkdir()  # an older run's seed, not evaluated: not counted
    (root / "metrics" / "a" / "s0" / "train.json").write_text(json.dumps({"val/spearman": -1}))
    summary = study_summary(root)
    assert summary["study"] == "mine" and summary["regressors"] == {"a": {"val/spearman": 0.5}}
    kept = summary["results"]["val"]["sface"]["a(R)"]
    assert "threshold" not in kept and "op@discard=0.1/fnmr" not in kept
    assert kept["pauc@0.3/hi"] == 0.5 and kept["n_errors"] == 40
    with pytest.raises(FileNotFoundError, match="has not been evaluated yet"):
        study_summary(tmp_path / "none")


def test_study_tables_writes_checks_and_names_a_stale_page(tmp_path: Path, capsys):
    root = tiny_study(tmp_path / "mine")
    (root / "study.json").write_text(json.dumps(study_summary(root)))
    page = tmp_path / "page.md"
    page.write_text(f"# Mine\n\n{BEGIN}\n{END}\n\ntext after\n")
    assert main(["study-tables", str(root / "study.json"), "--check", str(page)]) == 1
    assert "differs from" in capsys.readouterr().err
    assert main(["study-tables", str(root / "study.json"), "--write", str(page)]) == 0
    text = page.read_text()
    assert "| a(R) | **0.4000** | **0.4000** |" in text and text.endswith("text after\n")
    assert main(["study-tables", str(root / "study.json"), "--check", str(page)]) == 0
    readme = tmp_path / "README.md"  # the headline block, refreshed with the tables' page
    readme.write_text(f"# Mine\n\n{HEADLINE_BEGIN}\n{HEADLINE_END}\n")
    assert main(["study-tables", str(root / "study.json"), "--check", str(page), str(readme)]) == 1
    assert f"{readme} differs from" in capsys.readouterr().err
    assert main(["study-tables", str(root / "study.json"), "--write", str(page), str(readme)]) == 0
    assert "| a(R) | **0.4000 [0.300, 0.500]** |" in readme.read_text()
    with pytest.raises(ValueError, match="no block between"):
        page_with_tables("no markers here", study_summary(root))


def test_seeds_merge_into_mean_sd_and_an_interval_holding_both():
    rows = over_seeds({
        "a(R)-s0": {"pauc@0.3": 0.4, "pauc@0.3/lo": 0.3, "pauc@0.3/hi": 0.5, "n_errors": 40},
        "a(R)-s1": {"pauc@0.3": 0.6, "pauc@0.3/lo": 0.5, "pauc@0.3/hi": 0.7, "n_errors": 40},
        "sharpness": {"pauc@0.3": 0.9},
    })  # fmt: skip
    merged = rows["a(R)"]
    sd = 0.2 / 2**0.5  # the sample sd of 0.4 and 0.6
    assert merged["pauc@0.3"] == pytest.approx(0.5) and merged["pauc@0.3/sd"] == pytest.approx(sd)
    assert merged["pauc@0.3/lo"] == pytest.approx(0.5 - sd)  # below the mean bound 0.4
    assert merged["pauc@0.3/hi"] == pytest.approx(0.5 + sd)  # above the mean bound 0.6
    assert merged["seeds"] == 2 and rows["sharpness"] == {"pauc@0.3": 0.9}
    summary = {"metric": "pauc@0.3", "regressors": {},
               "results": {"val": {"sface": rows | {"random": {"pauc@0.3": 1.0}}}}}  # fmt: skip
    assert "| a(R) | **0.5000 ± 0.141** |" in study_tables(summary)


def test_the_headline_leaves_out_a_column_of_few_errors_and_gives_the_interval():
    cell = {"pauc@0.3": 0.4, "pauc@0.3/lo": 0.3, "pauc@0.3/hi": 0.5, "n_errors": 40}
    results = {
        "big": {"dlib": {"a(R)": cell, "b": cell | {"pauc@0.3": 0.8, "pauc@0.3/lo": 0.7,
                                                    "pauc@0.3/hi": 0.9}}},
        "tiny": {"dlib": {"a(R)": cell | {"pauc@0.3": 1.2, "n_errors": 3},
                          "b": cell | {"pauc@0.3": 0.1, "n_errors": 3}}},
    }  # fmt: skip
    text = study_headline({"metric": "pauc@0.3", "regressors": {}, "results": results})
    assert "| a(R) | **0.4000 [0.300, 0.500]** |" in text  # the mean of big alone: tiny is out
    assert "| b | 0.8000 [0.700, 0.900] |" in text  # 0.1 on tiny would have made b the best
    assert "- dlib: Best blind method (mean): `a(R)` 0.4000. Left out (⚑): tiny." in text
    page = f"intro\n{HEADLINE_BEGIN}\n{HEADLINE_END}\n"
    assert text in page_with_tables(page, {"metric": "pauc@0.3", "regressors": {},
                                           "results": results})  # fmt: skip
