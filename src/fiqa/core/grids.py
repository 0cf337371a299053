"""Image grids for W&B panels and report figures."""

from __future__ import annotations

import numpy as np


def face_grid(faces: np.ndarray, ncols: int = 8) -> np.ndarray:
    """Tile uint8 faces (n, H, W, 3) into one (rows*H, ncols*W, 3) image, row-major."""
    if len(faces) == 0:
        raise ValueError("face_grid needs at least one face")
    n, h, w, c = faces.shape
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    grid = np.zeros((nrows * h, ncols * w, c), np.uint8)
    for i, face in enumerate(faces):
        r, col = divmod(i, ncols)
        grid[r * h : (r + 1) * h, col * w : (col + 1) * w] = face
    return grid
