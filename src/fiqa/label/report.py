"""Label report: distributions, agreement between methods, and (on the demo) agreement with the
recorded degradation severity."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import spearmanr


def label_report(table: pd.DataFrame, methods: list[str]) -> dict:
    """Summary statistics of the label columns ``methods`` of a labels table."""
    report: dict = {"n_samples": len(table), "n_identities": int(table["identity"].nunique())}
    report["methods"] = {
        m: {
            "mean": float(table[m].mean()),
            "std": float(table[m].std()),
            "min": float(table[m].min()),
            "max": float(table[m].max()),
            "mean_identity_std": float(table.groupby("identity")[m].std().mean()),
        }
        for m in methods
    }
    report["spearman_between_methods"] = {
        a: {b: float(spearmanr(table[a], table[b]).statistic) for b in methods} for a in methods
    }
    if "severity" in table.columns and table["severity"].notna().any():
        # Expected negative: heavier degradation, lower quality.
        known = table[table["severity"].notna()]
        report["spearman_vs_severity"] = {
            m: float(spearmanr(known[m], known["severity"]).statistic) for m in methods
        }
    return report


def check_labels(
    table: pd.DataFrame, ranges: dict[str, tuple[float, float]], identities: set[str]
) -> None:
    """Validity checks: every column of ``ranges`` finite and inside its (low, high) range, and
    no identity silently dropped."""
    for column, (low, high) in ranges.items():
        values = table[column].to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values) | (values < low) | (values > high)
        if bad.any():
            rows = table.loc[bad, "path"].head(5).tolist()
            raise ValueError(
                f"label {column!r}: {int(bad.sum())} values not finite in [{low}, {high}], e.g. {rows}"
            )
    dropped = identities - set(table["identity"])
    if dropped:
        raise ValueError(f"labels lost {len(dropped)} identities, e.g. {sorted(dropped)[:5]}")
