"""`evaluate` on external verification benchmarks: insightface .bin and identity folders."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image

from fiqa.config import compose_config
from fiqa.core.align import align_face
from fiqa.data.detect import YuNetDetector
from fiqa.stages.runner import run_stage


def faces_of_two_people(n: int) -> list[tuple[str, np.ndarray]]:
    import matplotlib.cbook

    hopper = np.asarray(Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")))
    people = {"astronaut": skimage.data.astronaut()[:300, 100:400], "hopper": hopper[:400, 50:450]}
    rng = np.random.default_rng(0)
    out = []
    for k in range(n):
        name = ["astronaut", "hopper"][k % 2]
        img = people[name]
        h, w = img.shape[:2]
        m = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-6, 6), rng.uniform(0.9, 1.1))
        img = cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT)
        sigma = [0.1, 1.5, 3.0][k % 3]
        out.append((name, cv2.GaussianBlur(img, (0, 0), sigma)))
    return out


def config(root: Path, *overrides: str):
    return compose_config(
        [
            f"paths.root={root}",
            "logger=none",
            "eval.methods=[serfiq,faceqnet]",  # faceqnet needs prepared labels: skipped
            "label.methods.serfiq.passes=4",
            *overrides,
        ]
    )


def test_bin_benchmark(tmp_path: Path):
    detector = YuNetDetector()
    faces = [align_face(img, detector.detect(img).landmarks) for _, img in faces_of_two_people(8)]
    blobs = [cv2.imencode(".jpg", f[:, :, ::-1])[1].tobytes() for f in faces]
    # pairs (0,1) (2,3) ...: faces alternate between the two people -> impostors; make half genuine
    order = [0, 2, 1, 3, 4, 6, 5, 7, 0, 1, 2, 3, 4, 5, 6, 7]
    issame = [True, True, True, True, False, False, False, False]
    with open(tmp_path / "tiny.bin", "wb") as fh:
        pickle.dump(([blobs[i] for i in order], issame), fh, protocol=4)
    run_stage(
        "evaluate",
        config(tmp_path, "eval/benchmark=bin", f"eval.benchmark.path={tmp_path / 'tiny.bin'}"),
    )
    results = json.loads((tmp_path / "metrics" / "eval.json").read_text())
    methods = results["tiny"]["sface"]
    assert set(methods) == {"serfiq", "random", "oracle"}
    assert methods["serfiq"]["n_genuine"] == 4 and methods["serfiq"]["n_impostor"] == 4
    assert (tmp_path / "plots" / "edc" / "tiny__sface.json").is_file()


def test_identity_folder_benchmark_with_an_unusable_image(tmp_path: Path):
    root = tmp_path / "people"
    for k, (name, img) in enumerate(faces_of_two_people(8)):
        (root / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / name / f"{k}.jpg", quality=95)
    Image.fromarray(skimage.data.rocket()).save(root / "hopper" / "rocket.jpg")  # no face
    summary = run_stage(
        "evaluate",
        config(
            tmp_path,
            "eval/benchmark=folder",
            f"eval.benchmark.root={root}",
            "eval.benchmark.impostors=12",
        ),
    )
    assert summary["eval/people/dropped_images"] == 1.0
    methods = json.loads((tmp_path / "metrics" / "eval.json").read_text())["people"]["sface"]
    # 4 + 4 images per person (+ the rocket, dropped with its pairs): 2 * C(4, 2) genuine pairs
    assert methods["serfiq"]["n_genuine"] == 12
    assert methods["serfiq"]["n_impostor"] <= 12


def test_unknown_method_is_named(tmp_path: Path):
    from fiqa.stages import StageError

    root = tmp_path / "people"
    for k, (name, img) in enumerate(faces_of_two_people(4)):
        (root / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / name / f"{k}.jpg")
    with pytest.raises(StageError, match="unknown method 'magic'"):
        run_stage(
            "evaluate",
            config(
                tmp_path,
                "eval/benchmark=folder",
                f"eval.benchmark.root={root}",
                "eval.methods=[magic]",
            ),
        )
