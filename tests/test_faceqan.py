"""FaceQAN: the score formula by hand, the BIM attack's behaviour, and its extraction product."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fiqa.label import faceqan
from fiqa.label.faceqan import (
    PIXEL_RANGE,
    FaceQanSettings,
    attack_similarities,
    faceqan_batch,
    faceqan_quality,
)


def test_quality_formula_by_hand() -> None:
    # face 0: S all 1 -> q_adv = 1; s_f = 1 -> Q = 1
    # face 1: S = (0.6, 1.0): mean 0.8, std 0.2 -> q_adv = 0.9 * 0.8 = 0.72; s_f = 0.5 -> 0.36^2
    # face 2: a mirror pointing away (s_f < 0) is clipped at 0
    s = np.array([[1.0, 1.0], [0.6, 1.0], [0.9, 0.9]])
    q = faceqan_quality(s, np.array([1.0, 0.5, -0.2]), power=2.0)
    np.testing.assert_allclose(q, [1.0, 0.1296, 0.0])
    # std above 1 clips (1 - std) at 0: S = (-1, 1) has std 1 -> q = 0
    assert faceqan_quality(np.array([[-1.0, 1.0]]), np.array([1.0]), power=5.0)[0] == 0.0
    with pytest.raises(ValueError, match="similarities"):
        faceqan_quality(np.ones(3), np.ones(3), power=5.0)


PAPER = {"eps": 0.001, "iterations": 5, "copies": 10, "power": 5.0, "batch_size": 8}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"eps": 0.0}, "eps"), ({"copies": 1}, "copies"), ({"power": 0.0}, "power")],
)
def test_params_are_checked(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FaceQanSettings(**(PAPER | kwargs))


class _Linear(nn.Module):
    """A linear 'FR model' on 2x2 single-value images: y = W x (flattened)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(12, 4, bias=False)
        torch.nn.init.orthogonal_(self.fc.weight, generator=torch.Generator().manual_seed(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1) / PIXEL_RANGE - 0.5)


def test_attack_moves_embeddings_away_within_the_budget() -> None:
    net = _Linear()
    x = torch.rand(3, 3, 2, 2, generator=torch.Generator().manual_seed(0)) * 200 + 20
    params = FaceQanSettings(**(PAPER | {"eps": 0.002, "iterations": 4, "copies": 5}))
    s, s_f = attack_similarities(net, x, params, torch.Generator().manual_seed(1))
    assert s.shape == (3, 4 * 5) and s_f.shape == (3,)
    per_iteration = s.view(3, 4, 5).mean(dim=2)
    # every BIM step lowers the similarity to the clean embedding
    assert (per_iteration[:, 1:] < per_iteration[:, :-1]).all()
    # the first similarities are of the start noise only: at most eps away from the face
    assert (s[:, :5] > 0.99).all()
    # same seed, same draws; another seed, other draws
    again, _ = attack_similarities(net, x, params, torch.Generator().manual_seed(1))
    other, _ = attack_similarities(net, x, params, torch.Generator().manual_seed(2))
    torch.testing.assert_close(s, again)
    assert not torch.equal(s, other)
    # no weight gradients are left behind
    assert all(p.grad is None for p in net.parameters())


def test_a_long_batch_logs_its_progress_between_attack_passes(monkeypatch, caplog) -> None:
    monkeypatch.setattr(faceqan, "PROGRESS_EVERY_S", 0.0)  # every pass is "long"
    x = torch.rand(5, 3, 2, 2, generator=torch.Generator().manual_seed(0)) * 200 + 20
    params = FaceQanSettings(**(PAPER | {"iterations": 1, "copies": 2, "batch_size": 2}))
    with caplog.at_level("INFO", logger="fiqa.label.faceqan"):
        scores = faceqan_batch(_Linear(), x, params, torch.Generator().manual_seed(1))
    assert scores.shape == (5,)
    # passes of 2, 2 and 1 faces: a line after the first two, none once the batch is done
    assert [r.getMessage().split(",")[0] for r in caplog.records] == [
        "faceqan: 2/5 faces of this batch attacked",
        "faceqan: 4/5 faces of this batch attacked",
    ]
