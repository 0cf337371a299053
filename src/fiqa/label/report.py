"""Label report: distributions, agreement between methods, and (on the demo) agreement with the
recorded degradation severity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from fiqa.core.atomic import atomic_path


def label_report(table: pd.DataFrame, methods: list[str]) -> dict:
    """Summary statistics of the label columns ``methods`` of a labels table."""
    counts = table["identity"].value_counts()
    report: dict = {
        "n_samples": len(table),
        "n_identities": len(counts),
        # identity-based methods give these no label; they are left out of training
        "n_single_image_identities": int((counts == 1).sum()),
        "n_without_quality": int(table["quality"].isna().sum()) if "quality" in table else 0,
    }
    report["methods"] = {
        m: {
            "mean": float(table[m].mean()),
            "std": float(table[m].std()),
            "min": float(table[m].min()),
            "max": float(table[m].max()),
            "mean_identity_std": float(table.groupby("identity")[m].std().mean()),
            "without_label": int(table[m].isna().sum()),
        }
        for m in methods
    }
    report["spearman_between_methods"] = {
        a: {b: _spearman(table[a], table[b]) for b in methods} for a in methods
    }
    if "severity" in table.columns and table["severity"].notna().any():
        # Expected negative: heavier degradation, lower quality.
        known = table[table["severity"].notna()]
        report["spearman_vs_severity"] = {
            m: _spearman(known[m], known["severity"]) for m in methods
        }
    return report


def _spearman(a: pd.Series, b: pd.Series) -> float:
    """Spearman correlation over the rows where both have a value."""
    return float(spearmanr(a, b, nan_policy="omit").statistic)


def check_label_values(
    table: pd.DataFrame,
    ranges: dict[str, tuple[float, float]],
    identities: set[str],
    unlabelled: dict[str, np.ndarray] | None = None,
) -> None:
    """Validity checks: every column of ``ranges`` finite and inside its (low, high) range
    (NaN only on the rows ``unlabelled[column]`` allows: samples an identity-based method gives
    no label), and no identity silently dropped."""
    for column, (low, high) in ranges.items():
        values = table[column].to_numpy(dtype=np.float64)
        allowed = (unlabelled or {}).get(column, np.zeros(len(values), bool)) & np.isnan(values)
        bad = ~allowed & (~np.isfinite(values) | (values < low) | (values > high))
        if bad.any():
            rows = table.loc[bad, "path"].head(5).tolist()
            raise ValueError(
                f"label {column!r}: {int(bad.sum())} values not finite in [{low}, {high}], e.g. {rows}"
            )
    dropped = identities - set(table["identity"])
    if dropped:
        raise ValueError(f"labels lost {len(dropped)} identities, e.g. {sorted(dropped)[:5]}")


def write_label_figures(table: pd.DataFrame, methods: list[str], directory: Path) -> list[Path]:
    """PNG figures of the label report: per-method distributions, the Spearman matrix between
    methods, per-identity spread and, when the table records it, quality vs degradation
    severity. Returns the written paths (each written atomically)."""
    from matplotlib.figure import Figure  # deferred: only the stage's report needs it

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    cols = min(len(methods), 4)
    rows = -(-len(methods) // cols)

    def save(fig: Figure, name: str) -> None:
        fig.tight_layout()
        with atomic_path(directory / name) as tmp:
            fig.savefig(tmp, format="png")
        paths.append(directory / name)

    fig = Figure(figsize=(3.2 * cols, 2.6 * rows), dpi=110)
    for ax, m in zip(_method_axes(fig, rows, cols, len(methods)), methods, strict=True):
        ax.hist(table[m].to_numpy(dtype=np.float64), bins=30, color="tab:blue")
        ax.set_title(m)
        ax.set_xlabel("label value")
        ax.set_ylabel("faces")
    save(fig, "distributions.png")

    corr = table[methods].corr(method="spearman").to_numpy()
    fig = Figure(figsize=(1.0 + 0.7 * len(methods), 0.6 + 0.7 * len(methods)), dpi=110)
    ax = fig.subplots()
    image = ax.imshow(corr, vmin=-1, vmax=1, cmap="coolwarm")
    ax.set_xticks(range(len(methods)), methods, rotation=45, ha="right")
    ax.set_yticks(range(len(methods)), methods)
    for (i, j), value in np.ndenumerate(corr):
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8)
    fig.colorbar(image, ax=ax, label="Spearman")
    save(fig, "correlations.png")

    spread = identity_spread(table, methods)
    fig = Figure(figsize=(1.0 + 0.9 * len(methods), 3.2), dpi=110)
    ax = fig.subplots()
    ax.boxplot([spread[m].dropna().to_numpy() for m in methods])
    ax.set_xticks(range(1, len(methods) + 1), methods, rotation=45, ha="right")
    ax.set_ylabel("within-identity std / overall std")
    save(fig, "identity_spread.png")

    if "severity" in table.columns and table["severity"].notna().any():
        known = table[table["severity"].notna()]
        fig = Figure(figsize=(3.2 * cols, 2.6 * rows), dpi=110)
        for ax, m in zip(_method_axes(fig, rows, cols, len(methods)), methods, strict=True):
            ax.scatter(known["severity"], known[m], s=6, alpha=0.5)
            ax.set_title(f"{m} (rho {spearmanr(known[m], known['severity']).statistic:.2f})")
            ax.set_xlabel("degradation severity")
            ax.set_ylabel("label value")
        save(fig, "severity.png")
    return paths


def identity_spread(table: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """Per identity (rows) and method (columns): the std of its labels within the identity over
    the method's std across all faces. Scale-free, so methods on 0-1 and 0-100 scales share one
    axis; below 1, the method's quality varies more between identities than within them."""
    return table.groupby("identity")[methods].std() / table[methods].std()


def _method_axes(fig, rows: int, cols: int, count: int) -> list:
    """The first ``count`` axes of a ``rows`` x ``cols`` grid; the empty cells are hidden."""
    axes = list(np.ravel(fig.subplots(rows, cols, squeeze=False)))
    for ax in axes[count:]:
        ax.set_visible(False)
    return axes[:count]
