"""evaluate: the cross-model EDC matrix, benchmarks x FR models x quality methods
(``fiqa.eval.matrix``).

Writes metrics/eval.json (benchmark -> FR model -> method -> metrics, with ``same_model``),
plots/edc/<benchmark>__<fr>.json (DVC plots), reports/edc_<benchmark>__<fr>.png/.svg and
reports/eval.md/.html (one table per FR model, as the eDifFIQA paper's tables), and the same to
W&B.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from fiqa.config.evaluation import eval_sets, quality_sources
from fiqa.config.extraction import extractor, fr_entries
from fiqa.config.typed import register_templates
from fiqa.core.artifacts import LABELS, MANIFEST
from fiqa.core.lineage import check_lineage
from fiqa.eval.matrix import evaluate_matrix
from fiqa.eval.outputs import write_matrix
from fiqa.stages import StageError
from fiqa.tracking import tracked_run

if TYPE_CHECKING:
    from fiqa.config.schemas import Settings

log = logging.getLogger(__name__)


def check_inputs(settings: Settings) -> None:
    """The labels were made from the prepared set, and the model (``model`` in
    ``eval.methods``) from both (``fiqa.core.lineage``); nothing to check without a prepared set
    (external benchmarks only) or labels.

    Raises:
        LineageError: Naming the record and the file that do not belong to it.
    """
    paths = settings.paths
    prepared, labels = Path(paths.prepared), Path(paths.labels)
    if (prepared / MANIFEST).is_file() and (labels / LABELS).is_file():
        models = [Path(paths.models)] if "model" in settings.eval.methods else []
        check_lineage(prepared, labels, models)


def run(settings: Settings) -> dict[str, float]:
    """Write metrics/eval.json, plots/edc/*.json and reports/ (figures, eval.md, eval.html)."""
    register_templates(settings.prepare.templates)
    e, paths = settings.eval, settings.paths
    try:
        check_inputs(settings)
        sets = eval_sets(settings)
    except (FileNotFoundError, ValueError) as err:
        raise StageError(f"evaluate: {err}") from err
    frs = fr_entries(e.fr_models, settings.fr, "eval.fr_models")
    runner = extractor(settings)  # each FR model loaded once for all benchmarks and methods
    with tracked_run(settings, "evaluate") as tracking:
        try:
            matrix = evaluate_matrix(sets, frs, quality_sources(settings, runner), runner,
                                     e.fmrs, e.discard_limits, e.pair_quality, e.discard_shares,
                                     e.target_fnmr, e.bootstrap)  # fmt: skip
        except ValueError as err:
            raise StageError(str(err)) from err
        write_matrix(matrix, paths.metrics, paths.plots, paths.reports, tracking.wandb)
    log.info("evaluate: %d benchmarks x %d FR models -> %s", len(sets), len(frs), paths.metrics)
    return matrix.summary()
