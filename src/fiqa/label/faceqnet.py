"""FaceQnet-style labels (Hernandez-Ortega et al., ICB 2019; Galbally, NIST-EAB 2021).

Quality ground truth = comparison score of each sample against a "perfect" reference image of the
same identity, averaged over several FR systems. With L2-normalised embeddings e and the
identity's reference r, FaceQnet's code uses the Euclidean distance, z-normalised over the set,
mapped to (0, 1):

    d_i = ||e_i - e_r(i)||_2,   z_i = (d_i - mean(d)) / std(d),   q_i = 1 / (1 + exp(z_i))

The reference is taken from a given list (e.g. FaceQnet's VGGFace2 templates file) or chosen per
identity by an ICAO-style proxy: sharpness, frontal pose, uniform illumination and face size.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd

from fiqa.data.face_store import PreparedFaces
from fiqa.label.context import LabelContext
from fiqa.label.grouping import iter_row_chunks, l2_normalise

log = logging.getLogger(__name__)

PROXY_CRITERIA = ("sharpness", "frontality", "illumination", "face_size")
REFERENCES = ("proxy", "list", "manifest")


@dataclass
class FaceQnetSettings:
    """FaceQnet settings (``label.methods.faceqnet``).

    Attributes:
        reference: How each identity's reference image is chosen: ``proxy`` (ICAO-style
            sharpness/pose/illumination/size), ``list`` (a CSV) or ``manifest`` (an
            ``is_reference`` column, e.g. VGGFace2 + ``data.references``).
        reference_list: CSV (identity, path) when ``reference=list``.
    """

    reference: str
    reference_list: str | None


def icao_proxy(faces: np.ndarray, landmarks: np.ndarray) -> pd.DataFrame:
    """ICAO-style proxy criteria per face (higher = better for every column).

    Args:
        faces: aligned uint8 faces (n, H, W, 3).
        landmarks: (n, 5, 2) landmarks in source-image pixels (eyes, nose, mouth corners).
    """
    gray = faces.astype(np.float32).mean(axis=-1)
    sharp = np.array([cv2.Laplacian(g, cv2.CV_32F).var() for g in gray])
    eyes_mid = landmarks[:, :2].mean(axis=1)
    iod = np.linalg.norm(landmarks[:, 1] - landmarks[:, 0], axis=1)
    # Nose offset from the eye midline, relative to the inter-ocular distance (yaw/roll proxy).
    asym = np.abs(landmarks[:, 2, 0] - eyes_mid[:, 0]) / np.maximum(iod, 1e-6)
    half = gray.shape[2] // 2
    left, right = gray[:, :, :half].mean(axis=(1, 2)), gray[:, :, half:].mean(axis=(1, 2))
    exposure = np.abs(gray.mean(axis=(1, 2)) - 127.5) / 127.5
    illumination = 1.0 - np.abs(left - right) / 255.0 - exposure
    return pd.DataFrame(
        {"sharpness": sharp, "frontality": -asym, "illumination": illumination, "face_size": iod}
    )


def select_reference_images(identities: pd.Series, proxy: pd.DataFrame) -> np.ndarray:
    """Per sample, the row index of its identity's reference: the best mean within-identity rank
    over the proxy criteria (ties -> the first row)."""
    ranks = proxy.groupby(identities.values).rank(pct=True).mean(axis=1)
    best = ranks.groupby(identities.values).idxmax()
    return identities.map(best).to_numpy(dtype=np.int64)


def references_from_list(
    identities: pd.Series, paths: pd.Series, ref_list: pd.DataFrame
) -> np.ndarray:
    """Per sample, the row index of the reference given in ``ref_list`` (columns identity, path)."""
    missing_cols = {"identity", "path"} - set(ref_list.columns)
    if missing_cols:
        raise ValueError(
            f"label.methods.faceqnet.reference_list lacks columns {sorted(missing_cols)}"
        )
    row_of_path = pd.Series(np.arange(len(paths)), index=paths.values)
    ref_rows = ref_list.set_index("identity")["path"].map(row_of_path)
    lacking = sorted(set(identities) - set(ref_rows.dropna().index))
    if lacking:
        raise ValueError(
            f"reference_list has no usable reference for {len(lacking)} identities "
            f"(first: {lacking[:5]}); every identity needs one aligned reference image"
        )
    return identities.map(ref_rows).to_numpy(dtype=np.int64)


def faceqnet_from_distances(distances: np.ndarray) -> np.ndarray:
    """q = 1 / (1 + exp(z)) with z the z-normalised distance to the reference (statistics over
    the known distances; NaN stays NaN)."""
    d = np.asarray(distances, dtype=np.float64)
    known = ~np.isnan(d)
    std = d[known].std() if known.any() else 0.0
    z = (d - d[known].mean()) / std if std > 0 else np.where(known, 0.0, np.nan)
    return 1.0 / (1.0 + np.exp(z))


def faceqnet_scores(
    embeddings: list[np.ndarray], reference_rows: np.ndarray, unknown: np.ndarray | None = None
) -> np.ndarray:
    """FaceQnet labels averaged over FR models (one L2-normalised (n, d) array or memmap per
    model); rows of ``unknown`` (e.g. identities with one image, their own reference) get NaN
    and stay out of the z-normalisation."""
    if not embeddings:
        raise ValueError("faceqnet needs at least one FR model (label.fr_models is empty)")
    labels = []
    for e in embeddings:
        d = _distances(e, reference_rows)
        labels.append(
            faceqnet_from_distances(d if unknown is None else np.where(unknown, np.nan, d))
        )
    return np.mean(labels, 0)


def _distances(embeddings: np.ndarray, reference_rows: np.ndarray) -> np.ndarray:
    """||e_i - e_ref(i)|| of unit rows, in row chunks (embeddings may be a float16 memmap)."""
    d = np.empty(len(embeddings))
    for rows, block in iter_row_chunks(embeddings):
        references = l2_normalise(np.asarray(embeddings[reference_rows[rows]], dtype=np.float64))
        d[rows] = np.linalg.norm(block - references, axis=1)
    return d


def select_references(prepared: PreparedFaces, params: FaceQnetSettings) -> np.ndarray:
    """Row of each sample's reference image, as ``params.reference`` says."""
    manifest = prepared.manifest
    if params.reference == "list":
        ref_list = pd.read_csv(params.reference_list)
        return references_from_list(manifest["identity"], manifest["path"], ref_list)
    if params.reference == "manifest":  # e.g. data=vggface2 with data.references
        if "is_reference" not in manifest.columns:
            raise ValueError("reference=manifest needs an is_reference column (data.references)")
        is_ref = manifest["is_reference"].fillna(False).astype(bool)
        ref_list = manifest.loc[is_ref, ["identity", "path"]]
        return references_from_list(manifest["identity"], manifest["path"], ref_list)
    if params.reference == "proxy":
        landmarks = np.stack(manifest["landmarks"].to_numpy()).reshape(-1, 5, 2)
        proxy = pd.concat(
            [icao_proxy(faces, landmarks[rows]) for rows, faces in prepared.chunks()],
            ignore_index=True,
        )
        return select_reference_images(manifest["identity"], proxy)
    raise ValueError(f"reference must be one of {REFERENCES}, got {params.reference!r}")


def faceqnet_label(
    ctx: LabelContext, params: FaceQnetSettings, outputs: Mapping[str, np.ndarray]
) -> np.ndarray:
    """FaceQnet labels of one FR model's embeddings (references chosen once for all models)."""
    prepared = ctx.require_prepared("faceqnet")
    references = ctx.once("faceqnet_references", lambda: select_references(prepared, params))
    return faceqnet_scores([outputs["embedding"]], references, ctx.singletons)
