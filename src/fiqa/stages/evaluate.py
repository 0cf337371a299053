"""evaluate: the cross-model EDC matrix, benchmarks x FR models x quality methods
(``fiqa.eval.matrix``).

Writes metrics/eval.json (benchmark -> FR model -> method -> metrics, with ``same_model``),
plots/edc/<benchmark>__<fr>.json (DVC plots), reports/edc_<benchmark>__<fr>.png/.svg and
reports/eval.md/.html (one table per FR model, as the seed's eDifFIQA tables), and the same to
W&B.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from fiqa.config.evaluation import eval_sets, quality_sources
from fiqa.config.extraction import extractor, fr_entries
from fiqa.config.typed import register_templates
from fiqa.core.artifacts import LABELS, MANIFEST
from fiqa.core.lineage import check_lineage
from fiqa.eval.matrix import evaluate_matrix
from fiqa.eval.outputs import write_matrix
from fiqa.stages import StageError
from fiqa.tracking import tracked_run

log = logging.getLogger(__name__)


def check_inputs(cfg: DictConfig) -> None:
    """The labels were made from the prepared set, and the model (``model`` in
    ``eval.methods``) from both (``fiqa.core.lineage``); nothing to check without a prepared set
    (external benchmarks only) or labels.

    Raises:
        LineageError: Naming the record and the file that do not belong to it.
    """
    prepared, labels = Path(cfg.paths.prepared), Path(cfg.paths.labels)
    if (prepared / MANIFEST).is_file() and (labels / LABELS).is_file():
        models = [Path(cfg.paths.models)] if "model" in cfg.eval.methods else []
        check_lineage(prepared, labels, models)


def run(cfg: DictConfig) -> dict[str, float]:
    """Write metrics/eval.json, plots/edc/*.json and reports/ (figures, eval.md, eval.html)."""
    register_templates(cfg)
    e = cfg.eval
    fmrs = list(dict.fromkeys([float(e.fmr), *map(float, e.extra_fmrs)]))
    limits = [float(x) for x in e.discard_limits]
    try:
        check_inputs(cfg)
        sets = eval_sets(cfg)
    except (FileNotFoundError, ValueError) as err:
        raise StageError(f"evaluate: {err}") from err
    frs = fr_entries(cfg, "eval.fr_models")
    runner = extractor(cfg)  # each FR model loaded once for all benchmarks and methods
    with tracked_run(cfg, "evaluate") as tracking:
        try:
            matrix = evaluate_matrix(sets, frs, quality_sources(cfg, runner), runner, fmrs,
                                     limits, str(e.pair_quality))  # fmt: skip
        except ValueError as err:
            raise StageError(str(err)) from err
        write_matrix(matrix, cfg.paths.metrics, cfg.paths.plots, cfg.paths.reports, tracking.wandb)
    log.info("evaluate: %d benchmarks x %d FR models -> %s", len(sets), len(frs), cfg.paths.metrics)
    return matrix.summary()
