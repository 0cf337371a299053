"""fiqa study: a study is a DVC pipeline of the pipeline's own stages. DVC decides what runs (a
killed study continues, an added method trains alone, a changed label setting retrains only its
methods, nothing changed runs nothing) and Hydra's launcher fans the trainings out."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from conftest import demo_config
from fiqa.cli.study import JOB_RECORD, run_study_app
from fiqa.config.typed import ConfigError
from fiqa.pipeline.study import study_pipeline
from fiqa.stages import StageError

METHODS = ["faceqnet", "serfiq+ediffiqa"]
BLIND = ["serfiq", "detector", "sharpness"]
BIN = Path(sys.executable).parent


def study_args(small_demo: Path, *overrides: str, methods: list[str] = METHODS) -> list[str]:
    """A small study of the small demo: the smoke preset, one epoch, all pairs (the validation
    identities of so few make no recognition errors)."""
    return [f"paths.root={Path.cwd()}", f"data.root={small_demo / 'raw'}", "logger=none",
            "debug=smoke", "trainer.max_epochs=1", "study.name=small",
            f"study.methods=[{','.join(methods)}]", f"study.blind=[{','.join(BLIND)}]",
            "study.benchmarks=[{format: prepared, split: all}]", "study.seeds=1",
            f"hydra.run.dir={Path.cwd() / 'outputs'}", *overrides]  # fmt: skip


@pytest.fixture
def dvc_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty DVC repository (no git) as the working directory."""
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path,
                   check=True)  # fmt: skip
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two trainings side by side on 2 cores
    return tmp_path


def test_a_study_stage_waits_for_the_dvc_lock_a_parallel_job_holds(dvc_repo: Path):
    from dvc.repo import Repo

    from fiqa.pipeline.study import Study, reproduce

    study = Study(Path("studies/tiny"), dvc_repo, methods=[], config={}, stages=[])
    (dvc_repo / study.directory).mkdir(parents=True)
    (dvc_repo / study.dvc_yaml).write_text("stages:\n  hello:\n    cmd: echo hi > out.txt\n"
                                           "    outs: [out.txt]\n")  # fmt: skip
    lock = Repo(str(dvc_repo)).lock  # as a training beside it holds it, hashing its outputs
    lock.lock()
    threading.Timer(5.0, lock.unlock).start()  # beyond DVC's default 3 s of retries
    start = time.monotonic()
    reproduce(study, ["hello"], single_item=True)
    assert time.monotonic() - start >= 5.0
    assert (dvc_repo / study.directory / "out.txt").read_text() == "hi\n"


def ran(output: str) -> list[str]:
    """The study stages DVC ran, in order, from its output."""
    return re.findall(r"Running stage 'studies/small/dvc\.yaml:([^']+)'", output)


def locked_outs(study: Path) -> dict[str, str]:
    """``{stage: md5 of its first output}`` as ``dvc.lock`` records them."""
    lock = yaml.safe_load((study / "dvc.lock").read_text())["stages"]
    return {name: stage["outs"][0]["md5"] for name, stage in lock.items() if stage.get("outs")}


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every process under it (DVC and the stage it runs), as a scheduler
    preempting a job would. Each is stopped first, so it cannot start a child (the next
    training's DVC) between the listing of its children and its end."""
    os.kill(pid, signal.SIGSTOP)
    children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                              text=True, check=False).stdout.split()  # fmt: skip
    for child in children:
        kill_tree(int(child))
    os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_a_study_continues_after_a_kill_adds_methods_alone_and_reruns_only_changes(
    dvc_repo: Path, small_demo: Path, capfd: pytest.CaptureFixture[str]
):
    study = dvc_repo / "studies" / "small"
    # Killed once its first training is recorded (the second may have started).
    proc = subprocess.Popen([str(BIN / "fiqa"), "study", *study_args(small_demo)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 600
    while "train-faceqnet" not in locked_outs_or_empty(study):
        assert proc.poll() is None and time.monotonic() < deadline, "the study stopped early"
        time.sleep(0.5)
    kill_tree(proc.pid)
    proc.wait(timeout=60)
    first = locked_outs(study)
    assert "evaluate" not in first

    run_study_app(study_args(small_demo))  # continues: the recorded stages are not run again
    assert not {"prepare", "label-faceqnet", "train-faceqnet"} & set(ran(capfd.readouterr().out))
    lock = locked_outs(study)
    assert all(lock[name] == md5 for name, md5 in first.items())
    results = json.loads((study / "metrics" / "eval.json").read_text())
    rows = results["demo_all"]["sface"]
    assert [m for m in rows if rows[m]["kind"] == "blind"] == [
        "faceqnet(R)",
        "serfiq+ediffiqa(R)",
        *BLIND,
    ]
    assert rows["faceqnet(R)"]["same_model"] is True  # trained on SFace labels, scored by SFace
    assert "| faceqnet(R) |" in (study / "reports" / "eval.md").read_text()
    train = json.loads((study / "metrics" / "serfiq+ediffiqa" / "train.json").read_text())
    assert train["labels"] == {"target": "serfiq+ediffiqa"}  # the corrected labels, recorded
    labels = json.loads((study / "data/labels/serfiq+ediffiqa/report.json").read_text())
    assert set(labels["methods"]) == {"serfiq", "serfiq+ediffiqa"}  # reported by the stage

    run_study_app(study_args(small_demo, methods=[*METHODS, "crfiqa"]))  # an added method
    assert ran(capfd.readouterr().out) == ["label-crfiqa", "train-crfiqa", "evaluate"]
    run_study_app(study_args(small_demo, "label.ediffiqa.eps=0.3"))  # only its method's labels
    assert ran(capfd.readouterr().out) == ["label-serfiq+ediffiqa", "train-serfiq+ediffiqa",
                                           "evaluate"]  # fmt: skip
    run_study_app(study_args(small_demo, "label.ediffiqa.eps=0.3"))  # nothing changed
    assert ran(capfd.readouterr().out) == []

    # The trainings side by side through a multi-process launcher, then again one after the
    # other by DVC: the same models, byte for byte, so the same table.
    sweep = dvc_repo / "sweep"
    run_study_app(study_args(small_demo, "label.ediffiqa.eps=0.3", "train.seed=1",
                             "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                             f"hydra.sweep.dir={sweep}"))  # fmt: skip
    jobs = [json.loads(p.read_text()) for p in sorted(sweep.glob(f"*/{JOB_RECORD}"))]
    assert sorted(j["stage"] for j in jobs) == ["train-faceqnet", "train-serfiq+ediffiqa"]
    assert jobs[0]["pid"] != jobs[1]["pid"] != os.getpid()
    assert max(j["start"] for j in jobs) < min(j["end"] for j in jobs)  # they overlapped
    parallel, table = locked_outs(study), (study / "metrics" / "eval.json").read_bytes()
    for method in METHODS:
        subprocess.run([sys.executable, "-m", "dvc", "repro", "--force", "--single-item",
                        f"studies/small/dvc.yaml:train-{method}"], check=True)  # fmt: skip
    assert locked_outs(study) == parallel
    subprocess.run([sys.executable, "-m", "dvc", "repro", "studies/small/dvc.yaml"], check=True)
    assert (study / "metrics" / "eval.json").read_bytes() == table


def locked_outs_or_empty(study: Path) -> dict[str, str]:
    """``locked_outs`` while DVC may be writing the file: empty when absent or half written."""
    try:
        return locked_outs(study)
    except (FileNotFoundError, yaml.YAMLError, TypeError, KeyError):
        return {}


def test_each_study_stage_depends_on_the_settings_its_method_reads(tmp_path: Path,
                                                                    small_demo: Path):  # fmt: skip
    (tmp_path / ".dvc").mkdir()
    other = "{format: folder, root: '${paths.root}/faces'}"  # interpolated in the study's config
    (tmp_path / "faces").mkdir()
    cfg = demo_config(tmp_path, small_demo, "study.methods=[huo,fused,crfiqa+ediffiqa,diffiqa]",
                      "study.blind=[serfiq]", "study.seeds=1",
                      f"study.benchmarks=[{{format: prepared, split: val}},{other}]")  # fmt: skip
    study = study_pipeline(cfg, tmp_path)
    stages = {s.name: s for s in study.stages}
    assert list(stages) == ["prepare", "ddpm", "label-huo", "train-huo", "label-fused",
                            "train-fused", "label-crfiqa+ediffiqa", "train-crfiqa+ediffiqa",
                            "label-diffiqa", "train-diffiqa", "evaluate"]  # fmt: skip

    def methods(stage: str) -> list[str]:
        return [p.removeprefix("label.methods.") for p in stages[stage].params
                if p.startswith("label.methods.")]  # fmt: skip

    assert methods("label-huo") == methods("train-huo") == ["serfiq", "huo"]
    assert methods("label-fused") == ["faceqnet", "serfiq", "fused"]  # its weighted columns
    assert methods("label-crfiqa+ediffiqa") == ["crfiqa"]
    assert "label.ediffiqa" in stages["label-crfiqa+ediffiqa"].params
    assert "label.ediffiqa" not in stages["train-huo"].params
    assert methods("evaluate") == ["serfiq"]  # the blind method it computes
    assert methods("ddpm") == ["diffiqa.ddpm"]  # not fused's weights: its target is diffiqa
    ddpm = study.directory.as_posix() + "/ddpm"
    assert ddpm in stages["label-diffiqa"].deps and ddpm not in stages["label-huo"].deps
    assert "ddpm.unet" in stages["label-diffiqa"].params
    assert "ddpm.unet" not in stages["label-fused"].params
    assert "label.target=crfiqa+ediffiqa" in stages["train-crfiqa+ediffiqa"].cmd
    raw = (small_demo / "raw").resolve()  # the training set is a dep of prepare
    assert any((tmp_path / d).resolve() == raw for d in stages["prepare"].deps)
    assert "faces" in stages["evaluate"].deps  # and a benchmark's folder of evaluate
    # The study's config: its paths, its W&B group, its regressors beside the blind methods.
    config = study.config
    assert config["paths"]["models"] == str(tmp_path / "studies" / "demo" / "models")
    assert config["paths"]["cache"] == str(tmp_path / "cache")  # shared with every run
    assert config["experiment_name"] == "study-demo"
    assert config["eval"]["benchmarks"] == [{"format": "folder", "name": None, "impostors": 10000,
                                             "seed": 0, "root": str(tmp_path / "faces")}]  # fmt: skip
    assert config["eval"]["methods"] == ["huo(R)", "fused(R)", "crfiqa+ediffiqa(R)",
                                         "diffiqa(R)", "serfiq"]  # fmt: skip
    assert config["label"]["methods"]["diffiqa"]["ddpm"] == str(tmp_path / "studies/demo/ddpm")


def test_several_seeds_train_each_method_once_per_seed(tmp_path: Path, small_demo: Path):
    (tmp_path / ".dvc").mkdir()
    cfg = demo_config(tmp_path, small_demo, "study.methods=[faceqnet,crfiqa]", "study.seeds=2",
                      "train.seed=5", "study.blind=[sharpness]")  # fmt: skip
    study = study_pipeline(cfg, tmp_path)
    stages = {s.name: s for s in study.stages}
    assert study.stage_names("train") == ["train-faceqnet-s5", "train-faceqnet-s6",
                                          "train-crfiqa-s5", "train-crfiqa-s6"]  # fmt: skip
    assert study.stage_names("label") == ["label-faceqnet", "label-crfiqa"]  # labelled once
    train = stages["train-crfiqa-s6"]
    assert "train.seed=6" in train.cmd and "models/crfiqa/s6" in train.cmd
    assert train.outs == [f"{study.directory.as_posix()}/models/crfiqa/s6"]
    assert f"{study.directory.as_posix()}/models/faceqnet/s5" in stages["evaluate"].deps
    assert study.config["eval"]["methods"] == ["faceqnet(R)-s5", "faceqnet(R)-s6",
                                               "crfiqa(R)-s5", "crfiqa(R)-s6", "sharpness"]  # fmt: skip
    model = study.config["eval"]["quality_models"]["crfiqa(R)-s6"]["path"]
    assert model.endswith("models/crfiqa/s6/quality.ckpt")


def test_study_errors_name_the_method_and_the_missing_repository(tmp_path: Path,
                                                                 small_demo: Path):  # fmt: skip
    cfg = demo_config(tmp_path, small_demo, "study.methods=[faceqnet,crfiqa+typo]")
    with pytest.raises(ConfigError, match=r"study.methods: unknown \['crfiqa\+typo'\]"):
        study_pipeline(cfg, tmp_path)
    with pytest.raises(StageError, match="not inside a DVC repository"):
        study_pipeline(demo_config(tmp_path, small_demo), tmp_path)


def test_variants_train_a_column_again_with_their_settings_in_the_same_table(tmp_path: Path,
                                                                            small_demo: Path):  # fmt: skip
    (tmp_path / ".dvc").mkdir()
    variants = ["+study.variants.copies={prepare.copies.per_face: 1}",
                "+study.variants.slow={model.lr: 0.0005}",
                "+study.variants.wide={label.methods.serfiq.passes: 7}"]  # fmt: skip
    cfg = demo_config(tmp_path, small_demo, "study.methods=[serfiq,serfiq.copies,serfiq.slow,"
                      "crfiqa.wide]", "study.seeds=1", "study.blind=[sharpness]", *variants)  # fmt: skip
    study = study_pipeline(cfg, tmp_path)
    stages = {s.name: s for s in study.stages}
    d = study.directory.as_posix()
    assert list(stages) == ["prepare", "prepare-copies", "label-serfiq", "train-serfiq",
                            "label-serfiq.copies", "train-serfiq.copies", "train-serfiq.slow",
                            "label-crfiqa.wide", "train-crfiqa.wide", "evaluate"]  # fmt: skip
    # copies: its own prepared set and labels, on its own config file
    assert stages["prepare-copies"].outs == [f"{d}/data/prepared.copies"]
    assert stages["label-serfiq.copies"].deps[-1] == f"{d}/data/prepared.copies"
    assert "--config-name params-copies" in stages["train-serfiq.copies"].cmd
    assert stages["train-serfiq.copies"].params_file == f"{d}/params-copies.yaml"
    assert study.variants["copies"]["prepare"]["copies"]["per_face"] == 1
    assert study.config["prepare"]["copies"]["per_face"] == 0
    # slow changes training only: it trains on the plain row's labels
    assert f"{d}/data/labels/serfiq" in stages["train-serfiq.slow"].deps
    assert study.variants["slow"]["model"]["lr"] == 0.0005
    # a variant of a column without a plain row labels it itself
    assert "label.target=crfiqa " in stages["label-crfiqa.wide"].cmd
    assert study.variants["wide"]["label"]["methods"]["serfiq"]["passes"] == 7
    # one table: every row evaluated on the plain prepared set's validation split
    assert study.config["eval"]["methods"] == ["serfiq(R)", "serfiq.copies(R)", "serfiq.slow(R)",
                                               "crfiqa.wide(R)", "sharpness"]  # fmt: skip
    assert f"{d}/data/prepared" in stages["evaluate"].deps
    assert f"{d}/data/prepared.copies" not in stages["evaluate"].deps
    assert f"{d}/models/serfiq.copies" in stages["evaluate"].deps


def test_a_variant_may_not_move_a_validation_identity(tmp_path: Path, small_demo: Path):
    (tmp_path / ".dvc").mkdir()

    def study_of(settings: str):
        cfg = demo_config(tmp_path, small_demo, "data=table", "data.table=faces.csv",
                          "data.min_images=2", "prepare.val_min_images=2",
                          "study.methods=[serfiq.v]", f"+study.variants.v={settings}")  # fmt: skip
        return study_pipeline(cfg, tmp_path)

    with pytest.raises(ConfigError, match=r"study.variants.v: \['prepare.val_fraction'\] would"):
        study_of("{prepare.val_fraction: 0.5}")
    with pytest.raises(ConfigError, match=r"\['data.min_images'\] would change the validation"):
        study_of("{data.min_images: 3}")  # above prepare.val_min_images (2): drops val identities
    with pytest.raises(ConfigError, match=r"study\.variants\.v: train\.typo is no config key"):
        study_of("{train.typo: 1}")
    with pytest.raises(ConfigError, match=r"\['serfiq.nope'\] name a variant"):
        study_pipeline(demo_config(tmp_path, small_demo, "study.methods=[serfiq.nope]"), tmp_path)
    # single-image identities added for training only: allowed, on a prepared set of its own
    ok = study_of("{data.min_images: 1}")
    assert "prepare-v" in [s.name for s in ok.stages]
    assert ok.variants["v"]["data"]["min_images"] == 1
