"""The extraction cache and requests (fiqa.extract.cache, fiqa.extract.products), file level."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch

from fiqa.extract import Batch, BatchProduct, Request, batch_generator, unit_rows
from fiqa.extract.cache import CacheEntry, write_part

KEY = {"fr_model": "m", "n": 6, "faces": "f1"}
LAYOUTS = {"embedding": (np.float16, 2), "score": (np.float32, 1)}


@dataclass(frozen=True)
class Score(BatchProduct):
    """A seeded product with one setting."""

    scale: float
    name: ClassVar[str] = "score"
    seeded: ClassVar[bool] = True

    def compute(self, batch: Batch) -> torch.Tensor:
        return batch.raw.sum(dim=1) * self.scale


@dataclass(frozen=True)
class Norm(BatchProduct):
    name: ClassVar[str] = "norm"

    def compute(self, batch: Batch) -> torch.Tensor:
        return batch.raw.norm(dim=1)


def part(rows: list[int], score: list[float]) -> dict[str, np.ndarray]:
    emb = np.tile(np.asarray(rows, np.float16)[:, None], (1, 2))
    return {"rows": np.asarray(rows), "embedding": emb, "score": np.asarray(score, np.float32)}


def test_entry_records_its_key_and_refuses_another(tmp_path: Path):
    entry = CacheEntry(tmp_path, KEY)
    entry.open()
    assert entry.directory.name.startswith("m-")
    entry.open()  # same key: fine
    other = CacheEntry(tmp_path, KEY)
    other.key = {**KEY, "faces": "f2"}  # a directory that belongs to other faces
    with pytest.raises(ValueError, match=r"key\.json holds another key"):
        other.open()


def test_merge_assembles_rows_from_parts_in_any_order(tmp_path: Path):
    entry = CacheEntry(tmp_path, KEY)
    entry.open()
    parts = entry.parts_dir(list(LAYOUTS))
    write_part(parts, 1, 0, part([4, 5], [4.0, 5.0]))  # batch 2 of 2 rows, rank 1
    write_part(parts, 0, 0, part([0, 1, 2, 3], [0.0, 1.0, 2.0, 3.0]))  # batches 0 and 1
    assert entry.done_batches(list(LAYOUTS), batch_size=2) == {0, 1, 2}
    entry.merge(LAYOUTS)
    assert not parts.exists()  # merged part files are removed
    assert entry.load("score").tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert entry.load("embedding").dtype == np.float16
    assert entry.missing(["embedding", "score", "other"]) == ["other"]


def test_merge_names_missing_and_non_finite_rows(tmp_path: Path):
    entry = CacheEntry(tmp_path, KEY)
    entry.open()
    parts = entry.parts_dir(list(LAYOUTS))
    write_part(parts, 0, 0, part([0, 1, 2, 3], [0.0, np.nan, 2.0, np.inf]))
    with pytest.raises(FloatingPointError, match=r"non-finite score for rows \[1, 3\]"):
        entry.merge(LAYOUTS)
    assert len(list(parts.glob("*.npz"))) == 1  # kept for inspection
    (next(parts.glob("*.npz"))).unlink()
    write_part(parts, 0, 1, part([0, 1, 2, 3], [0.0, 1.0, 2.0, 3.0]))
    with pytest.raises(
        RuntimeError,
        match=r"2 rows missing from the part files after extraction \(first \[4, 5\]\)",
    ):
        entry.merge(LAYOUTS)


def test_unit_rows_renormalise_float16_rows():
    emb = np.array([[3.0, 4.0], [0.0, 2.0], [1.0, 0.0]], np.float16)
    np.testing.assert_allclose(unit_rows(emb, np.array([0, 1])), [[0.6, 0.8], [0.0, 1.0]])


def test_request_stems_layouts_and_merging():
    score = Score(2.0)
    request = Request((score, Norm()))
    assert request.stems(8)["embedding"] == "embedding" and request.stems(8)["norm"] == "norm"
    assert request.stems(8)["score"].startswith("score-")
    assert request.stems(8)["score"] != request.stems(16)["score"]  # seeded: per batch size
    assert request.stems(8)["score"] != Request((Score(3.0),)).stems(8)["score"]  # per setting
    assert request.layouts(8)["embedding"] == (np.float16, 2)
    assert request.layouts(8)[request.stems(8)["score"]] == (np.float32, 1)
    assert Request((score,)).merged(Request((Score(5.0), Norm()))).products == (score, Norm())
    with pytest.raises(ValueError, match="names a product twice"):
        Request((score, Score(1.0)))
    assert request.white_box is None and not request.gradients


def test_batch_generator_draws_depend_on_seed_stream_and_batch_only():
    draw = lambda *key: torch.rand(3, generator=batch_generator(*key, torch.device("cpu")))  # noqa: E731
    assert torch.equal(draw(1, 0, 5), draw(1, 0, 5))
    assert not torch.equal(draw(1, 0, 5), draw(1, 1, 5))  # another product stream
    assert not torch.equal(draw(1, 0, 5), draw(1, 0, 6))  # another row batch
    assert not torch.equal(draw(1, 0, 5), draw(2, 0, 5))  # another seed
