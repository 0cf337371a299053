"""Embedding extraction (fiqa.extract): Lightning predict loop, cache, resume, DDP merge."""

from __future__ import annotations

import logging
from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from fiqa.data.face_store import PreparedFaces
from fiqa.data.preparation import write_prepared
from fiqa.extract import FaceSource, Request, batch_generator, extract
from fiqa.fr import FRModel, FRModelInfo, load_fr_model
from fiqa.label.faceqan import FaceQanProduct, FaceQanSettings, faceqan_batch
from fiqa.label.huo import LowLevelFeatures
from fiqa.label.magface import EmbeddingNorm
from fiqa.label.serfiq import SerFiqProduct, SerFiqSettings

BATCH = 8
N_FACES = 37  # 5 batches, the last one partial
SERFIQ = SerFiqProduct(SerFiqSettings(passes=6, dropout=0.5, calibrate=False), seed=3)
REQUEST = Request((EmbeddingNorm(), LowLevelFeatures(), SERFIQ))
FACEQAN = FaceQanSettings(eps=0.001, iterations=2, copies=3, power=5.0, batch_size=4)


@pytest.fixture(scope="module")
def sface() -> FRModel:
    return load_fr_model("sface")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> PreparedFaces:
    rng = np.random.default_rng(0)
    faces = np.stack(
        [
            cv2.GaussianBlur(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8), (0, 0), 2.0)
            for _ in range(N_FACES)
        ]
    )
    root = tmp_path_factory.mktemp("extract")
    return write_prepared(root / "prepared", faces, [f"id{i % 4}" for i in range(N_FACES)])


@pytest.fixture(scope="module")
def reference(sface: FRModel, prepared: PreparedFaces, tmp_path_factory) -> dict:
    """One clean single-process run: what every other way of running must reproduce."""
    root = tmp_path_factory.mktemp("cache-ref")
    source = FaceSource.from_prepared(prepared)
    return extract(sface, source, REQUEST, cache_root=root, batch_size=BATCH)


def test_products_match_the_model(sface: FRModel, prepared: PreparedFaces, reference) -> None:
    faces = prepared.faces()
    np.testing.assert_allclose(
        (reference["embedding"] * sface.embed(faces)).sum(axis=1), 1.0, atol=1e-3
    )  # float16 storage
    raw = sface.head(sface.features(faces))
    np.testing.assert_allclose(reference["norm"], raw.norm(dim=1).numpy(), rtol=1e-5)
    np.testing.assert_allclose(
        reference["low_level"], sface.low_level(faces).numpy(), rtol=2e-3, atol=2e-3
    )
    assert reference["low_level"].shape == (N_FACES, 128 * 16)
    assert reference["serfiq"].shape == (N_FACES,)
    assert ((reference["serfiq"] > 0) & (reference["serfiq"] <= 1)).all()


def test_cache_hit_reads_no_faces(sface: FRModel, prepared: PreparedFaces, tmp_path) -> None:
    source = FaceSource.from_prepared(prepared)
    first = extract(sface, source, Request(), cache_root=tmp_path, batch_size=BATCH)

    def unreadable(rows: np.ndarray) -> np.ndarray:
        raise AssertionError("a cache hit must not read faces")

    again = extract(
        sface, replace(source, faces=unreadable), Request(), cache_root=tmp_path, batch_size=BATCH
    )
    np.testing.assert_array_equal(first["embedding"], again["embedding"])
    (entry,) = tmp_path.iterdir()
    assert sorted(p.name for p in entry.iterdir()) == ["embedding.npy", "key.json"]
    # another fingerprint (the faces changed) is another entry
    extract(sface, replace(source, fingerprint="other"), cache_root=tmp_path, batch_size=BATCH)
    assert len(list(tmp_path.iterdir())) == 2


def test_killed_run_resumes_from_its_parts(
    sface: FRModel, prepared: PreparedFaces, reference, tmp_path
) -> None:
    source = FaceSource.from_prepared(prepared)
    calls: list[int] = []

    def dies_at_batch_3(rows: np.ndarray) -> np.ndarray:
        calls.append(int(rows[0]) // BATCH)
        if len(calls) == 4:
            raise RuntimeError("node lost")
        return prepared.faces(rows)

    with pytest.raises(RuntimeError, match="node lost"):
        extract(sface, replace(source, faces=dies_at_batch_3), REQUEST, cache_root=tmp_path,
                batch_size=BATCH, part_rows=BATCH)  # fmt: skip
    (entry,) = tmp_path.iterdir()
    assert len(list(next(entry.glob("parts-*")).glob("*.npz"))) == 3
    calls.clear()

    def counted(rows: np.ndarray) -> np.ndarray:
        calls.append(int(rows[0]) // BATCH)
        return prepared.faces(rows)

    out = extract(sface, replace(source, faces=counted), REQUEST, cache_root=tmp_path,
                  batch_size=BATCH, part_rows=BATCH)  # fmt: skip
    assert calls == [3, 4]  # only the batches the killed run had not written
    assert not list(entry.glob("parts-*"))  # merged and cleaned up
    for key, values in reference.items():
        np.testing.assert_array_equal(out[key], values, err_msg=key)  # SER-FIQ included


@pytest.mark.slow
def test_two_process_ddp_gives_the_single_process_result(
    sface: FRModel, prepared: PreparedFaces, reference, tmp_path
) -> None:
    """Two CPU ranks (gloo) each write the batches they own; the merge equals one process.

    Same rows, same SER-FIQ masks (seeded per batch); only float rounding differs, because
    Lightning gives each rank half the CPU threads and the convolutions sum in another order.
    """
    source = FaceSource.from_prepared(prepared)
    trainer = {"accelerator": "cpu", "devices": 2, "strategy": "ddp_spawn"}
    out = extract(sface, source, REQUEST, cache_root=tmp_path, batch_size=BATCH, trainer=trainer)
    (entry,) = tmp_path.iterdir()
    assert not list(entry.glob("parts-*"))
    for key, values in reference.items():
        np.testing.assert_allclose(out[key], values, rtol=1e-3, atol=2e-4, err_msg=key)
    # a rank-order or batch-to-row mix-up would move whole rows: far above rounding
    assert np.abs(reference["serfiq"] - np.roll(reference["serfiq"], BATCH)).max() > 1e-3


def test_faces_are_rewarped_to_the_model_template(
    sface: FRModel, prepared: PreparedFaces, tmp_path
) -> None:
    """Faces prepared on faceqnet_224 reach SFace on arcface_112 (its template)."""
    from fiqa.core.align import retarget_faces

    faces = prepared.faces()
    wide = retarget_faces(faces, "arcface_112", "faceqnet_224")
    source = FaceSource("wide", len(wide), "faceqnet_224", "wide-v1", wide.__getitem__)
    out = extract(sface, source, cache_root=tmp_path, batch_size=BATCH)
    expected = sface.embed(retarget_faces(wide, "faceqnet_224", "arcface_112"))
    np.testing.assert_allclose((out["embedding"] * expected).sum(axis=1), 1.0, atol=1e-3)


def test_faceqan_product_is_cached_and_seeded(
    sface: FRModel, prepared: PreparedFaces, tmp_path
) -> None:
    """FaceQAN runs inside the predict loop (gradients on although Lightning predicts), is
    reproducible from its seed, cached, and a new seed is a new product of the same entry."""
    request = Request((FaceQanProduct(FACEQAN, seed=5),))
    source = FaceSource.from_prepared(prepared)
    small = replace(source, n=10, fingerprint="first-10")
    out = extract(sface, small, request, cache_root=tmp_path, batch_size=BATCH)
    assert out["faceqan"].shape == (10,) and ((out["faceqan"] >= 0) & (out["faceqan"] <= 1)).all()
    x = sface.preprocess(prepared.faces(np.arange(BATCH)))
    direct = faceqan_batch(sface.net, x, FACEQAN, batch_generator(5, 1, 0, x.device))
    np.testing.assert_allclose(out["faceqan"][:BATCH], direct.numpy(), rtol=1e-5)
    assert all(p.requires_grad for p in sface.net.parameters())  # restored after the attack
    again = extract(sface, replace(small, faces=None), request, cache_root=tmp_path,
                    batch_size=BATCH)  # fmt: skip
    np.testing.assert_array_equal(out["faceqan"], again["faceqan"])
    reseeded = Request((FaceQanProduct(FACEQAN, seed=6),))
    other = extract(sface, small, reseeded, cache_root=tmp_path, batch_size=BATCH)
    assert not np.array_equal(out["faceqan"], other["faceqan"])
    (entry,) = tmp_path.iterdir()
    assert len(list(entry.glob("faceqan-*.npy"))) == 2


class _NaNNet(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x.mean(dim=(2, 3))
        out[1] = float("nan")
        return out


def test_black_box_limits_and_non_finite_rows(prepared: PreparedFaces, tmp_path) -> None:
    model = FRModel(_NaNNet(), FRModelInfo(name="nan", embedding_size=3, white_box=False))
    source = FaceSource.from_prepared(prepared)
    with pytest.raises(ValueError, match="SER-FIQ needs a PyTorch FR model"):
        extract(model, source, Request((SERFIQ,)), cache_root=tmp_path)
    with pytest.raises(FloatingPointError, match=r"non-finite embedding for rows \[1, 9"):
        extract(model, source, cache_root=tmp_path, batch_size=BATCH)


def test_progress_is_logged_with_counts(
    sface: FRModel, prepared: PreparedFaces, tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    source = FaceSource.from_prepared(prepared)
    with caplog.at_level(logging.INFO, logger="fiqa.extract.predict"):
        extract(sface, source, cache_root=tmp_path, batch_size=BATCH, trainer={"progress": True})
    batches = -(-N_FACES // BATCH)
    lines = [r.getMessage() for r in caplog.records if "faces/s" in r.getMessage()]
    assert lines and lines[-1].startswith(
        f"extract sface: {batches}/{batches} batches, {N_FACES} faces"
    )
