"""Templates: several images of one subject compared as one (the IJB-B/C 1:1 protocol).

A template is a set of media (a still photo, or the frames of one video); each image belongs to
one media of one template. The plain template feature follows insightface's IJB evaluation:
the mean of a media's unit image embeddings, summed over the template's media, L2-normalised;
two templates compare by the cosine of their features.

Quality enters in two places:

- **Template quality** (``template_quality``): one number per template from its images'
  qualities, ``min`` (as CR-FIQA's IJB-C evaluation), ``mean`` or ``max``; the EDC then
  discards template pairs by the pair rule over the two templates, as image pairs elsewhere.
- **Quality-aware features** (``template_features`` with ``weights``): each image's unit
  embedding is weighted by its quality's percentile over the benchmark (``percentile_weights``,
  in ``(0, 1]``: free of the method's scale) inside its media, and the weighted sum is divided
  by the media's image count. A media of poor frames thus counts less in its template, and
  within a media the better frames count more; with all weights 1 this is the plain feature.
  Insightface's IJB evaluation does the same with the detector score as the weight.

``tar_at_far``: the true-accept rate of genuine template pairs at the threshold where the
impostor pairs reach a false-accept rate (the EDC's ``fmr_threshold`` rule: match iff
``score >= t``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fiqa.core.edc import fmr_thresholds
from fiqa.core.pairs import Pairs

TEMPLATE_QUALITY = ("min", "mean", "max")
CHUNK = 65_536  # images summed at a time (bounds the float64 copy to CHUNK x d)
BLOCK = 1024  # templates per block of the similarity matrix (bounds it to BLOCK x n_templates)


@dataclass(frozen=True, eq=False)
class Templates:
    """Which template and media each image belongs to.

    Attributes:
        template: Template index per image in ``[0, n_templates)``, or -1 for an image left out
            (one that could not be read or aligned).
        media: Media group per image: equal values share a media; a media never spans two
            templates (the same video in two templates is two groups).
        n_templates: Number of templates.
    """

    template: NDArray[np.int64]
    media: NDArray[np.int64]
    n_templates: int

    def __post_init__(self) -> None:
        template = np.asarray(self.template, dtype=np.int64)
        media = np.asarray(self.media, dtype=np.int64)
        if template.ndim != 1 or template.shape != media.shape:
            raise ValueError(f"template and media need equal 1-D shapes, got {template.shape} "
                             f"and {media.shape}")  # fmt: skip
        if template.size and (template.min() < -1 or template.max() >= self.n_templates):
            raise ValueError(f"template indices outside [-1, {self.n_templates})")
        object.__setattr__(self, "template", template)
        object.__setattr__(self, "media", media)

    def used(self) -> NDArray[np.bool_]:
        """Templates with at least one image."""
        kept = self.template[self.template >= 0]
        return np.bincount(kept, minlength=self.n_templates) > 0

    def media_groups(self) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
        """Kept images ordered by (template, media), the start of each media group in that
        order, and each group's template."""
        kept = np.flatnonzero(self.template >= 0)
        order = kept[np.lexsort((self.media[kept], self.template[kept]))]
        t, m = self.template[order], self.media[order]
        new = np.ones(len(order), bool)
        new[1:] = (t[1:] != t[:-1]) | (m[1:] != m[:-1])
        starts = np.flatnonzero(new)
        return order, starts, t[starts]


def template_features(
    embeddings: ArrayLike, templates: Templates, weights: ArrayLike | None = None
) -> NDArray[np.float32]:
    """Unit template features ``(n_templates, d)``: per media the sum of its images' (weighted)
    unit embeddings divided by its image count, summed over the template's media, normalised.

    Args:
        embeddings: Unit image embeddings ``(n, d)`` (float16 memory maps are fine).
        templates: The images' templates and media.
        weights: Per-image weights (``percentile_weights``), or None for the plain feature.

    Returns:
        float32 rows; a template without images is a zero row (its pairs are left out by the
        caller, ``Templates.used``).

    Raises:
        ValueError: On a shape mismatch or a non-finite or negative weight.
    """
    emb = embeddings if isinstance(embeddings, np.ndarray) else np.asarray(embeddings)
    if emb.ndim != 2 or len(emb) != len(templates.template):
        raise ValueError(f"embeddings {emb.shape} do not match {len(templates.template)} images")
    w = np.ones(len(emb)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(emb),) or not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("weights must be finite, >= 0 and one per image")
    order, starts, group_template = templates.media_groups()
    counts = np.diff(np.append(starts, len(order)))
    group_of = np.repeat(np.arange(len(starts)), counts)  # group per position of ``order``
    out = np.zeros((templates.n_templates, emb.shape[1]), np.float64)
    for lo in range(0, len(order), CHUNK):
        rows, groups = order[lo : lo + CHUNK], group_of[lo : lo + CHUNK]
        weighted = np.asarray(emb[rows], np.float64) * (w[rows] / counts[groups])[:, None]
        owner = group_template[groups]  # ascending: ``order`` is sorted by template
        first = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
        out[owner[first]] += np.add.reduceat(weighted, first, axis=0)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return np.divide(out, norms, out=np.zeros_like(out), where=norms > 0).astype(np.float32)


def template_pair_scores(features: ArrayLike, pairs: Pairs) -> NDArray[np.float64]:
    """Cosine score of each template pair (``pairs`` index rows of unit ``features``).

    Read off blocks of the templates' similarity matrix (``BLOCK`` rows at a time, one BLAS
    product each) instead of gathering two feature rows per pair: IJB-C has 23 k templates and
    15.7 M pairs, so the blocks cost one ``T x T x d`` product while the gathers would move
    ``2 x 15.7 M x d`` floats through memory.
    """
    feats = np.asarray(features, dtype=np.float64)
    order = np.argsort(pairs.a, kind="stable")
    first = pairs.a[order]
    scores = np.empty(len(pairs))
    for lo in range(0, len(feats), BLOCK):
        start, stop = np.searchsorted(first, [lo, lo + BLOCK])
        if start == stop:
            continue
        at = order[start:stop]
        scores[at] = (feats[lo : lo + BLOCK] @ feats.T)[pairs.a[at] - lo, pairs.b[at]]
    return scores


def template_quality(values: ArrayLike, templates: Templates, rule: str = "min") -> NDArray:
    """One quality per template from its images' (``min``, ``mean`` or ``max``); NaN for a
    template without images.

    Raises:
        ValueError: On an unknown rule or a length mismatch.
    """
    if rule not in TEMPLATE_QUALITY:
        raise ValueError(f"template quality {rule!r}; choose one of {', '.join(TEMPLATE_QUALITY)}")
    q = np.asarray(values, dtype=np.float64)
    if q.shape != templates.template.shape:
        raise ValueError(f"{q.size} qualities for {templates.template.size} images")
    kept = templates.template >= 0
    t, q = templates.template[kept], q[kept]
    out = np.full(templates.n_templates, np.nan)
    if rule == "mean":
        counts = np.bincount(t, minlength=templates.n_templates)
        sums = np.bincount(t, weights=q, minlength=templates.n_templates)
        np.divide(sums, counts, out=out, where=counts > 0)
        return out
    reduce = np.fmin if rule == "min" else np.fmax
    fill = np.inf if rule == "min" else -np.inf
    acc = np.full(templates.n_templates, fill)
    reduce.at(acc, t, q)
    return np.where(np.isinf(acc), np.nan, acc)


def percentile_weights(values: ArrayLike) -> NDArray[np.float64]:
    """Each value's percentile rank in ``(0, 1]`` (ties share their mean rank; NaN -> 0): a
    quality weight that does not depend on the method's scale."""
    q = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(q)
    out = np.zeros(q.shape)
    if finite.any():
        ordered = np.sort(q[finite])
        lo = np.searchsorted(ordered, q[finite], side="left")
        hi = np.searchsorted(ordered, q[finite], side="right")
        out[finite] = (lo + hi + 1) / 2 / finite.sum()
    return out


def tar_at_far(
    genuine_scores: ArrayLike, impostor_scores: ArrayLike, fars: Sequence[float]
) -> dict[float, float]:
    """True-accept rate ``#{s_gen >= t} / N_gen`` at the threshold ``t`` of each FAR
    (``fiqa.core.edc.fmr_threshold``); NaN where ``far * N_imp < 1``: so few impostor pairs
    cannot show that FAR."""
    genuine = np.asarray(genuine_scores, dtype=np.float64)
    impostor = np.asarray(impostor_scores, dtype=np.float64)
    resolvable = [far for far in fars if far * impostor.size >= 1]
    thresholds = fmr_thresholds(impostor, resolvable) if resolvable else {}
    return {
        float(far): float(np.mean(genuine >= thresholds[float(far)]))
        if float(far) in thresholds and genuine.size
        else float("nan")
        for far in fars
    }
