"""End to end: the real DVC pipeline on a small demo in a temporary git repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from fiqa.config import compose_config
from fiqa.config.params_file import compose_params
from fiqa.data.face_store import PreparedFaces

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def set_default_option(config: Path, group: str, option: str) -> None:
    """Select ``option`` for ``group`` in the defaults list of a primary config file."""
    cfg = OmegaConf.load(config)
    entries = [e for e in cfg.defaults if isinstance(e, DictConfig) and group in e]
    assert len(entries) == 1, f"{config} has no single `{group}:` default"
    entries[0][group] = option
    OmegaConf.save(cfg, config)


def sh(repo: Path, *cmd: str, env: dict[str, str]) -> str:
    """Run a command in ``repo``; fail the test with its output when it fails."""
    proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{output[-6000:]}"
    return output


@pytest.fixture(scope="module")
def pipeline_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], str]:
    """A git repo with fiqa's pipeline files, a small demo, and one full `dvc repro`."""
    repo = tmp_path_factory.mktemp("e2e") / "repo"
    repo.mkdir()
    for name in [
        "src",
        "conf",
        ".dvc",
        "dvc.yaml",
        ".dvcignore",
        ".gitignore",
        "train.py",
        "data.dvc",
    ]:
        src = REPO_ROOT / name
        if src.is_dir():
            ignore = shutil.ignore_patterns("cache", "tmp", "__pycache__", "*.egg-info")
            shutil.copytree(src, repo / name, ignore=ignore)
        else:
            shutil.copy2(src, repo / name)
    # Seconds instead of minutes: the smoke preset (few SER-FIQ passes, 2 short epochs) as the
    # default, so `dvc exp run -S` composes it too; and the small demo's 2 validation identities
    # make no recognition errors, so evaluate all pairs.
    set_default_option(repo / "conf" / "config.yaml", "debug", "smoke")
    bench = OmegaConf.load(repo / "conf" / "eval" / "benchmark" / "prepared.yaml")
    bench.split = "all"
    OmegaConf.save(bench, repo / "conf" / "eval" / "benchmark" / "prepared.yaml")
    composed = compose_config(directory=repo / "conf")
    assert composed.label.methods.serfiq.passes == 8 and composed.eval.benchmark.split == "all"
    (repo / "params.yaml").write_text(compose_params(repo / "conf"))

    home = repo.parent / "home"
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "WANDB_MODE": "offline",  # real offline W&B runs, kept inside the temp dir
        "WANDB_DIR": str(home),
        "WANDB_CACHE_DIR": str(home),
        "WANDB_CONFIG_DIR": str(home),
        "WANDB_DATA_DIR": str(home),
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    sh(repo, "git", "init", "-q", env=env)
    sh(repo, "fiqa", "demo-data", "--out", "data/raw", "--portrait-images", "8",
       "--lfw-identities", "6", "--lfw-images", "5", env=env)  # fmt: skip
    sh(repo, "dvc", "commit", "-f", "-q", "data.dvc", env=env)
    sh(repo, "git", "add", "-A", env=env)
    sh(repo, "git", "commit", "-qm", "pipeline", env=env)
    log = sh(repo, "dvc", "repro", env=env)
    return repo, env, log


@pytest.mark.slow
def test_repro_writes_every_stage_output(pipeline_repo):
    repo, _, log = pipeline_repo
    for stage in ["prepare", "label", "train", "evaluate"]:
        assert f"Running stage '{stage}'" in log
    manifest = pd.read_parquet(repo / "data/prepared/manifest.parquet")
    failures = pd.read_parquet(repo / "data/prepared/failures.parquet")
    assert set(failures["reason"]) >= {"truncated", "not_an_image"}  # bad files: rows, no crash
    assert len(manifest) + len(failures) == len(pd.read_csv(repo / "data/raw/metadata.csv"))
    labels = pd.read_parquet(repo / "data/labels/labels.parquet")
    assert {"path", "identity", "quality", "faceqnet", "serfiq"} <= set(labels.columns)
    assert labels["quality"].equals(labels["faceqnet"])
    assert json.loads((repo / "data/labels/labels.json").read_text())["fr_models"]["sface"][
        "sha256"
    ]
    assert (repo / "models/quality.ckpt").is_file() and (repo / "models/quality.onnx").is_file()
    results = json.loads((repo / "metrics/eval.json").read_text())
    methods = results["demo_all"]["sface"]
    assert set(methods) == {"model", "serfiq", "detector", "sharpness", "faceqnet", "crfiqa",
                            "sddfiqa", "random", "oracle"}  # fmt: skip
    kinds = {m: entry["kind"] for m, entry in methods.items()}
    assert kinds["model"] == kinds["serfiq"] == kinds["detector"] == "blind"
    assert kinds["faceqnet"] == kinds["crfiqa"] == "label" and kinds["random"] == "baseline"
    assert "crfiqa (label)" in (repo / "reports" / "eval.md").read_text()
    assert methods["random"]["fnmr@0"] > 0
    assert methods["random"]["pauc@0.3"] == pytest.approx(1.0)
    assert methods["oracle"]["pauc@0.3"] <= methods["model"]["pauc@0.3"]
    assert (repo / "plots/edc/demo_all__sface.json").is_file()
    assert (repo / "reports/edc_demo_all__sface.png").is_file()
    runs = list((repo / "wandb").glob("offline-run-*"))  # run files under paths.root
    assert len(runs) == 4, runs  # one offline W&B run per stage


@pytest.mark.slow
def test_status_clean_and_second_repro_is_a_no_op(pipeline_repo):
    repo, env, _ = pipeline_repo
    assert "up to date" in sh(repo, "dvc", "status", env=env)
    again = sh(repo, "dvc", "repro", env=env)
    assert "Running stage" not in again


@pytest.mark.slow
def test_editing_the_extraction_engine_makes_label_and_later_stages_stale(pipeline_repo):
    repo, env, _ = pipeline_repo
    engine = repo / "src" / "fiqa" / "extract" / "predict.py"
    original = engine.read_text()
    engine.write_text(original + "\n# an edit\n")
    try:
        status = sh(repo, "dvc", "status", "--json", env=env)
    finally:
        engine.write_text(original)
    stale = json.loads(status)
    assert {"label", "train", "evaluate"} <= set(stale) and "prepare" not in stale, stale
    assert "up to date" in sh(repo, "dvc", "status", env=env)


@pytest.mark.slow
def test_score_command_on_aligned_faces(pipeline_repo, tmp_path):
    repo, env, _ = pipeline_repo
    faces = PreparedFaces(repo / "data/prepared").faces([0, 1, 2])
    for i, face in enumerate(faces):
        Image.fromarray(face).save(tmp_path / f"face{i}.png")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "scores.csv"
    sh(
        repo,
        "fiqa",
        "score",
        "--checkpoint",
        "models/quality.ckpt",
        str(tmp_path),
        "--out",
        str(out),
        env=env,
    )
    scores = pd.read_csv(out)
    assert len(scores) == 4
    assert scores["quality"].notna().sum() == 3
    assert scores.loc[scores["path"].str.endswith("broken.jpg"), "failure"].notna().all()


@pytest.mark.slow
def test_evaluate_trained_model_on_an_external_folder_benchmark(pipeline_repo, tmp_path):
    repo, env, _ = pipeline_repo
    out = [f"paths.{k}={tmp_path / k}" for k in ("metrics", "plots", "reports")]
    benchmark = ["eval/benchmark=folder", "eval.benchmark.root=data/raw", "eval.benchmark.name=raw"]
    sh(repo, "fiqa", "evaluate", *benchmark, "eval.benchmark.impostors=300", *out, env=env)
    methods = json.loads((tmp_path / "metrics" / "eval.json").read_text())["raw"]["sface"]
    assert {"model", "serfiq", "random", "oracle"} <= set(methods)  # faceqnet: prepared set only
    assert methods["model"]["n_impostor"] <= 300


@pytest.mark.slow
def test_adhoc_evaluate_leaves_the_pipeline_outputs_and_dvc_status_clean(pipeline_repo):
    from fiqa.cli.adhoc import run_folder

    repo, env, _ = pipeline_repo
    before = {p: (repo / p).read_bytes() for p in ("metrics/eval.json", "reports/eval.md")}
    benchmark = ["eval/benchmark=folder", "eval.benchmark.root=data/raw", "eval.benchmark.name=raw",
                 "eval.benchmark.impostors=300"]  # fmt: skip
    log = sh(repo, "fiqa", "evaluate", *benchmark, env=env)
    run = repo / "runs" / run_folder(sorted(benchmark))
    assert f"writes to {run.relative_to(repo)}" in log
    assert "raw" in json.loads((run / "metrics" / "eval.json").read_text())
    assert {p: (repo / p).read_bytes() for p in before} == before
    assert "up to date" in sh(repo, "dvc", "status", env=env)


@pytest.mark.slow
def test_multirun_sweep_gives_each_job_its_own_outputs(pipeline_repo):
    repo, env, _ = pipeline_repo
    sweep = repo / "multirun-lr"
    sh(repo, sys.executable, "train.py", "-m", "model.lr=1e-3,3e-4", "debug=limit",
       "trainer.max_epochs=1", "logger=none", f"hydra.sweep.dir={sweep}", env=env)  # fmt: skip
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [j.name for j in jobs] == ["0", "1"]
    lrs = []
    for job in jobs:
        assert json.loads((job / "metrics" / "train.json").read_text())["train/global_step"] > 0
        ckpt = torch.load(job / "models" / "quality.ckpt", map_location="cpu", weights_only=False)
        lrs.append(ckpt["hyper_parameters"]["lr"])
    assert lrs == [1e-3, 3e-4]
    # the DVC-owned outputs at the fixed paths are not touched by a sweep
    assert json.loads((repo / "metrics" / "train.json").read_text())["train/epochs"] == 2


@pytest.mark.slow
def test_exp_run_with_other_label_method_reruns_from_label(pipeline_repo):
    repo, env, _ = pipeline_repo
    sh(repo, "git", "add", "-A", env=env)
    sh(repo, "git", "commit", "-qm", "results", env=env)
    log = sh(repo, "dvc", "exp", "run", "-S", "label=serfiq", env=env)
    assert "Running stage 'prepare'" not in log
    for stage in ["label", "train", "evaluate"]:
        assert f"Running stage '{stage}'" in log
    labels = pd.read_parquet(repo / "data/labels/labels.parquet")
    assert labels["quality"].equals(labels["serfiq"])
    # the local comparison of the DVC experiments: the baseline commit and the new experiment
    sh(repo, "fiqa", "report", "--dvc", "--out", "outputs/experiments", env=env)
    text = (repo / "outputs" / "experiments.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| model (")]
    assert len(rows) >= 2, text[:2000]  # one model row per experiment with eval metrics
    # the EDC plots against the committed baseline: one figure per benchmark x FR model file,
    # drawn by the repository's template, every method of both revisions in it
    diff = subprocess.run(["dvc", "plots", "diff", "--json"], cwd=repo, env=env,
                          capture_output=True, text=True, check=True)  # fmt: skip
    plots = json.loads(diff.stdout)
    assert not plots.get("errors"), plots["errors"]
    [(name, [figure])] = plots["data"].items()
    assert name == "plots/edc/demo_all__sface.json"
    assert figure["content"]["encoding"]["color"]["field"] == "method"
    values = figure["content"]["data"]["values"]
    assert {v["rev"] for v in values} == {"HEAD", "workspace"}
    assert {v["method"] for v in values} == set(
        json.loads((repo / "metrics/eval.json").read_text())["demo_all"]["sface"]
    )
