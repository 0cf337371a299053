"""EDC + pAUC speed: the vectorised ``fiqa.core.edc`` versus a per-discard-step loop.

Compares, in one run on the same synthetic scores (seeded):

1. ``edc_curve`` + ``pauc(0.2)`` + ``pauc(0.3)`` on the full set (default 1e5 genuine, 1e7
   impostor scores);
2. both implementations on the SAME smaller genuine subsample (default 1e4 genuine, all
   impostors): this measured ratio is the headline speed-up;
3. the loop at two sizes (n/2 and n) to show its quadratic growth, and its time extrapolated to
   the full genuine count (clearly labelled as an extrapolation; use ``--n-genuine-loop`` equal
   to ``--n-genuine`` to measure it instead).

Qualities are continuous, so every genuine pair is its own discard step (the worst case).

Usage:
    python benchmarks/edc_speed.py [--n-genuine 100000] [--n-impostor 10000000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from fiqa.core.edc import edc_curve, pauc


def loop_threshold(impostor: np.ndarray, fmr: float) -> float:
    """Straightforward threshold: full sort, then count scores >= each candidate."""
    ordered = np.sort(impostor)
    candidates = np.append(np.unique(ordered), np.nextafter(ordered[-1], np.inf))
    counts = ordered.size - np.searchsorted(ordered, candidates, side="left")
    return float(candidates[np.argmax(counts / ordered.size <= fmr)])


def loop_edc(
    genuine: np.ndarray, quality: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per-discard-step EDC: one boolean mask and one count over all pairs per step, O(n^2)."""
    fractions, fnmr = [0.0], [np.count_nonzero(genuine < threshold) / genuine.size]
    for q in np.unique(quality):
        remaining = genuine[quality > q]
        fractions.append(1.0 - remaining.size / genuine.size)
        fnmr.append(
            np.count_nonzero(remaining < threshold) / remaining.size if remaining.size else 0.0
        )
    return np.array(fractions), np.array(fnmr)


def loop_pauc(fractions: np.ndarray, fnmr: np.ndarray, limit: float) -> float:
    """Normalised pAUC by summing the steps one by one."""
    area = 0.0
    for k in range(fractions.size - 1):
        area += fnmr[k] * max(0.0, min(fractions[k + 1], limit) - min(fractions[k], limit))
    return area / (fnmr[0] * limit)


def best_time(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Best wall time of ``repeats`` calls and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def run_fast(gen: np.ndarray, qual: np.ndarray, imp: np.ndarray, fmr: float) -> tuple[float, ...]:
    curve = edc_curve(gen, qual, imp, fmr)
    return pauc(curve, 0.2), pauc(curve, 0.3)


def run_loop(
    gen: np.ndarray, qual: np.ndarray, imp: np.ndarray, fmr: float
) -> tuple[float, float, float, float]:
    """Returns (threshold seconds, loop seconds, pAUC@0.2, pAUC@0.3)."""
    start = time.perf_counter()
    threshold = loop_threshold(imp, fmr)
    mid = time.perf_counter()
    fractions, fnmr = loop_edc(gen, qual, threshold)
    p2, p3 = loop_pauc(fractions, fnmr, 0.2), loop_pauc(fractions, fnmr, 0.3)
    return mid - start, time.perf_counter() - mid, p2, p3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-genuine", type=float, default=1e5)
    parser.add_argument("--n-impostor", type=float, default=1e7)
    parser.add_argument("--n-genuine-loop", type=float, default=1e4)
    parser.add_argument("--fmr", type=float, default=1e-3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    n_gen, n_imp, n_loop = int(args.n_genuine), int(args.n_impostor), int(args.n_genuine_loop)

    rng = np.random.default_rng(args.seed)
    genuine = rng.normal(0.55, 0.15, n_gen)
    quality = genuine + rng.normal(0.0, 0.15, n_gen)  # informative but noisy, all distinct
    impostor = rng.normal(0.0, 0.1, n_imp)
    print(f"data: {n_gen:,} genuine, {n_imp:,} impostor, fmr={args.fmr:g}, seed={args.seed}")

    t_full, (p2, p3) = best_time(
        lambda: run_fast(genuine, quality, impostor, args.fmr), args.repeats
    )
    print(
        f"[1] vectorised, full {n_gen:,} genuine: {t_full:.3f} s "
        f"(pAUC@0.2={p2:.4f}, pAUC@0.3={p3:.4f}; best of {args.repeats})"
    )

    g_small, q_small = genuine[:n_loop], quality[:n_loop]
    t_fast_small, fast_small = best_time(
        lambda: run_fast(g_small, q_small, impostor, args.fmr), args.repeats
    )
    t_thr, t_steps, lp2, lp3 = run_loop(g_small, q_small, impostor, args.fmr)
    if not np.allclose(fast_small, (lp2, lp3), rtol=1e-9):
        raise SystemExit(f"mismatch: vectorised {fast_small} vs loop {(lp2, lp3)}")
    t_loop_small = t_thr + t_steps
    print(f"[2] same size, {n_loop:,} genuine + {n_imp:,} impostor (results agree):")
    print(
        f"    vectorised {t_fast_small:.3f} s | per-step loop {t_loop_small:.3f} s "
        f"(threshold by full sort {t_thr:.3f} s + {n_loop:,} discard steps {t_steps:.3f} s)"
    )
    print(f"    measured speed-up: {t_loop_small / t_fast_small:.1f}x")

    half = n_loop // 2
    _, t_steps_half, _, _ = run_loop(genuine[:half], quality[:half], impostor, args.fmr)
    growth = t_steps / t_steps_half
    print(
        f"[3] loop steps at {half:,} -> {n_loop:,} genuine: {t_steps_half:.3f} s -> "
        f"{t_steps:.3f} s (x{growth:.1f} for 2x n; quadratic would be x4)"
    )
    if n_loop < n_gen:
        t_extrap = t_thr + t_steps * (n_gen / n_loop) ** 2
        print(
            f"    EXTRAPOLATED loop at {n_gen:,} genuine (steps x (n/{n_loop:,})^2 + same "
            f"threshold): ~{t_extrap:.1f} s -> ~{t_extrap / t_full:.0f}x slower than [1]"
        )
    else:
        print(f"    loop measured at the full size: speed-up {t_loop_small / t_full:.1f}x vs [1]")


if __name__ == "__main__":
    main()
