"""Ad-hoc stage runs (``fiqa <stage>`` with overrides, not ``dvc repro``) write to their own
``runs/<overrides>/`` directory and read what an earlier ad-hoc run of the same overrides made."""

from __future__ import annotations

from pathlib import Path

import pytest

from fiqa.cli.adhoc import changed_stages, computing_overrides, place_adhoc_run, run_folder
from fiqa.config import compose_config
from fiqa.stages import StageError


def paths_of(root: Path, overrides: list[str]) -> dict[str, str]:
    cfg = compose_config([f"paths.root={root}"])
    return {"run": str(place_adhoc_run("evaluate", cfg, overrides))} | {
        k: str(v) for k, v in cfg.paths.items()}  # fmt: skip


def test_adhoc_evaluate_writes_its_own_directory_and_reads_the_pipelines_inputs(tmp_path):
    overrides = ["eval/benchmark=folder", "eval.benchmark.root=/data/lfw", "logger=none"]
    cfg = compose_config([f"paths.root={tmp_path}", *overrides])
    run = place_adhoc_run("evaluate", cfg, overrides)
    assert run == tmp_path / "runs" / "eval.benchmark.root=_data_lfw,eval_benchmark=folder"
    for key in ("metrics", "plots", "reports"):  # evaluate's outputs
        assert Path(cfg.paths[key]).parent == run, key
    for key in ("prepared", "labels", "models", "ddpm"):  # its inputs: the pipeline's
        assert Path(cfg.paths[key]).parent in (tmp_path, tmp_path / "data"), key
    assert cfg.paths.cache == str(tmp_path / "cache")  # shared, content-addressed


def test_adhoc_runs_of_the_same_overrides_chain(tmp_path):
    """`fiqa label label=serfiq` then `fiqa train label=serfiq`: train reads the run's labels."""
    label = compose_config([f"paths.root={tmp_path}", "label=serfiq"])
    run = place_adhoc_run("label", label, ["label=serfiq"])
    Path(label.paths.labels).mkdir(parents=True)
    train = compose_config([f"paths.root={tmp_path}", "label=serfiq"])
    assert place_adhoc_run("train", train, ["label=serfiq"]) == run
    assert train.paths.labels == label.paths.labels == str(run / "data" / "labels")
    assert train.paths.models == str(run / "models")
    assert train.paths.prepared == str(tmp_path / "data" / "prepared")  # none in the run


def test_runs_without_computing_overrides_or_with_a_root_write_the_configured_paths(tmp_path):
    cfg = compose_config([f"paths.root={tmp_path}"])
    before = dict(cfg.paths)
    assert place_adhoc_run("train", cfg, ["logger=none", "extract.progress=false"]) is None
    assert place_adhoc_run("train", cfg, ["paths.root=.", "label=serfiq"]) is None
    assert dict(cfg.paths) == before


def test_run_folders_are_the_overrides_or_their_digest() -> None:
    assert computing_overrides(["logger=none", "+debug=fdr", "model.lr=1e-3"]) == ["model.lr=1e-3"]
    # a preset that computes something else (fewer faces, epochs) is its own run
    assert computing_overrides(["label=faceqan", "debug=small"]) == ["debug=small", "label=faceqan"]
    assert computing_overrides(["debug=limit"]) == ["debug=limit"]
    assert run_folder(["label=serfiq"]) == "label=serfiq"
    long = run_folder([f"eval.benchmark.root=/very/long/path/{'x' * 80}"])
    assert len(long) == 49 and long != run_folder([f"eval.benchmark.root=/other/{'x' * 80}"])


def test_an_input_the_overrides_change_must_come_from_the_run_not_the_pipeline(tmp_path):
    """``debug=small`` changes what prepare computes: the pipeline's prepared set is another
    run's, so ``fiqa label debug=small`` before ``fiqa prepare debug=small`` stops, naming it."""
    (tmp_path / "data" / "prepared").mkdir(parents=True)  # the pipeline's
    small = ["debug=small", "label=faceqan"]
    assert changed_stages(compose_config([f"paths.root={tmp_path}", *small])) == {
        "prepare", "ddpm", "label", "train", "evaluate"}  # fmt: skip
    assert changed_stages(compose_config([f"paths.root={tmp_path}", "model.lr=3e-4"])) == {
        "train", "evaluate"}  # fmt: skip
    cfg = compose_config([f"paths.root={tmp_path}", *small])
    with pytest.raises(
        StageError,
        match=r"label: its input .*runs/debug=small,label=faceqan/"
        r"data/prepared is not there: .*`fiqa prepare debug=small label=faceqan`",
    ):
        place_adhoc_run("label", cfg, small)
    train = compose_config([f"paths.root={tmp_path}", "label=serfiq"])  # no labels of its own
    with pytest.raises(StageError, match=r"Run `fiqa label label=serfiq` first"):
        place_adhoc_run("train", train, ["label=serfiq"])
