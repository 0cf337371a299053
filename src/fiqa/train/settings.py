"""``TrainSettings``: the ``train`` config group (data loading, seeds, checkpoints, export)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainSettings:
    """How a quality model is trained and exported (the ``train`` config group).

    Attributes:
        batch_size: Batch size of the train and validation loaders.
        num_workers: DataLoader workers.
        augment: Apply the geometry-neutral train augmentation.
        target_scaling: How labels become regression targets: ``rank``, ``minmax`` or ``none``
            (``fiqa.quality.targets``; fitted on the train split).
        cache_frozen: Train on cached outputs of the frozen part when it is exactly the
            pretrained FR model's (``fiqa.train.frozen``; flip augmentation only).
        seed: Seed of everything (shuffle, augmentation, initialisation).
        onnx_max_abs_diff: Export check: largest ONNX vs torch difference accepted.
        resume: Continue a killed run of the same config and inputs from its staged
            checkpoint (``fiqa.train.staging``); refused for another run's.
        checkpoint_every_n_steps: Also save the resumable state every that many optimiser
            steps (it is always saved at the end of each epoch); None = epochs only.
        early_stopping_patience: Validation epochs without a better ``val/spearman`` before
            stopping; None = off.
        val_edc: Log ``val/pauc@<limit>`` on the validation pairs (first ``label.fr_models``).
    """

    batch_size: int
    num_workers: int
    augment: bool
    target_scaling: str
    cache_frozen: bool
    seed: int
    onnx_max_abs_diff: float
    resume: bool
    checkpoint_every_n_steps: int | None
    early_stopping_patience: int | None
    val_edc: bool
