"""MagFace (Meng et al., CVPR 2021): quality = L2 norm of the unnormalised embedding.

MagFace's loss ties the magnitude a_i = ||f_i||_2 of a face's raw embedding f_i to how close it
sits to its class centre, so q_i = a_i ranks faces by recognisability. The score is only
meaningful for a network trained with the MagFace loss (``magface_iresnet*``); other models give
norms too, with no such guarantee.
"""

from __future__ import annotations

import torch


def magface_quality(raw_embeddings: torch.Tensor) -> torch.Tensor:
    """``(n, d)`` unnormalised embeddings -> ``(n,)`` float32 norms ||f_i||_2."""
    if raw_embeddings.ndim != 2:
        raise ValueError(f"expected (n, d) embeddings, got shape {tuple(raw_embeddings.shape)}")
    return torch.linalg.vector_norm(raw_embeddings.float(), dim=1)
