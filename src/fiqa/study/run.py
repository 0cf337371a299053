"""``run_study``: from a training set to the seed's cross-method, cross-model pAUC table.

Steps, each resumable (``state.json`` records a key of each finished step's inputs, a training
step's being its method's label column; a step whose key is unchanged and whose output is there
is not run again, so a killed study continues where it stopped and a method already trained on
the same labels is not retrained):

1. prepare the training set (``prepared/``), and when DifFIQA is studied with the pipeline's
   DDPM, train the study's own face DDPM on it (``ddpm/``; trained models are shared through
   the cache, ``fiqa.diffusion.fit``);
2. label it with every method the study trains on, with the label FR models (``labels/``);
   a method ``<base>+ediffiqa`` is ``<base>``'s labels corrected the eDifFIQA way;
3. one quality regressor per method (``models/<method>/quality.ckpt`` and ``.onnx``, usable with
   ``fiqa score --checkpoint``), on cached trunk features with ``train.cache_frozen``;
4. the blind evaluation matrix: every trained model, named ``<method>(R)`` as the seed's
   DifFIQA(R), next to the per-image methods and simple baselines, on held-out benchmarks with
   every evaluation FR model: ``metrics/study.json``, ``reports/study.md`` / ``.html`` with the
   EDC figures, ``plots/edc/`` (the layout of the pipeline's own outputs, inside the study).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from fiqa.core.artifacts import (
    DDPM_RECORD,
    LABELS,
    MANIFEST,
    QUALITY_ONNX,
    STUDY_REPORT,
    STUDY_STATE,
)
from fiqa.core.atomic import write_json_atomic
from fiqa.core.provenance import digest
from fiqa.data.preparation import PrepareSettings, fingerprint, prepare_faces
from fiqa.data.prepared import PreparedFaces
from fiqa.data.sources import Source
from fiqa.diffusion.fit import DDPMJob, fit_ddpm
from fiqa.diffusion.settings import DDPMSettings
from fiqa.eval.matrix import Matrix, evaluate_matrix
from fiqa.eval.outputs import write_matrix
from fiqa.eval.qualities import QualitySources
from fiqa.eval.sets import Aligner, load_eval_sets
from fiqa.extract import Extractor, FREntry
from fiqa.label import get_method
from fiqa.label.diffiqa import METHOD as DDPM_METHOD
from fiqa.label.table import LabelJob, build_labels, corrected, extract_for_labels, write_labels
from fiqa.train.fit import TrainJob, fit_quality_model

log = logging.getLogger(__name__)

CORRECTED = "+ediffiqa"  # suffix of a method trained on eDifFIQA-corrected labels
Tracker = Callable[[str], AbstractContextManager[Any]]  # job type -> a W&B run (or None)


@dataclass
class StudySpec:
    """Everything a study runs on.

    Attributes:
        directory: The study's folder (``paths.studies/<name>``).
        source: The training set (``fiqa.data.sources.read_source``), ``data``, its config as
            YAML, and ``data_name``, its name (of the ``prepared`` benchmark).
        prepare: How it is prepared.
        label: The label job (its ``compute`` is replaced by the study's base methods).
        methods: One regressor per entry: a label method or ``<method>+ediffiqa``.
        train: The training job template (paths and label column are set per method).
        benchmarks: Evaluation benchmark specs (``format: prepared`` is the study's own split).
        fr_models: Evaluation FR models.
        blind: Per-image methods and baselines evaluated beside the models.
        fmrs: FMRs, the primary first; ``limits``: pAUC discard limits; ``how``: pair quality.
        aligner: Aligner factory of raw benchmark photos.
        extractor: The extraction engine (its cache is shared with every other run).
        ddpm: The face DDPM to train on the training set for DifFIQA (``ddpm`` group); None
            when no studied method reads a DDPM or ``label.methods.diffiqa.ddpm`` names one.
    """

    directory: Path
    source: Source
    data: str
    data_name: str
    prepare: PrepareSettings
    label: LabelJob
    methods: list[str]
    train: TrainJob
    benchmarks: list[dict[str, Any]]
    fr_models: dict[str, FREntry]
    blind: list[str]
    fmrs: list[float]
    limits: list[float]
    how: str
    aligner: Aligner
    extractor: Extractor
    ddpm: DDPMSettings | None = None

    @property
    def base_methods(self) -> list[str]:
        """The label methods the study's methods need, in their order."""
        return list(dict.fromkeys(m.removesuffix(CORRECTED) for m in self.methods))

    def model_dir(self, method: str) -> Path:
        return self.directory / "models" / method


def run_study(spec: StudySpec, tracker: Tracker, train_logger: Tracker) -> Matrix:
    """Run (or continue) the study of ``spec``; returns its evaluation matrix.

    Args:
        spec: The study.
        tracker: Opens the W&B run of a step by job type (``prepare``, ``label``, ``evaluate``).
        train_logger: Opens the Lightning logger of one method's training, by method (it yields
            False for none).
    """
    state = _State(spec.directory / STUDY_STATE)
    times: dict[str, float] = {}
    prepared_dir, labels_dir = spec.directory / "prepared", spec.directory / "labels"

    key = fingerprint(spec.prepare, spec.data, spec.source)
    if not state.done("prepare", key, prepared_dir / MANIFEST):
        with _timed(times, "prepare"), tracker("prepare"):
            prepare_faces(spec.source, spec.prepare, prepared_dir, spec.data)
        state.finish("prepare", key, times)

    prepare_key = key
    if spec.ddpm is not None:
        spec = _with_study_ddpm(spec, prepared_dir, prepare_key, state, times, tracker)
    job = replace(spec.label, target=spec.base_methods[0], compute=tuple(spec.base_methods))
    key = digest([prepare_key, _plain(asdict(job)), spec.methods])
    if not state.done("label", key, labels_dir / LABELS):
        with _timed(times, "label"), tracker("label"):
            _label(spec, job, PreparedFaces(prepared_dir), labels_dir)
        state.finish("label", key, times)

    labels = pd.read_parquet(labels_dir / LABELS)
    for method in spec.methods:
        train = replace(spec.train, prepared_dir=prepared_dir, labels_path=labels_dir / LABELS,
                        label_column=method, models_dir=spec.model_dir(method),
                        metrics_dir=spec.model_dir(method))  # fmt: skip
        # Keyed by the method's own labels: another method added or changed retrains only itself.
        column = pd.util.hash_pandas_object(labels[["sample_id", method]], index=False)
        key = digest([prepare_key, column.to_numpy().tobytes().hex(), method, str(spec.directory),
                      _plain(asdict(replace(train, prepared_dir=Path())))])  # fmt: skip
        if not state.done(f"train/{method}", key, spec.model_dir(method) / QUALITY_ONNX):
            log.info("study: training the regressor on %s labels", method)
            with _timed(times, f"train/{method}"), train_logger(method) as logger:
                fit_quality_model(train, spec.extractor, logger)
            state.finish(f"train/{method}", key, times)

    with _timed(times, "evaluate"), tracker("evaluate") as run:
        matrix = _evaluate(spec, prepared_dir, labels_dir)
        d = spec.directory
        write_matrix(matrix, d / "metrics", d / "plots", d / "reports", run, name=STUDY_REPORT)
    state.record_time("evaluate", times)
    log.info("study %s: seconds per step of this run %s (all runs: %s)", spec.directory,
             {k: round(v, 1) for k, v in times.items()}, state.path)  # fmt: skip
    return matrix


def _with_study_ddpm(spec: StudySpec, prepared_dir: Path, prepare_key: str, state: _State,
                     times: dict[str, float], tracker: Tracker) -> StudySpec:  # fmt: skip
    """Train (or reuse) the study's DDPM on its training set; the spec with DifFIQA reading it."""
    assert spec.ddpm is not None
    directory = spec.directory / "ddpm"
    key = digest([prepare_key, _plain(asdict(spec.ddpm))])
    if not state.done("ddpm", key, directory / DDPM_RECORD):
        with _timed(times, "ddpm"), tracker("ddpm"):
            fit_ddpm(DDPMJob(spec.ddpm, prepared_dir, directory,
                             spec.extractor.cache_root / "ddpm"))  # fmt: skip
        state.finish("ddpm", key, times)
    params = dict(spec.label.params)
    params[DDPM_METHOD] = replace(params[DDPM_METHOD], ddpm=str(directory))
    return replace(spec, label=replace(spec.label, params=params))


def _label(spec: StudySpec, job: LabelJob, prepared: PreparedFaces, directory: Path) -> None:
    ctx, outputs = extract_for_labels(job, prepared, spec.extractor)
    labels = build_labels(job, prepared, ctx, outputs, spec.extractor)
    for method in spec.methods:
        if method.endswith(CORRECTED):
            labels.table[method] = corrected(labels.table[method.removesuffix(CORRECTED)], job,
                                             ctx, outputs)  # fmt: skip
    write_labels(labels, directory)


def _evaluate(spec: StudySpec, prepared_dir: Path, labels_dir: Path) -> Matrix:
    models = {f"{m}(R)": {"path": str(spec.model_dir(m) / QUALITY_ONNX),
                          "fr_models": list(spec.label.fr_models)} for m in spec.methods}  # fmt: skip
    sources = QualitySources(
        methods=[*models, *spec.blind],
        model_path=None,  # the study names each of its models
        quality_models=models,
        label_frs=spec.label.fr_models,
        label_params=spec.label.params,
        seed=spec.label.seed,
        fr_defaults=spec.label.fr_defaults,
        extractor=spec.extractor,
        cache_dir=spec.extractor.cache_root / "quality",
    )
    sets = load_eval_sets(spec.benchmarks, prepared_dir=prepared_dir, labels_dir=labels_dir,
                          data_name=spec.data_name, aligner=spec.aligner)  # fmt: skip
    return evaluate_matrix(sets, spec.fr_models, sources, spec.extractor, spec.fmrs, spec.limits,
                           spec.how)  # fmt: skip


class _State:
    """``state.json``: the key each finished step ran with, and the seconds it took."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
        self.data.setdefault("steps", {})
        self.data.setdefault("seconds", {})

    def done(self, step: str, key: str, output: Path) -> bool:
        """Whether ``step`` finished with inputs ``key`` and its ``output`` is still there."""
        finished = self.data["steps"].get(step) == key and output.exists()
        if finished:
            log.info("study: %s already done with these inputs, skipped", step)
        return finished

    def finish(self, step: str, key: str, times: dict[str, float]) -> None:
        """Record ``step`` as done with inputs ``key``, in ``times[step]`` seconds."""
        self.data["steps"][step] = key
        self.record_time(step, times)

    def record_time(self, step: str, times: dict[str, float]) -> None:
        self.data["seconds"][step] = round(times[step], 1)
        write_json_atomic(self.path, self.data)


class _timed:
    """Adds the seconds a block took to ``times[name]``."""

    def __init__(self, times: dict[str, float], name: str) -> None:
        self.times, self.name = times, name

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.times[self.name] = time.perf_counter() - self.start


def _plain(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def study_methods(methods: Sequence[str]) -> list[str]:
    """Check the method names of a study (``<label method>`` or ``<label method>+ediffiqa``);
    ``ValueError`` names an unknown one."""
    for method in methods:
        get_method(method.removesuffix(CORRECTED))
    return list(methods)
