"""Per-face FR outputs as a Lightning predict loop: batched, DDP-ready, cached, resumable.

``extract(model, source, request, ...)`` returns the L2-normalised embeddings (and the
requested batch products, ``fiqa.extract.products``) of every face of ``source``. Results come
from the cache entry of (faces, model, preprocessing) when it has them; otherwise the missing
row batches run through ``Trainer.predict`` on any accelerator / device count / strategy, each
rank writing the batches it owns to its own part files, and rank 0 merges them (see
``fiqa.extract.cache``). The backbone runs once per face for all products.
"""

from __future__ import annotations

import logging
import math
import sys
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader, Dataset

from fiqa.core.align import retarget_faces
from fiqa.core.lock import output_lock
from fiqa.extract.cache import CacheEntry, entry_key, write_part
from fiqa.extract.faces import FaceSource
from fiqa.extract.products import Batch, Request
from fiqa.fr.model import FRModel

log = logging.getLogger(__name__)

DEFAULT_PART_ROWS = 8192  # rows buffered per rank before a part file is written
# _PartWriter reads the rows from the batch itself, not from the sampler's indices.
warnings.filterwarnings("ignore", message=".*Couldn't infer the batch indices.*")


class _Batches(Dataset):
    """Item i = fixed row batch ``batches[i]``: (rows, uint8 faces in the model's template)."""

    def __init__(self, source: FaceSource, batches: list[int], batch_size: int, template: str):
        self.source, self.batches, self.batch_size, self.template = (
            source,
            batches,
            batch_size,
            template,
        )

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = self.batches[index] * self.batch_size
        rows = np.arange(start, min(start + self.batch_size, self.source.n), dtype=np.int64)
        faces = retarget_faces(self.source.faces(rows), self.source.template, self.template)
        return torch.from_numpy(rows), torch.from_numpy(np.ascontiguousarray(faces))


class _Data(pl.LightningDataModule):
    """Hands each rank the batches ``b`` with ``b % world_size == rank``."""

    def __init__(self, source: FaceSource, todo: list[int], batch_size: int, template: str,
                 num_workers: int) -> None:  # fmt: skip
        super().__init__()
        self.source, self.todo, self.batch_size = source, todo, batch_size
        self.template, self.num_workers = template, num_workers

    def predict_dataloader(self) -> DataLoader:
        rank, world = self.trainer.global_rank, self.trainer.world_size
        mine = [b for b in self.todo if b % world == rank]
        workers = self.num_workers if self.source.picklable else 0
        return DataLoader(
            _Batches(self.source, mine, self.batch_size, self.template),
            batch_size=None,  # items are whole batches
            num_workers=workers,
            # spawn: forked workers inherit OpenCV's thread-pool locks and can deadlock
            multiprocessing_context="spawn" if workers > 0 else None,
            pin_memory=torch.cuda.is_available(),
        )


class ExtractionModule(pl.LightningModule):
    """Wraps an FR network; ``predict_step`` returns every requested product of a batch."""

    def __init__(self, model: FRModel, request: Request, flip: bool, batch_size: int) -> None:
        super().__init__()
        self.net = model.net
        self.white_box = model.info.white_box
        self.request, self.flip = request, flip
        self.stems = request.stems(batch_size)
        self.batch_size = batch_size

    def predict_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> dict:
        rows, faces = batch
        x = faces.permute(0, 3, 1, 2).float()  # keeps NHWC strides: faster CPU convolutions
        features = self.net.forward_features(x) if self.white_box else None
        raw = (self.net.forward_head(features) if self.white_box else self.net(x)).float()
        context = Batch(self.net, x, raw, features, int(rows[0]) // self.batch_size)
        out: dict[str, torch.Tensor] = {"rows": rows}
        for product in self.request.products:
            out[self.stems[product.name]] = product.compute(context)
        if self.flip:
            raw = raw + self.net(x.flip(3)).float()
        out["embedding"] = F.normalize(raw, dim=1).half()
        return {k: v.detach().cpu().numpy() for k, v in out.items()}


class _PartWriter(BasePredictionWriter):
    """Buffers a rank's predictions and writes them as part files of ~``part_rows`` rows."""

    def __init__(self, directory: Path, part_rows: int) -> None:
        super().__init__(write_interval="batch")
        self.directory, self.part_rows = directory, part_rows
        self.buffer: list[dict[str, np.ndarray]] = []
        self.count = 0

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch,
                           batch_idx, dataloader_idx=0) -> None:  # fmt: skip
        self.buffer.append(prediction)
        if sum(len(p["rows"]) for p in self.buffer) >= self.part_rows:
            self._flush(trainer.global_rank)

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._flush(trainer.global_rank)

    def _flush(self, rank: int) -> None:
        if not self.buffer:
            return
        arrays = {k: np.concatenate([p[k] for p in self.buffer]) for k in self.buffer[0]}
        write_part(self.directory, rank, self.count, arrays)
        self.buffer, self.count = [], self.count + 1


class _LogProgress(pl.Callback):
    """Log lines with counts and speed every tenth of the batches (or 60 s): progress that
    stays readable in log files and SLURM outputs, where a progress bar does not."""

    def __init__(self, name: str, seconds: float = 60.0) -> None:
        self.name, self.seconds = name, seconds

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = self.last = time.perf_counter()
        self.faces = 0

    def on_predict_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             outputs: Any, batch: Any, batch_idx: int,
                             dataloader_idx: int = 0) -> None:  # fmt: skip
        self.faces += len(batch[0])  # (rows, faces)
        total = int(sum(trainer.num_predict_batches))
        now, done = time.perf_counter(), batch_idx + 1
        if done == total or done % max(1, total // 10) == 0 or now - self.last >= self.seconds:
            self.last = now
            rate = self.faces / max(now - self.start, 1e-9)
            log.info("extract %s: %d/%d batches, %d faces, %.1f faces/s (rank %d)", self.name,
                     done, total, self.faces, rate, trainer.global_rank)  # fmt: skip


def _trainer(
    options: Mapping[str, Any], writer: _PartWriter, gradients: bool, name: str
) -> pl.Trainer:
    progress = bool(options.get("progress", False))
    return pl.Trainer(
        inference_mode=not gradients,  # FaceQAN back-propagates to the input
        accelerator=options.get("accelerator", "cpu"),
        devices=options.get("devices", 1),
        num_nodes=options.get("num_nodes", 1),
        strategy=options.get("strategy", "auto"),
        precision=options.get("precision", "32-true"),
        logger=False,
        callbacks=[writer, *([_LogProgress(name)] if progress else [])],
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress and sys.stderr.isatty(),
        use_distributed_sampler=False,  # _Data shards by rank itself, without padding
    )


def _one_process(options: Mapping[str, Any]) -> bool:
    """Whether the extraction runs in this process alone (no DDP ranks to wait for)."""
    devices = options.get("devices", 1)
    single = (len(devices) == 1) if isinstance(devices, list | tuple) else str(devices) == "1"
    return single and int(options.get("num_nodes", 1)) == 1


def _fill(entry: CacheEntry, model: FRModel, source: FaceSource, request: Request,
          stems: Mapping[str, str], layouts: Mapping[str, tuple[Any, int]], batch_size: int,
          flip: bool, num_workers: int, part_rows: int,
          options: Mapping[str, Any]) -> None:  # fmt: skip
    """Compute the products ``entry`` lacks for the batches not yet in its part files, then
    merge them (rank 0)."""
    todo = entry.missing(list(stems.values()))
    entry.open()
    done = entry.done_batches(todo, batch_size)
    batches = [b for b in range(math.ceil(source.n / batch_size)) if b not in done]
    log.info(
        "extract %s on %s: %s for %d of %d batches (cache %s)",
        model.info.name, source.name, todo, len(batches),
        math.ceil(source.n / batch_size), entry.directory,
    )  # fmt: skip
    rank = 0
    if batches:
        writer = _PartWriter(entry.parts_dir(todo), part_rows)
        missing = Request(tuple(p for p in request.products if stems[p.name] in todo))
        module = ExtractionModule(model, missing, flip, batch_size)
        data = _Data(source, batches, batch_size, model.info.template, num_workers)
        runner = _trainer(options, writer, missing.gradients, model.info.name)
        try:
            runner.predict(module, datamodule=data, return_predictions=False)
        finally:
            model.net.to(model.device).eval()  # Lightning may have moved it
        rank = runner.global_rank
        if rank == 0:
            entry.merge({stem: layouts[stem] for stem in todo})
        runner.strategy.barrier()
    else:
        entry.merge({stem: layouts[stem] for stem in todo})
    if rank != 0:
        log.debug("rank %d: extraction done", rank)


def cache_entry(
    model: FRModel, source: FaceSource, *, cache_root: str | Path, flip: bool, precision: str
) -> CacheEntry:
    """The cache entry ``extract`` reads and fills for these arguments."""
    return CacheEntry(cache_root, entry_key(source, model, flip, precision))


def extract(
    model: FRModel,
    source: FaceSource,
    request: Request | None = None,
    *,
    cache_root: str | Path,
    flip: bool = False,
    batch_size: int = 64,
    num_workers: int = 0,
    part_rows: int = DEFAULT_PART_ROWS,
    trainer: Mapping[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """FR outputs of every face of ``source``, computed once and cached.

    Args:
        model: FR model (its ``info`` names the cache entry; its template is the target of
            the re-warp from ``source.template``).
        source: The faces.
        request: Batch products besides the embedding (default: embedding only).
        cache_root: Directory holding cache entries (``paths.cache``).
        flip: Embed as the mean of face and mirror (the other products ignore the mirror).
        batch_size: Faces per forward pass; fixed batches are the unit of resumption.
        num_workers: DataLoader workers decoding faces (spawned; 0 = in the main process).
        part_rows: Rows a rank buffers before writing a part file.
        trainer: ``accelerator``, ``devices``, ``num_nodes``, ``strategy``, ``precision``,
            ``progress`` for the Lightning Trainer (default: one CPU process, float32).

    Returns:
        ``{"embedding": (n, D) float16 unit rows, <product name>: its values}``, rows in
        ``source`` order, memory-mapped read-only from the cache (``CacheEntry.load``).

    Raises:
        FloatingPointError: Naming the rows whose outputs are NaN or infinite (checked once,
            when the part files are merged).
    """
    request = request or Request()
    options = dict(trainer or {})
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if request.white_box is not None:
        model.require_white_box(request.white_box)
    entry = cache_entry(
        model,
        source,
        cache_root=cache_root,
        flip=flip,
        precision=str(options.get("precision", "32-true")),
    )
    stems = request.stems(batch_size)
    layouts = request.layouts(batch_size)
    if not entry.missing(list(stems.values())):
        log.info("extract %s on %s: cache hit %s", model.info.name, source.name, entry.directory)
    elif not _one_process(options):  # every rank takes part; rank 0 merges
        _fill(entry, model, source, request, stems, layouts, batch_size, flip, num_workers,
              part_rows, options)  # fmt: skip
    else:  # concurrent runs (a study's parallel trainings) wait for one to fill the entry
        with output_lock(entry.directory, wait=True):
            if entry.missing(list(stems.values())):
                _fill(entry, model, source, request, stems, layouts, batch_size, flip,
                      num_workers, part_rows, options)  # fmt: skip
    return {name: entry.load(stem) for name, stem in stems.items()}
