"""SDD-FIQA (Ou et al., CVPR 2021): quality = distance between intra- and inter-class similarities.

For sample i with L2-normalised embedding e_i, one repeat draws m same-identity partners P and m
other-identity partners Q and compares the two empirical similarity distributions
a = {cos(e_i, e_j)}_{j in P} and b = {cos(e_i, e_j)}_{j in Q} with the Wasserstein-1 distance,
which for equal sizes is

    W1(a, b) = (1/m) sum_t |a_(t) - b_(t)|        (a_(t), b_(t): the sorted values)

    raw_i = (1/R) sum_{r=1..R} W1(a_r, b_r),     m = 24, R = 12
    q_i   = 100 * (raw_i - min_j raw_j) / (max_j raw_j - min_j raw_j)

Rules (the public SDD-FIQA code is the reference; differences are noted):

- Intra partners: m distinct other images of the identity (Floyd's sampling); an identity with
  fewer than m other images is sampled with replacement, so both sets keep size m (the public
  code then uses fewer intra values).
- Inter partners: the R * m partners of a sample are distinct and uniform over the images of
  other identities. They are taken from a uniform random pool of ``pool_size`` images per block
  of samples, so each block costs two GEMMs instead of R * m gathers per sample; conditioned on
  the pool, its other-identity part is a uniform subset, so each sample's draw stays uniform.
  Fewer than R * m other-identity images in the pool: drawn with replacement from them.
- One-image identities have no intra set: their raw value is the minimum raw value over the
  dataset (so q = 0), and their count is logged.
- Scaling: raw values are averaged over the repeats, then min-max scaled to [0, 100] once over
  the dataset (the public code scales each repeat, then averages). ``scale=False`` returns raw.
- W1 is unsigned, as scipy's ``wasserstein_distance`` used by the public code.

Randomness is drawn per block of ``SAMPLE_BLOCK`` samples (in identity-sorted order) from
``SeedSequence(seed, spawn_key=(block,))``: same seed -> same labels, independent of
``chunk_rows`` (which only bounds memory) and of how blocks would be split over workers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm import tqdm

from fiqa.label.context import LabelContext
from fiqa.label.grouping import identity_codes, l2_normalise, work_dtype

log = logging.getLogger(__name__)

SAMPLE_BLOCK = 1024
POOL_MIN = 1024


@dataclass
class SddFiqaSettings:
    """SDD-FIQA settings (``label.methods.sddfiqa``).

    Attributes:
        samples: m intra and m inter similarities per repeat (24 in the paper).
        repeats: Repeats averaged (12 in the paper).
    """

    samples: int
    repeats: int


def wasserstein1_equal(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """W1 between equal-size 1-D empirical distributions along the last axis: mean|sort a - sort b|."""
    return np.abs(np.sort(a, axis=-1) - np.sort(b, axis=-1)).mean(axis=-1)


def sample_distinct(u: np.ndarray, n_avail: np.ndarray) -> np.ndarray:
    """Integers in [0, n_avail) from uniforms ``u`` (..., m): distinct along the last axis.

    Floyd's algorithm, vectorised: step t draws from [0, n - m + t] and takes n - m + t instead
    when the draw is taken, which yields a uniform m-subset. Where ``n_avail < m`` the m values
    are drawn with replacement (floor(u * n_avail)).

    Args:
        u: uniforms in [0, 1), shape (..., m).
        n_avail: population sizes >= 1, broadcastable to ``u.shape[:-1]``.
    """
    m = u.shape[-1]
    n_avail = np.broadcast_to(np.asarray(n_avail, np.int64), u.shape[:-1])
    with_replacement = np.floor(u * n_avail[..., None]).astype(np.int64)
    out = np.empty(u.shape, np.int64)
    for t in range(m):
        top = n_avail - m + t
        draw = np.floor(u[..., t] * (top + 1)).astype(np.int64)
        taken = (out[..., :t] == draw[..., None]).any(axis=-1)
        out[..., t] = np.where(taken, top, draw)
    return np.where((n_avail < m)[..., None], with_replacement, out)


def scale_to_100(raw: np.ndarray) -> np.ndarray:
    """Min-max scaling to [0, 100] over the dataset; a constant input maps to 0."""
    raw = np.asarray(raw, np.float64)
    span = raw.max() - raw.min()
    if span <= 0:
        log.warning("sddfiqa: all %d raw values are equal; scaled labels are all 0", len(raw))
        return np.zeros_like(raw)
    return 100.0 * (raw - raw.min()) / span


def sddfiqa_scores(
    embeddings: np.ndarray,
    identities: np.ndarray | pd.Series,
    *,
    samples: int,
    repeats: int,
    seed: int,
    scale: bool = True,
    chunk_rows: int = SAMPLE_BLOCK,
    pool_size: int | None = None,
) -> np.ndarray:
    """SDD-FIQA labels (higher = better): mean W1 between m intra and m inter similarities.

    Args:
        embeddings: (n, d) L2-normalised embeddings (float16/float32; a ``np.memmap`` is read by
            rows, never copied whole); normalised again per chunk.
        identities: (n,) identity labels, any hashable.
        samples: m, the similarities per set and repeat (24 in the paper).
        repeats: repeats with fresh samples, averaged (12 in the paper).
        seed: seed of the per-block random streams.
        scale: min-max scale to [0, 100] (``scale_to_100``); False returns the raw mean W1.
        chunk_rows: samples per GEMM chunk (<= ``SAMPLE_BLOCK``); bounds memory only.
        pool_size: inter-class candidate pool per block; default max(1024, 4 * repeats * m).

    Returns:
        (n,) float64 labels in input order.

    Raises:
        ValueError: bad parameters, a single identity (no inter set), or no identity with two
            images (no intra set anywhere).
    """
    m = samples
    if m < 1 or repeats < 1 or chunk_rows < 1:
        raise ValueError(
            f"sddfiqa needs m, repeats, chunk_rows >= 1, got {m}, {repeats}, {chunk_rows}"
        )
    n = len(embeddings)
    codes, k = identity_codes(identities, n)
    if k < 2:
        raise ValueError("SDD-FIQA needs at least two identities: the inter-class set is empty")
    sizes = np.bincount(codes, minlength=k)
    if sizes.max() < 2:
        raise ValueError("SDD-FIQA needs an identity with >= 2 images: every intra set is empty")
    order = np.argsort(codes, kind="stable")
    groups = _Groups(codes[order], sizes, order)
    pool = min(n, pool_size or max(POOL_MIN, 4 * repeats * m))
    raw_sorted = np.empty(n)
    blocks = range(0, n, SAMPLE_BLOCK)
    for b, start in enumerate(
        tqdm(blocks, desc="sddfiqa", unit="block", mininterval=2, disable=n < 100_000)
    ):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(b,)))
        rows = np.arange(start, min(start + SAMPLE_BLOCK, n))
        raw_sorted[rows] = _block_raw(embeddings, groups, rows, rng, m, repeats, pool, chunk_rows)
    raw = np.empty(n)
    raw[order] = raw_sorted
    single = np.isnan(raw)
    if single.any():
        log.info(
            "sddfiqa: %d samples of one-image identities have no intra set; "
            "they get the dataset minimum",
            int(single.sum()),
        )
        raw[single] = np.nanmin(raw)
    return scale_to_100(raw) if scale else raw


class _Groups:
    """Identity layout in sorted order: codes, group start and size, rank inside the group."""

    def __init__(self, sorted_codes: np.ndarray, sizes: np.ndarray, order: np.ndarray) -> None:
        self.codes = sorted_codes
        self.order = order
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.start = starts[sorted_codes]
        self.size = sizes[sorted_codes]
        self.rank = np.arange(len(sorted_codes)) - self.start


def _block_raw(
    embeddings: np.ndarray,
    groups: _Groups,
    rows: np.ndarray,
    rng: np.random.Generator,
    m: int,
    repeats: int,
    pool: int,
    chunk_rows: int,
) -> np.ndarray:
    """Raw mean W1 of the samples at sorted positions ``rows`` (NaN for one-image identities)."""
    n, dtype = len(groups.codes), work_dtype(embeddings)
    # Every random draw happens here, per block, so chunk_rows cannot change them.
    others = groups.size[rows] - 1
    t = sample_distinct(rng.random((len(rows), repeats, m)), np.maximum(others, 1)[:, None])
    skip_self = t >= groups.rank[rows][:, None, None]
    intra = np.where(
        others[:, None, None] > 0, groups.start[rows][:, None, None] + t + skip_self, 0
    )
    pool_pos = np.arange(n) if pool == n else rng.choice(n, pool, replace=False)
    inter = _pick_inter(rng, groups.codes[rows], groups.codes[pool_pos], repeats * m)
    pool_x = _rows(embeddings, groups.order[pool_pos], dtype)
    out = np.empty(len(rows))
    for lo in range(0, len(rows), chunk_rows):
        sl = slice(lo, lo + chunk_rows)
        x = _rows(embeddings, groups.order[rows[sl]], dtype)
        cols, inv = np.unique(intra[sl], return_inverse=True)
        gram = x @ _rows(embeddings, groups.order[cols], dtype).T
        s_intra = np.take_along_axis(gram, inv.reshape(len(x), -1), axis=1)
        s_inter = np.take_along_axis(x @ pool_x.T, inter[sl], axis=1)
        shape = (len(x), repeats, m)
        w1 = wasserstein1_equal(s_intra.reshape(shape), s_inter.reshape(shape))
        out[sl] = np.where(others[sl] > 0, w1.mean(axis=1), np.nan)
    return out


def _pick_inter(
    rng: np.random.Generator, own: np.ndarray, pool_codes: np.ndarray, need: int
) -> np.ndarray:
    """Per row, ``need`` pool columns of other identities: distinct by random keys (smallest
    ``need`` keys, own identity keyed +inf), with replacement where too few are available."""
    keys = rng.random((len(own), len(pool_codes)))
    fallback_u = rng.random((len(own), need))
    same = own[:, None] == pool_codes[None, :]
    keys[same] = np.inf
    valid = len(pool_codes) - same.sum(axis=1)
    if (valid == 0).any():
        raise ValueError(
            "sddfiqa: an inter-class pool holds only one identity; pass a larger pool_size "
            "(one identity owns almost all samples)"
        )
    picks = np.empty((len(own), need), np.int64)
    enough = valid >= need
    if enough.any():
        k = keys[enough]
        top = np.argpartition(k, need - 1, axis=1)[:, :need]  # need <= valid <= pool size
        # Order by key (random, unlike column order) so each repeat's m picks are uniform too.
        picks[enough] = np.take_along_axis(
            top, np.argsort(np.take_along_axis(k, top, axis=1), axis=1), axis=1
        )
    few = np.flatnonzero(~enough)
    if len(few):
        ranked = np.argsort(keys[few], axis=1)  # valid columns first
        slot = np.floor(fallback_u[few] * valid[few, None]).astype(np.int64)
        picks[few] = np.take_along_axis(ranked, slot, axis=1)
    return picks


def _rows(embeddings: np.ndarray, index: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Normalised rows ``index`` of ``embeddings`` in ``dtype`` (sorted reads for memmaps)."""
    uniq, inv = np.unique(index, return_inverse=True)
    return l2_normalise(np.asarray(embeddings[uniq], dtype=dtype))[inv.reshape(-1)]


def sddfiqa_label(
    ctx: LabelContext, params: SddFiqaSettings, outputs: Mapping[str, np.ndarray]
) -> np.ndarray:
    """SDD-FIQA labels of one FR model's embeddings (seeded by ``label.seed``)."""
    identities = ctx.require_identities("sddfiqa")
    return sddfiqa_scores(outputs["embedding"], identities, samples=params.samples,
                          repeats=params.repeats, seed=ctx.seed)  # fmt: skip
