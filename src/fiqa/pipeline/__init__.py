"""The DVC pipelines fiqa writes: the project's ``dvc.yaml`` (``fiqa dvc-yaml``) and a study's
(``fiqa study``), both from the stage declarations of ``fiqa.stages`` and the stages' code."""
