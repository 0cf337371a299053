"""Pipeline stages: each ``fiqa.stages.<stage>`` module exposes ``run(cfg) -> dict[str, float]``.

``STAGES`` declares, once, what each stage reads and writes: the config keys its outputs
depend on (DVC ``params``), its input and output directories (``paths.*`` keys) and metric and
plot files. ``fiqa dvc-yaml`` writes ``dvc.yaml`` from these declarations and each stage's import
closure (its code ``deps``); tests keep both true. ``fiqa.stages.runner.run_stage`` validates a
config and runs a stage (it is not imported by the stages, so their closure stays their own).
"""

from __future__ import annotations

from dataclasses import dataclass

from fiqa.core.artifacts import EDC_PLOTS, EVAL_METRICS, TRAIN_METRICS

# Config keys any stage may read that change no output byte (where outputs go, tracking,
# parallelism and progress display).
RUNTIME_KEYS = (
    "paths",
    "logger",
    "experiment_name",
    "extract.accelerator",
    "extract.devices",
    "extract.num_nodes",
    "extract.strategy",
    "extract.num_workers",
    "extract.part_rows",
    "extract.progress",
)


@dataclass(frozen=True)
class Stage:
    """What a stage reads and writes.

    Attributes:
        name: Stage name (``fiqa <name>``, the DVC stage, ``fiqa.stages.<name>``).
        params: Config keys (or groups) whose values its outputs depend on.
        deps: ``paths`` keys of its input directories.
        outs: ``paths`` keys of its output directories.
        metrics: ``(paths key, file)`` of its DVC metrics files (not cached).
        plots: ``(paths key, directory)`` of its DVC plots (not cached).
    """

    name: str
    params: tuple[str, ...]
    deps: tuple[str, ...]
    outs: tuple[str, ...]
    metrics: tuple[tuple[str, str], ...] = ()
    plots: tuple[tuple[str, str], ...] = ()


_EXTRACTION = ("fr", "extract.precision")  # embeddings: the models and their precision
DDPM_KEYS = ("ddpm.unet", "ddpm.schedule")  # DifFIQA's DDPM architecture (label.methods.diffiqa)
_ALIGNMENT = ("prepare.template", "prepare.face_selection", "prepare.score_threshold",
              "prepare.pad_ratio")  # fmt: skip
STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage("prepare", ("data", "prepare"), deps=("raw",), outs=("prepared",)),
        # label.methods.fused.weights: a fused target reads diffiqa's column through them
        Stage("ddpm", ("ddpm", "label.target", "label.compute", "label.methods.diffiqa.ddpm",
                       "label.methods.fused.weights", "eval.methods"),
              deps=("prepared",), outs=("ddpm",)),
        Stage("label", ("label", "prepare.templates", *DDPM_KEYS, *_EXTRACTION),
              deps=("prepared", "ddpm"), outs=("labels",)),
        Stage("train", ("model", "trainer", "train", "label.fr_models", "label.target",
                        "label.methods", "label.ediffiqa", "eval.fmr",
                        "eval.discard_limits", "eval.pairs", "prepare.templates", *_EXTRACTION),
              deps=("prepared", "labels"), outs=("models",),
              metrics=(("metrics", TRAIN_METRICS),)),
        Stage("evaluate", ("data.name", "eval", "label.fr_models", "label.methods", "label.seed",
                           "prepare.templates", *DDPM_KEYS, *_ALIGNMENT, *_EXTRACTION),
              deps=("prepared", "ddpm", "labels", "models"), outs=("reports",),
              metrics=(("metrics", EVAL_METRICS),), plots=(("plots", EDC_PLOTS),)),
    )
}  # fmt: skip


class StageError(RuntimeError):
    """A stage cannot produce its outputs; the message says why and what to do."""
