"""IJB-B/C in insightface's release layout: reading, bad input, and ``evaluate`` end to end on a
small release built from real LFW faces, its template scores and TAR checked by hand."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from scipy.stats import rankdata

from fiqa.config import compose_config
from fiqa.data.detect import YuNetDetector
from fiqa.data.ijb import load_ijb
from fiqa.eval.baselines import baseline_quality
from fiqa.fr.registry import load_fr_model
from fiqa.stages.runner import run_stage

N_PEOPLE = 8
BLUR = 12.0  # poor frames: each person's 4th image, and the 2nd of every other person
PAD = 70  # LFW dev crops are tight: pad them into "loose crops" YuNet finds a face in


def write_release(root: Path, variant: str, images: list, templates: list, pairs: list) -> None:
    """``images``: (name, bgr or None, landmarks, score); ``templates``: (name, tid, mid)."""
    (root / "loose_crop").mkdir(parents=True, exist_ok=True)
    (root / "meta").mkdir(exist_ok=True)
    lines = []
    for name, image, landmarks, score in images:
        if image is not None:
            cv2.imwrite(str(root / "loose_crop" / name), image)
        lines.append(" ".join([name, *(f"{v:.3f}" for v in np.ravel(landmarks)), f"{score:.4f}"]))
    (root / "meta" / f"{variant}_name_5pts_score.txt").write_text("\n".join(lines) + "\n")
    (root / "meta" / f"{variant}_face_tid_mid.txt").write_text(
        "".join(f"{n} {t} {m}\n" for n, t, m in templates)
    )
    (root / "meta" / f"{variant}_template_pair_label.txt").write_text(
        "".join(f"{a} {b} {g}\n" for a, b, g in pairs))  # fmt: skip


@pytest.fixture(scope="module")
def lfw_release(shared_data: Path, tmp_path_factory) -> tuple[Path, list[list[int]]]:
    """8 LFW people, 2 templates each (template 2j: images 4j, 4j+1 as one media, the frames
    of one "video", 4j+1 blurred for even j; template 2j+1: images 4j+2 and a blurred 4j+3, a
    media each), every
    template pair; plus template 99 (person 0) whose only image is missing on disk (its 2 pairs
    left out)."""
    lfw = shared_data / "faces" / "lfw_dev"
    table = pd.read_csv(lfw / "identities.csv")
    counts = table["identity"].value_counts()
    people = sorted(counts[counts >= 4].index)[:N_PEOPLE]
    detector = YuNetDetector()
    root = tmp_path_factory.mktemp("ijb")
    images, templates = [], []
    for j, person in enumerate(people):
        for k, file in enumerate(sorted(table.loc[table["identity"] == person, "file"])[:4]):
            gray = cv2.imread(str(lfw / "images" / file))
            loose = cv2.copyMakeBorder(gray, PAD, PAD, PAD, PAD, cv2.BORDER_CONSTANT)
            found = detector.detect(cv2.cvtColor(loose, cv2.COLOR_BGR2RGB))
            if k == 3 or (k == 1 and j % 2 == 0):
                loose = cv2.GaussianBlur(loose, (0, 0), BLUR)
            assert found is not None, file
            name = f"{4 * j + k + 1}.jpg"
            images.append((name, loose, found.landmarks, found.score))
            tid = 2 * j + (k >= 2)
            templates.append((name, tid, 1000 + (tid if k < 2 else 10 * 4 * j + k)))
    images.append(("999.jpg", None, images[0][2], 0.9))  # listed, absent from loose_crop
    templates.append(("999.jpg", 99, 5000))
    tids = list(range(2 * N_PEOPLE))
    pairs = [(a, b, int(a // 2 == b // 2)) for i, a in enumerate(tids) for b in tids[i + 1 :]]
    pairs += [(0, 99, 1), (99, 3, 0)]
    write_release(root, "ijbc", images, templates, pairs)
    return root, [[4 * (t // 2) + 2 * (t % 2), 4 * (t // 2) + 2 * (t % 2) + 1] for t in tids]


def test_load_ijb_reads_templates_media_and_pairs(lfw_release):
    root, _ = lfw_release
    protocol = load_ijb(root)
    assert protocol.name == "ijbc" and len(protocol.images) == 4 * N_PEOPLE + 1
    assert protocol.missing == ["999.jpg"]
    assert protocol.templates.n_templates == 2 * N_PEOPLE + 1
    assert protocol.templates.template[-1] == -1  # the missing image
    media = protocol.templates.media
    assert media[0] == media[1] and len({media[2], media[3], media[0]}) == 3
    assert len(protocol.pairs) == 120 + 2 and protocol.pairs.n_genuine == N_PEOPLE + 1
    assert protocol.landmarks.shape == (4 * N_PEOPLE + 1, 5, 2)


def hand_template_features(emb: np.ndarray, members, media_of, weights=None) -> np.ndarray:
    """insightface's rule written out: per media the (weighted) unit embeddings summed and
    divided by the media's image count, summed over the media, normalised."""
    weights = np.ones(len(emb)) if weights is None else weights
    feats = []
    for rows in members:
        media: dict[int, list] = {}
        for r in rows:
            media.setdefault(media_of(r), []).append(weights[r] * emb[r])
        total = sum(np.sum(group, axis=0) / len(group) for group in media.values())
        feats.append(total / np.linalg.norm(total))
    return np.array(feats)


def hand_tar(scores: np.ndarray, genuine: np.ndarray, far: float) -> float:
    """TAR with floor(far * N_imp) false accepts allowed (no ties among these scores)."""
    impostor = np.sort(scores[~genuine])
    allowed = int(np.floor(far * impostor.size))
    return float(np.mean(scores[genuine] > impostor[-(allowed + 1)]))


def test_evaluate_on_ijb_equals_a_hand_computation(lfw_release, tmp_path: Path):
    root, members = lfw_release
    run_stage("evaluate", compose_config([
        f"paths.root={tmp_path}", "logger=none", "eval/benchmark=ijb",
        f"eval.benchmark.root={root}", "eval.methods=[sharpness,detector]",
        "eval.benchmark.fars=[5.0e-3,2.0e-2,1.0e-1]",
    ]))  # fmt: skip
    cell = json.loads((tmp_path / "metrics" / "eval.json").read_text())["ijbc"]["sface"]
    assert set(cell) == {"sharpness", "detector", "random", "oracle"}
    # the pairs with template 99 (its image missing) are left out: 8 genuine, 112 impostor
    assert cell["sharpness"]["n_genuine"] == 8 and cell["sharpness"]["n_impostor"] == 112

    aligned = next((tmp_path / "cache" / "aligned").iterdir())
    faces = np.load(aligned / "faces.npy")[: 4 * N_PEOPLE]
    emb = load_fr_model("sface").embed(faces)
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    media = load_ijb(root).templates.media
    upper = np.triu_indices(len(members), 1)
    genuine = (upper[0] // 2) == (upper[1] // 2)
    plain = hand_template_features(emb, members, lambda r: media[r])
    plain_scores = (plain @ plain.T)[upper]
    protocol = load_ijb(root)
    # FMR 1e-3 of 112 impostor pairs allows none: the threshold lies just above the largest
    # (the stage's embeddings are cached as float16: 1e-4 apart from these float32 ones)
    assert cell["oracle"]["threshold"] == pytest.approx(plain_scores[~genuine].max(), abs=1e-4)
    sharpness = baseline_quality("sharpness", faces.__getitem__, len(faces), None)
    qualities = {"sharpness": sharpness, "detector": protocol.det_scores[: 4 * N_PEOPLE]}
    for far in (0.02, 0.1):
        tar = hand_tar(plain_scores, genuine, far)
        assert cell["sharpness"][f"tar@far={far:g}"] == pytest.approx(tar)
        assert cell["oracle"][f"tar@far={far:g}"] == pytest.approx(tar)  # same templates
        for method, values in qualities.items():
            weights = rankdata(values) / len(values)  # percentile ranks in (0, 1]
            aware = hand_template_features(emb, members, lambda r: media[r], weights)
            assert cell[method][f"tar_qaware@far={far:g}"] == pytest.approx(
                hand_tar((aware @ aware.T)[upper], genuine, far)
            )
    assert cell["detector"]["tar_qaware@far=0.02"] < 1  # the hand check above is not vacuous
    # operating points over the 16 templates' qualities (min over their images): 10 % = 1.6
    # templates -> the one lowest is discarded, the threshold is the second lowest
    template_q = np.sort([sharpness[rows].min() for rows in members])
    assert cell["sharpness"]["op@discard=0.1/threshold"] == pytest.approx(template_q[1])
    assert np.isnan(cell["sharpness"]["tar@far=0.005"])  # 112 impostor pairs cannot show it
    assert "tar_qaware@far=0.1" not in cell["oracle"]
    # the blurred frames are the least sharp
    blurred = {4 * j + 3 for j in range(N_PEOPLE)} | {4 * j + 1 for j in range(0, N_PEOPLE, 2)}
    assert set(np.argsort(sharpness)[: len(blurred)]) == blurred


def test_ijb_bad_input_is_named(tmp_path: Path):
    landmarks = np.zeros((5, 2))
    images = [("1.jpg", None, landmarks, 0.9), ("2.jpg", None, landmarks, 0.9)]
    write_release(tmp_path, "ijbb", images, [("1.jpg", 1, 1), ("2.jpg", 2, 2)], [(1, 3, 0)])
    with pytest.raises(
        ValueError, match=r"template_pair_label.txt:1: template_id_2 3 has no image"
    ):
        load_ijb(tmp_path, "ijbb")
    write_release(tmp_path, "ijbb", images, [("1.jpg", 1, 1), ("2.jpg", 2, 2)], [(1, 2, 7)])
    with pytest.raises(ValueError, match=r"template_pair_label.txt:1: label 7 is not 0 or 1"):
        load_ijb(tmp_path, "ijbb")
    write_release(tmp_path, "ijbb", images[:1], [("1.jpg", 1, 1), ("2.jpg", 2, 2)], [(1, 2, 0)])
    with pytest.raises(ValueError, match=r"face_tid_mid.txt:2: image '2.jpg' has no landmarks"):
        load_ijb(tmp_path, "ijbb")
    (tmp_path / "meta" / "ijbb_face_tid_mid.txt").write_text("1.jpg 1\n2.jpg 2\n")
    with pytest.raises(ValueError, match=r"face_tid_mid.txt: 2 fields per line, expected 3"):
        load_ijb(tmp_path, "ijbb")
    with pytest.raises(FileNotFoundError, match=r"ijbc_name_5pts_score.txt not found"):
        load_ijb(tmp_path, "ijbc")
    with pytest.raises(ValueError, match="IJB variant 'ijbd'; choose one of ijbc, ijbb"):
        load_ijb(tmp_path, "ijbd")
