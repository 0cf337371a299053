"""The embedded demo dataset: real faces from installed wheels, jittered and degraded.

Sources (no network, no ``../shared``): skimage's astronaut (Eileen Collins) and cameraman,
matplotlib's Grace Hopper, and the first faces of skimage's ``lfw_subset.npy`` (25x25 LFW
crops, each treated as its own identity, upscaled bicubically). Every image is its identity's
clean source after a small random similarity jitter (plus optional mirror) and ONE graded
degradation from :mod:`fiqa.data.degrade`; severities and kinds are spread evenly and
deterministically. A few deliberately bad files exercise failure handling.

Layout: ``<out>/<identity>/<identity>_<NNN>.jpg``, ``<out>/metadata.csv`` and ``<out>/demo.json``
(parameters, summary, content hash). metadata.csv columns: ``path`` (relative to ``<out>``),
``identity``, ``source``, ``degradation`` (a DEGRADATIONS key, "none" at severity 0, or
"corrupt" / "not_image" / "no_face" for the bad files, whose severity is -1), ``severity``,
``level`` (the severity's parameter: blur sigma px, noise std, JPEG quality, downscale factor,
occluded fraction, gamma), ``jpeg_quality`` (as saved), and the jitter: ``rotation`` (degrees,
counter-clockwise), ``scale``, ``shift_x`` / ``shift_y`` (px), ``flip`` (0/1).
Bytes are identical for the same seed and parameters on the same OpenCV build.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import matplotlib.cbook
import numpy as np
import skimage.data

from fiqa.core.atomic import atomic_dir, write_json_atomic, write_text_atomic
from fiqa.core.images import read_image
from fiqa.data.degrade import (
    DEGRADATIONS,
    JPEG_QUALITY,
    apply_degradation,
    encode_jpeg,
    random_jitter,
)
from fiqa.data.detect import YuNetDetector

log = logging.getLogger(__name__)

DEMO_FORMAT_VERSION = 1
DEMO_JSON = "demo.json"
METADATA_CSV = "metadata.csv"
#: metadata.csv columns; see the module docstring.
METADATA_COLUMNS = ["path", "identity", "source", "degradation", "severity", "level"]
METADATA_COLUMNS += ["jpeg_quality", "rotation", "scale", "shift_x", "shift_y", "flip"]


@dataclass(frozen=True, eq=False)  # array fields: compare by identity
class DemoSource:
    """One identity's clean face and where it was found by YuNet."""

    identity: str
    source: str
    image: np.ndarray  # uint8 (H, W, 3) RGB
    landmarks: np.ndarray  # (5, 2)
    box: np.ndarray  # x, y, w, h
    portrait: bool


def _fit(image: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink (area interpolation) so the longer side is at most ``max_side``; RGB out."""
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    scale = max_side / max(image.shape[:2])
    if scale >= 1:
        return np.ascontiguousarray(image)
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def load_demo_sources(
    include_portraits: bool, lfw_identities: int, portrait_max_side: int, lfw_size: int
) -> list[DemoSource]:
    """Clean source faces from installed wheels, each located once with YuNet (or RuntimeError)."""
    raw: list[tuple[str, str, np.ndarray, bool]] = []
    if include_portraits:
        hopper = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
        raw += [
            ("eileen_collins", "skimage.data.astronaut", skimage.data.astronaut(), True),
            ("grace_hopper", "matplotlib:grace_hopper.jpg", read_image(hopper), True),
            ("cameraman", "skimage.data.camera", skimage.data.camera(), True),
        ]
    if lfw_identities:
        faces = np.load(Path(skimage.data.__file__).parent / "lfw_subset.npy")[:lfw_identities]
        for k, face in enumerate(faces):
            big = cv2.resize(
                (face * 255).astype(np.float32), (lfw_size, lfw_size), interpolation=cv2.INTER_CUBIC
            )
            gray = np.clip(big, 0, 255).round().astype(np.uint8)
            raw.append((f"lfw_{k:03d}", f"skimage:lfw_subset.npy[{k}]", gray, False))
    detector = YuNetDetector()
    sources = []
    for identity, origin, image, portrait in raw:
        rgb = _fit(image, portrait_max_side if portrait else lfw_size)
        found = detector.detect(rgb)
        if found is None:
            raise RuntimeError(f"YuNet finds no face in the demo source {origin}")
        sources.append(DemoSource(identity, origin, rgb, found.landmarks, found.box, portrait))
    return sources


@dataclass(frozen=True)
class DemoSummary:
    """Counts of a built demo dataset (bad files excluded from the pair counts)."""

    n_images: int
    n_identities: int
    n_genuine_pairs: int
    n_impostor_pairs: int
    n_bad_files: int


def pair_counts(images_per_identity: list[int]) -> tuple[int, int]:
    """Number of genuine (same identity) and impostor pairs among all images.

    Args:
        images_per_identity: Image count of every identity.

    Returns:
        ``(genuine, impostor)``; e.g. ``[2, 3]`` -> ``(4, 6)``.
    """
    total = sum(images_per_identity)
    genuine = sum(n * (n - 1) // 2 for n in images_per_identity)
    return genuine, total * (total - 1) // 2 - genuine


def degradation_schedule(n_images: int, identity_index: int) -> list[tuple[str, int]]:
    """Kind and severity of each image of one identity, spread evenly.

    Image ``i`` gets severity ``i % 5``; the j-th image of a severity gets kind
    ``kinds[(j + severity + identity_index) % 6]``, so 30 images cover every (kind, severity)
    once plus 6 clean ones, and identities with fewer images rotate through the kinds.
    """
    kinds = list(DEGRADATIONS)
    schedule = []
    for i in range(n_images):
        severity = i % 5
        if severity == 0:
            schedule.append(("none", 0))
        else:
            schedule.append((kinds[(i // 5 + severity + identity_index) % len(kinds)], severity))
    return schedule


def _write_face_images(
    root: Path, source: DemoSource, identity_index: int, n_images: int, seed: int
) -> list[dict[str, str]]:
    """Jitter, degrade and save one identity's images; return their metadata rows."""
    folder = root / source.identity
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (kind, severity) in enumerate(degradation_schedule(n_images, identity_index)):
        rng = np.random.default_rng([seed, identity_index, i])
        jittered, box, jitter = random_jitter(source.image, source.landmarks, source.box, rng)
        if kind == "jpeg":  # compressed once, at the degradation's own quality
            quality = level = JPEG_QUALITY[severity]
            data = encode_jpeg(jittered, quality)
        else:
            degraded, applied = apply_degradation(jittered, kind, severity, rng, face_box=box)
            quality, level = JPEG_QUALITY[0], applied.level
            data = encode_jpeg(degraded, quality)
        name = f"{source.identity}_{i:03d}.jpg"
        (folder / name).write_bytes(data)
        jit = [f"{v:.4f}" for v in (jitter.rotation, jitter.scale, jitter.shift_x, jitter.shift_y)]
        values = [f"{source.identity}/{name}", source.identity, source.source, kind, severity]
        values += [f"{float(level):.4f}", quality, *jit, int(jitter.flip)]
        rows.append(dict(zip(METADATA_COLUMNS, map(str, values), strict=True)))
    return rows


def _write_bad_files(root: Path, sources: list[DemoSource], counts: list[int]) -> list[dict]:
    """A truncated JPEG, a text file named .jpg and a face-less photo, in identity folders."""
    clean = encode_jpeg(sources[0].image, JPEG_QUALITY[0])
    rocket = _fit(skimage.data.rocket(), 400)
    bad = [
        ("corrupt", "truncated copy of the clean source", clean[: len(clean) * 2 // 5]),
        ("not_image", "text file", b"This is a text file with a .jpg name, not an image.\n"),
        ("no_face", "skimage.data.rocket", encode_jpeg(rocket, JPEG_QUALITY[0])),
    ]
    rows = []
    for k, (kind, what, data) in enumerate(bad):
        owner = k % len(sources)
        identity = sources[owner].identity
        name = f"{identity}_{counts[owner] + k:03d}.jpg"
        (root / identity / name).write_bytes(data)
        row = dict.fromkeys(METADATA_COLUMNS, "")
        row.update(path=f"{identity}/{name}", identity=identity, source=what)
        row.update(degradation=kind, severity="-1", flip="0")
        rows.append(row)
    return rows


def content_hash(root: Path) -> str:
    """SHA-256 over every file's relative path and bytes, except ``demo.json``."""
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file() and p.name != DEMO_JSON):
        digest.update(file.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()


def _existing_summary(out: Path, params: dict) -> DemoSummary | None:
    """The recorded summary when ``out`` already holds an intact demo built with ``params``."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):  # no or bad record
        record = json.loads((out / DEMO_JSON).read_text(encoding="utf-8"))
        if record["params"] == params and record["content_sha256"] == content_hash(out):
            return DemoSummary(**record["summary"])
    return None


def build_demo(
    out_dir: str | Path,
    seed: int = 0,
    portrait_images: int = 30,
    lfw_identities: int = 17,
    lfw_images: int = 10,
    portrait_max_side: int = 400,
    lfw_size: int = 128,
    bad_files: bool = True,
) -> DemoSummary:
    """Build the demo raw dataset into ``out_dir`` (idempotent, deterministic, atomic).

    Args:
        out_dir: Destination; replaced as a whole (must be absent, empty or a previous demo).
        seed: Seed of every random choice (jitter, noise, occluders, exposure).
        portrait_images: Images per portrait (Eileen Collins, Grace Hopper, cameraman); 0: none.
        lfw_identities: Number of LFW faces used, each its own identity (at most 100).
        lfw_images: Images per LFW identity.
        portrait_max_side: Portraits are resized to at most this many pixels.
        lfw_size: Side of the upscaled LFW faces.
        bad_files: Add a truncated JPEG, a text file named .jpg and a photo without a face.

    Returns:
        Counts of the dataset (read from ``demo.json`` when nothing had to be rebuilt).

    Raises:
        FileExistsError: If ``out_dir`` holds other files and no ``demo.json``.
        ValueError: On counts out of range.
    """
    out = Path(out_dir)
    params = {
        "format_version": DEMO_FORMAT_VERSION,
        "seed": seed,
        "portrait_images": portrait_images,
        "lfw_identities": lfw_identities,
        "lfw_images": lfw_images,
        "portrait_max_side": portrait_max_side,
        "lfw_size": lfw_size,
        "bad_files": bad_files,
    }
    existing = _existing_summary(out, params)
    if existing is not None:
        log.info("demo dataset in %s is up to date; not rebuilding", out)
        return existing
    if out.is_dir() and any(out.iterdir()) and not (out / DEMO_JSON).is_file():
        raise FileExistsError(
            f"{out} is not empty and holds no {DEMO_JSON}: refusing to replace it with the demo "
            "dataset; remove it or choose another data.root"
        )
    if min(portrait_images, lfw_images) < 0 or not 0 <= lfw_identities <= 100:
        raise ValueError(f"demo counts out of range: {params}")
    if portrait_images == 0 and lfw_identities * lfw_images == 0:
        raise ValueError(f"the demo parameters select no images: {params}")
    started = time.perf_counter()
    sources = load_demo_sources(
        include_portraits=portrait_images > 0,
        lfw_identities=lfw_identities if lfw_images > 0 else 0,
        portrait_max_side=portrait_max_side,
        lfw_size=lfw_size,
    )
    counts = [portrait_images if s.portrait else lfw_images for s in sources]
    with atomic_dir(out) as tmp:
        rows: list[dict] = []
        for index, (source, n_images) in enumerate(zip(sources, counts, strict=True)):
            rows += _write_face_images(tmp, source, index, n_images, seed)
        bad_rows = _write_bad_files(tmp, sources, counts) if bad_files else []
        rows += bad_rows
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=METADATA_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(tmp / METADATA_CSV, buffer.getvalue())
        genuine, impostor = pair_counts(counts)
        summary = DemoSummary(sum(counts), len(sources), genuine, impostor, len(bad_rows))
        record = {"params": params, "summary": asdict(summary), "content_sha256": content_hash(tmp)}
        write_json_atomic(tmp / DEMO_JSON, record)
    elapsed = time.perf_counter() - started
    log.info("built the demo dataset in %s in %.1f s: %s", out, elapsed, summary)
    return summary
