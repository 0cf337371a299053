"""EDC figures (matplotlib, headless) and the sampled curves that DVC plots read."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
from matplotlib import colormaps, rc_context
from matplotlib.figure import Figure

from fiqa.core.atomic import atomic_path
from fiqa.core.edc import EDCCurve, curve_values
from fiqa.eval.baselines import SIMPLE_BASELINES
from fiqa.label import METHODS

# Discard fractions at which the exact step curves are sampled for DVC plots and W&B.
PLOT_GRID = np.round(np.linspace(0.0, 1.0, 201), 4)
BASELINE_STYLE = {"random": ":", "oracle": "--"}
# A method keeps its colour in every figure: the trained model, the registered label methods and
# the simple baselines get a fixed tab20 slot, others a slot from a hash of the name; the two
# references are grey and black.
_KNOWN = ("model", *METHODS, *SIMPLE_BASELINES)
_FIXED = {"random": "0.55", "oracle": "0.0"}


def method_colour(name: str) -> str | tuple[float, ...]:
    """The matplotlib colour of ``name`` in every EDC figure."""
    if name in _FIXED:
        return _FIXED[name]
    slot = _KNOWN.index(name) if name in _KNOWN else len(_KNOWN) + zlib.crc32(name.encode()) % 8
    return colormaps["tab20"](slot % 20)


def sampled_curves(curves: dict[str, EDCCurve], grid: np.ndarray = PLOT_GRID) -> list[dict]:
    """One record per method and grid point, ``{"method", "discard", "fnmr"}``: the long format
    of the DVC plots, which the EDC template (``.dvc/plots/edc.json``) colours by method, so a
    plot shows whichever methods a run evaluated."""
    return [
        {"method": name, "discard": float(x), "fnmr": float(v)}
        for name, curve in curves.items()
        for x, v in zip(grid, curve_values(curve, grid), strict=True)
    ]


def plot_edc(
    curves: dict[str, EDCCurve], paucs: dict[str, float], limit: float, title: str, path: Path
) -> None:
    """Write :func:`edc_figure` to ``path`` (PNG or SVG, by its suffix), atomically; the same
    figure is the same bytes (an SVG without its date, with element ids from a fixed salt)."""
    fig = edc_figure(curves, paucs, limit, title)
    fmt = path.suffix.lstrip(".")
    with atomic_path(path) as tmp, rc_context({"svg.hashsalt": "fiqa"}):
        fig.savefig(tmp, format=fmt, metadata={"Date": None} if fmt == "svg" else None)


def edc_figure(
    curves: dict[str, EDCCurve], paucs: dict[str, float], limit: float, title: str
) -> Figure:
    """Step curves of every method, its colour from :func:`method_colour`, with its normalised
    pAUC up to the discard ``limit`` in the legend."""
    # The object API needs no GUI backend and leaves no global pyplot state behind.
    fig = Figure(figsize=(6.4, 4.4), dpi=120)
    ax = fig.subplots()
    for name, curve in curves.items():
        ax.step(
            curve.fractions,
            curve.fnmr,
            where="post",
            linestyle=BASELINE_STYLE.get(name, "-"),
            color=method_colour(name),
            label=f"{name} (pAUC@{limit:g} {paucs[name]:.3f})",
        )
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(bottom=0.0)
    ax.set_xlabel("fraction of genuine comparisons discarded")
    ax.set_ylabel(f"FNMR at FMR={next(iter(curves.values())).fmr:g}")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
