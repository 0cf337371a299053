"""EDC figures (matplotlib, headless) and the sampled curves that DVC plots read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from fiqa.core.atomic import atomic_path
from fiqa.core.edc import EDCCurve, curve_values

# Discard fractions at which the exact step curves are sampled for DVC plots and W&B.
PLOT_GRID = np.round(np.linspace(0.0, 1.0, 201), 4)
BASELINE_STYLE = {"random": ":", "oracle": "--"}


def sampled_curves(curves: dict[str, EDCCurve], grid: np.ndarray = PLOT_GRID) -> list[dict]:
    """One record per grid point: {"discard": x, <method>: FNMR, ...} (the DVC plots format)."""
    values = {name: curve_values(curve, grid) for name, curve in curves.items()}
    return [
        {"discard": float(x), **{name: float(v[i]) for name, v in values.items()}}
        for i, x in enumerate(grid)
    ]


def plot_edc(curves: dict[str, EDCCurve], paucs: dict[str, float], title: str, path: Path) -> None:
    """Step-curve figure of every method with its normalised pAUC in the legend (PNG or SVG)."""
    # The object API needs no GUI backend and leaves no global pyplot state behind.
    fig = Figure(figsize=(6.4, 4.4), dpi=120)
    ax = fig.subplots()
    for name, curve in curves.items():
        ax.step(
            curve.fractions,
            curve.fnmr,
            where="post",
            linestyle=BASELINE_STYLE.get(name, "-"),
            label=f"{name} (pAUC {paucs[name]:.3f})",
        )
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(bottom=0.0)
    ax.set_xlabel("fraction of genuine comparisons discarded")
    ax.set_ylabel(f"FNMR at FMR={next(iter(curves.values())).fmr:g}")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip("."))
