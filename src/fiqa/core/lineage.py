"""Lineage: the inputs a stage output was made from, so that no stage combines outputs of
different runs.

Every output that is made from another stage's output records the SHA-256 of those inputs::

    paths.labels/labels.json   "inputs": {"manifest": <sha256 of paths.prepared/manifest.parquet>}
    paths.models/lineage.json  "inputs": {"manifest": ..., "labels": <sha256 of labels.parquet>}

A stage that reads several outputs checks, before any work, that the recorded hashes are those
of the files it was given (``check_lineage``: train on its manifest and labels, evaluate on its
manifest, labels and quality models); a mismatch stops it with an error naming both files. The manifest and the labels table are written once per run and read whole by their
users, so hashing them costs about what reading them does.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

from fiqa.core.artifacts import LABELS, LABELS_PROVENANCE, LINEAGE, MANIFEST
from fiqa.core.provenance import sha256_now

log = logging.getLogger(__name__)


class LineageError(ValueError):
    """Inputs that were not made from each other (outputs of different runs)."""


def input_hashes(inputs: Mapping[str, Path]) -> dict[str, str]:
    """SHA-256 of each input file, by name (``{"manifest": ..., "labels": ...}``)."""
    return {name: sha256_now(path) for name, path in inputs.items()}


def recorded_inputs(record: Path) -> dict[str, str] | None:
    """The ``inputs`` hashes a JSON record holds; None when the record has none (absent, or
    written before fiqa recorded lineage)."""
    if not record.is_file():
        return None
    try:
        inputs = json.loads(record.read_text(encoding="utf-8")).get("inputs")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
        raise LineageError(f"{record} is not a fiqa JSON record: {err}") from None
    return dict(inputs) if isinstance(inputs, Mapping) else None


def check_inputs(
    record: Path, inputs: Mapping[str, Path], fix: str, hashes: Mapping[str, str] | None = None
) -> None:
    """Check that the output described by ``record`` was made from the files ``inputs``.

    Args:
        record: The output's JSON record (``labels.json``, ``lineage.json``).
        inputs: The files it must have been made from, by the names the record uses.
        fix: What to run when they differ (the message's last sentence).
        hashes: Hashes of ``inputs`` the caller already has (``input_hashes``), not recomputed.

    Raises:
        LineageError: A recorded hash differs from its file's, naming the record, the file and
            ``fix``. A record without lineage is warned about and accepted; no record (hand-made
            inputs) is accepted.
    """
    recorded = recorded_inputs(record)
    if recorded is None and record.is_file():
        log.warning("%s records no inputs (an older fiqa or a hand-made output): not checked "
                    "against %s", record, ", ".join(map(str, inputs.values())))  # fmt: skip
    if recorded is None:
        return
    for name, path in inputs.items():
        if name not in recorded:
            continue
        actual = (hashes or {}).get(name) or sha256_now(path)
        if recorded[name] != actual:
            raise LineageError(
                f"{record} was made from a {path.name} with sha256 {recorded[name][:12]}, but "
                f"{path} has sha256 {actual[:12]}: the two belong to different runs. {fix}"
            )


def check_lineage(
    prepared: Path, labels: Path | None = None, models: Iterable[Path] = ()
) -> dict[str, str]:
    """Check that the labels directory ``labels`` was made from the prepared directory
    ``prepared``, and each model directory of ``models`` from both (from the prepared set
    alone when ``labels`` is None: a model evaluated on its own training set's faces). Each
    input file is hashed once.

    Returns:
        The hashes of the manifest (and of the labels table), by name.

    Raises:
        LineageError: Naming the record, the file that does not belong to it and what to run.
    """
    inputs = {"manifest": Path(prepared) / MANIFEST}
    if labels is not None:
        inputs["labels"] = Path(labels) / LABELS
    hashes = input_hashes(inputs)
    if labels is not None:
        check_inputs(Path(labels) / LABELS_PROVENANCE, {"manifest": inputs["manifest"]},
                     fix="Run `fiqa label` on this prepared set (or `dvc repro`).",
                     hashes=hashes)  # fmt: skip
    for model in models:
        check_inputs(Path(model) / LINEAGE, inputs, hashes=hashes,
                     fix="Run `fiqa train` on these inputs (or `dvc repro`).")  # fmt: skip
    return hashes
