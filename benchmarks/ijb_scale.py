"""The IJB-C template protocol at its real size: time and peak memory of what ``evaluate`` does
for one FR model once the embeddings exist.

A synthetic protocol with IJB-C's 1:1 counts (``--scale 1``): 469,375 images in 23,124
templates of 3,531 subjects (template sizes skewed as IJB-C's: many single photos, a few long
videos; the images of a template in media of 1-30 frames), 19,557 genuine and 15,638,932
impostor template pairs. Embeddings are SIMULATED (unit float16 512-D: subject centre, a
per-template offset and per-image noise of its own level), as are three quality methods (one
tracks the noise level, one half does, one is noise). Then, with the functions the evaluate
stage calls (``fiqa.eval.matrix``):

- ``features``  plain template features (per media mean, summed, normalised);
- ``scores``    the 15.7 M template-pair scores from blocks of the similarity matrix, and the
  same scores gathered pair by pair (``fiqa.core.pairs.pair_scores``, the image-pair path) as
  the baseline of the ratio;
- ``edc``       template qualities (min) and the EDC / pAUC of every method and the baselines;
- ``tar``       TAR at FAR 1e-6 ... 1e-1 of plain and of each method's quality-aware templates.

Prints each step's wall and CPU seconds (CPU time: robust to other work on the machine; set
``OMP_NUM_THREADS=1`` to make it the single-thread cost) and the process's peak RSS so far.

    OMP_NUM_THREADS=1 python benchmarks/ijb_scale.py --out benchmarks/results/ijb_scale.json
    python benchmarks/ijb_scale.py --scale 0.02    # a quick look
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from fiqa.core.pairs import Pairs, pair_scores
from fiqa.core.templates import Templates, template_features, template_pair_scores
from fiqa.eval.matrix import cell_curves, curve_metrics, template_qualities, template_tars
from fiqa.eval.qualities import MethodQuality
from fiqa.eval.sets import EvalSet, TemplateSetup

IJBC = {"images": 469_375, "templates": 23_124, "subjects": 3_531, "genuine": 19_557,
        "impostor": 15_638_932}  # fmt: skip
DIM = 512
FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


def peak_mb() -> float:
    """This process's peak resident memory so far (Linux: ru_maxrss is in KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def protocol(scale: float, seed: int) -> tuple[EvalSet, np.ndarray, dict[str, MethodQuality]]:
    """The synthetic protocol: its set (template pairs), embeddings and qualities."""
    rng = np.random.default_rng(seed)
    n, k, s = (max(int(IJBC[key] * scale), 2) for key in ("images", "templates", "subjects"))
    subject = np.sort(rng.integers(0, s, k))  # each template's subject
    weights = rng.lognormal(1.5, 1.4, k)  # skewed: many small templates, few long videos
    sizes = 1 + rng.multinomial(n - k, weights / weights.sum())  # every template has an image
    template = np.repeat(np.arange(k), sizes)
    media = np.cumsum(rng.random(len(template)) < 1 / 8)  # media of ~8 frames, in template order
    media = media + template * len(template)  # never spanning two templates
    noise = rng.uniform(1.0, 8.0, len(template))
    centres = rng.normal(size=(s, DIM)).astype(np.float32)
    offsets = rng.normal(size=(k, DIM)).astype(np.float32)  # a template's session, pose, age
    emb = np.empty((len(template), DIM), np.float16)
    for lo in range(0, len(template), 65_536):
        rows = slice(lo, lo + 65_536)
        x = centres[subject[template[rows]]] + 1.2 * offsets[template[rows]]
        x += rng.normal(size=x.shape).astype(np.float32) * noise[rows, None]
        emb[rows] = x / np.linalg.norm(x, axis=1, keepdims=True)
    by_subject = np.split(np.arange(k), np.flatnonzero(np.diff(subject)) + 1)
    same = [(g[i], g[j]) for g in by_subject for i in range(len(g)) for j in range(i + 1, len(g))]
    n_gen = min(max(int(IJBC["genuine"] * scale), 1), len(same))
    chosen = np.asarray(same)[rng.choice(len(same), n_gen, replace=False)]
    n_imp = max(int(IJBC["impostor"] * scale), 1)
    a, b = rng.integers(0, k, (2, int(n_imp * 1.1) + 10))
    keep = subject[a] != subject[b]
    a, b = a[keep][:n_imp], b[keep][:n_imp]
    pairs = Pairs(np.r_[chosen[:, 0], a], np.r_[chosen[:, 1], b],
                  np.r_[np.ones(n_gen, bool), np.zeros(len(a), bool)])  # fmt: skip
    setup = TemplateSetup(Templates(template, media, k), "min", FARS)
    data = EvalSet("ijbc-synthetic", len(template), pairs, None, np.arange(len(template)),
                   templates=setup)  # fmt: skip
    qualities = {
        "tracks_noise": -noise + rng.normal(0, 0.1, len(noise)),
        "half": -noise + rng.normal(0, 0.5, len(noise)),
        "noise": rng.random(len(noise)),
    }
    return data, emb, {m: MethodQuality(q, frozenset()) for m, q in qualities.items()}


def main() -> None:
    """Build the protocol and time each step."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of IJB-C's counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="also write the figures (JSON)")
    args = parser.parse_args()
    figures: dict[str, dict] = {}
    start = time.perf_counter(), time.process_time()

    def step(name: str) -> None:
        nonlocal start
        wall, cpu = time.perf_counter() - start[0], time.process_time() - start[1]
        figures[name] = {"seconds": wall, "cpu_seconds": cpu, "peak_rss_mb": peak_mb()}
        print(f"  {name:<18} {wall:8.1f} s  CPU {cpu:8.1f} s   peak RSS {peak_mb():8.0f} MB",
              flush=True)  # fmt: skip
        start = time.perf_counter(), time.process_time()

    data, emb, qualities = protocol(args.scale, args.seed)
    setup = data.templates
    print(f"{data.n:,} images, {setup.templates.n_templates:,} templates, "
          f"{data.pairs.n_genuine:,} genuine + {data.pairs.n_impostor:,} impostor pairs "
          "(embeddings and qualities simulated)", flush=True)  # fmt: skip
    step("build (synthetic)")
    features = template_features(emb, setup.templates)
    step("features")
    scores = template_pair_scores(features, data.pairs)
    step("scores (blocks)")
    gathered = pair_scores(features, data.pairs)
    step("scores (gathers)")
    assert np.allclose(scores, gathered, atol=1e-6)
    del gathered
    per_template = template_qualities(qualities, setup)
    curves = cell_curves(per_template, data, scores, [1e-3], "min")
    metrics = {m: curve_metrics(c, [0.2, 0.3], 1e-3) for m, c in curves.items()}
    step("edc")
    template_tars(metrics, qualities, data, setup, emb, scores)
    step("tar")
    ratio = figures["scores (gathers)"]["cpu_seconds"] / figures["scores (blocks)"]["cpu_seconds"]
    print(f"template-pair scores: blocks {ratio:.1f}x less CPU time than row gathers")
    for method, m in metrics.items():
        tars = "  ".join(f"{far:g}: {m[f'tar@far={far:g}']:.3f}"
                         + (f"/{m[f'tar_qaware@far={far:g}']:.3f}" if method in qualities else "")
                         for far in FARS[2:])  # fmt: skip
        print(f"  {method:<13} pAUC@0.3 {m['pauc@0.3']:.3f}  TAR plain/quality-aware {tars}")
    if args.out:
        from fiqa.core.atomic import write_json_atomic

        write_json_atomic(args.out, {"scale": args.scale, "n_images": data.n,
                                     "n_genuine": data.pairs.n_genuine,
                                     "n_impostor": data.pairs.n_impostor, "steps": figures,
                                     "metrics": metrics})  # fmt: skip


if __name__ == "__main__":
    main()
