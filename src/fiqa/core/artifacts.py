"""File names of every stage output: the one place a stage's output is named.

Directories come from ``conf/paths/`` (``paths.prepared``, ``paths.labels``, ...); the names
inside them are fixed here, so a stage and the stages that read its output cannot disagree::

    paths.prepared/  MANIFEST, FAILURES, PREPARE_SUMMARY, faces-NNNNN.bin shards
    paths.labels/    LABELS, LABELS_PROVENANCE, LABEL_REPORT, LABEL_FIGURES/
    paths.models/    QUALITY_CHECKPOINT, QUALITY_ONNX, STUDENT, COST_TABLE, LINEAGE (staged with
                     LAST_CHECKPOINT in <models>.partial/, ``fiqa.train.staging``)
    paths.metrics/   TRAIN_METRICS, EVAL_METRICS
    paths.plots/     EDC_PLOTS/<benchmark>__<fr model>.json
    paths.reports/   EVAL_REPORT.md / .html, edc_<benchmark>__<fr model>.png / .svg
    paths.cache/     QUALITY_SCORES/ (quality-model scores), <fr model>-<key>/ (extraction)

A study (``fiqa.pipeline.study``) is the same layout under ``paths.studies/<name>/``, with one
labels folder per method (``data/labels/<method>/``), one model folder (``models/<method>/``)
and one ``metrics/<method>/TRAIN_METRICS``.
"""

MANIFEST = "manifest.parquet"
FAILURES = "failures.parquet"
PREPARE_SUMMARY = "summary.json"

LABELS = "labels.parquet"
LABELS_PROVENANCE = "labels.json"
LABEL_REPORT = "report.json"
LABEL_FIGURES = "report"

QUALITY_CHECKPOINT = "quality.ckpt"
QUALITY_ONNX = "quality.onnx"
LAST_CHECKPOINT = "checkpoints/last.ckpt"  # full training state (in the staging directory)
LINEAGE = "lineage.json"  # config and input hashes of the model (fiqa.core.lineage)
STUDENT = "student.pth"
COST_TABLE = "cost.md"

TRAIN_METRICS = "train.json"
EVAL_REPORT = "eval"  # the stem of the evaluation's metrics and reports
EVAL_METRICS = f"{EVAL_REPORT}.json"
EDC_PLOTS = "edc"

QUALITY_SCORES = "quality"

DDPM_RECORD = "ddpm.json"  # the DDPM stage output: how it was trained, or why none was needed
DDPM_SAMPLES = "samples.png"  # input, x_t and reconstruction rows
