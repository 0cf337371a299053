"""Operating points (quality thresholds for a discard share or a target FNMR) by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fiqa.core.operating import (
    discard_threshold,
    kept_fnmr,
    operating_points,
    target_threshold,
)

ITEMS = np.arange(1.0, 11.0)  # 10 faces, qualities 1 ... 10
# genuine pairs: pair quality 1 ... 6; at threshold 0.5 the pairs of quality 1 and 3 fail
SCORES = np.array([0.2, 0.9, 0.4, 0.8, 0.7, 0.6])
PAIR_Q = np.arange(1.0, 7.0)


def test_discard_threshold_discards_at_most_the_share():
    assert discard_threshold(ITEMS, 0.2) == 3.0  # faces 1, 2 below it: 20 %
    assert discard_threshold(ITEMS, 0.05) == 1.0  # half a face: none discarded
    assert discard_threshold([1.0, 1.0, 2.0, 3.0], 0.25) == 1.0  # a tie is kept whole


def test_kept_fnmr():
    assert kept_fnmr(SCORES, PAIR_Q, 0.5, 3.0) == 0.25  # pairs 3..6 kept, pair 3 fails
    assert np.isnan(kept_fnmr(SCORES, PAIR_Q, 0.5, 7.0))


@pytest.mark.parametrize(("target", "expected"), [(0.2, 2.0), (0.1, 4.0), (0.5, 1.0)])
def test_target_threshold_is_the_lowest_that_reaches_it(target, expected):
    # best-first FNMR of the kept pairs: 0, 0, 0, 1/4, 1/5, 2/6
    assert target_threshold(SCORES, PAIR_Q, 0.5, target) == expected


def test_target_threshold_unreachable_is_nan():
    assert np.isnan(target_threshold([0.1, 0.2], [1.0, 2.0], 0.5, 0.0))


def test_operating_points_keys_and_values():
    points = operating_points(ITEMS, SCORES, PAIR_Q, 0.5, [0.2], 0.2)
    assert points == {
        "op@discard=0.2/threshold": 3.0,
        "op@discard=0.2/fnmr": 0.25,
        "op@fnmr=0.2/threshold": 2.0,
        "op@fnmr=0.2/discarded": 0.1,  # face 1 of 10 lies below quality 2
    }


def test_fiqa_thresholds_prints_a_methods_points(tmp_path, capsys):
    from fiqa.cli.main import main

    entry = {"fmr": 1e-3, "threshold": 0.5} | operating_points(ITEMS, SCORES, PAIR_Q, 0.5,
                                                               [0.2], 0.2)  # fmt: skip
    path = tmp_path / "eval.json"
    path.write_text(json.dumps({"lfw": {"sface": {"model": entry, "oracle": {"fmr": 1e-3}}}}))
    assert main(["thresholds", str(path)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "model on lfw with sface (comparison threshold 0.5000 at FMR 0.001):",
        "  discard  20.0%: quality < 3.0000  -> FNMR 0.2500",
        "  FNMR <= 0.2: quality < 2.0000 (discards 10.0%)",
    ]
    assert main(["thresholds", str(path), "--method", "serfiq"]) == 1
    assert "no operating points of 'serfiq' in this eval.json; methods with them: model" in (
        capsys.readouterr().err
    )
