"""The built-in label methods, registered in computation (and column) order.

Adding a method: write its module (the formula, its settings dataclass, a
``score(ctx, params, outputs)`` function and, if it needs one, a ``BatchProduct``), register it
here, and give its settings values in ``conf/label/common.yaml`` (docs/architecture.md, "Recipes").
"""

from __future__ import annotations

import numpy as np

from fiqa.label.crfiqa import CrFiqaSettings, crfiqa_label
from fiqa.label.diffiqa import METHOD as DIFFIQA
from fiqa.label.diffiqa import DiffiqaProduct, DiffiqaSettings
from fiqa.label.faceqan import FaceQanProduct, FaceQanSettings
from fiqa.label.faceqnet import FaceQnetSettings, faceqnet_label
from fiqa.label.fusion import FusedSettings, fused_inputs, fused_label, fused_range
from fiqa.label.huo import HuoSettings, LowLevelFeatures, huo_label
from fiqa.label.magface import EmbeddingNorm, MagFaceSettings
from fiqa.label.registry import (
    COLUMNS,
    OWN_MODEL,
    LabelMethod,
    product_score,
    register_label_method,
)
from fiqa.label.sddfiqa import SddFiqaSettings, sddfiqa_label
from fiqa.label.serfiq import SerFiqProduct, SerFiqSettings

for _method in (
    LabelMethod("faceqnet", FaceQnetSettings, (0.0, 1.0), blind=False, score=faceqnet_label),
    LabelMethod("serfiq", SerFiqSettings, (0.0, 1.0), blind=True,
                score=product_score("serfiq"), products=(SerFiqProduct,)),
    # CCS / (NNCCS + 1 + eps): finite, unbounded in principle
    LabelMethod("crfiqa", CrFiqaSettings, (-np.inf, np.inf), blind=False, score=crfiqa_label),
    LabelMethod("sddfiqa", SddFiqaSettings, (0.0, 100.0), blind=False, score=sddfiqa_label),
    LabelMethod("magface", MagFaceSettings, (0.0, np.inf), blind=True, score=product_score("norm"),
                products=(EmbeddingNorm,), source=OWN_MODEL),
    LabelMethod("faceqan", FaceQanSettings, (0.0, 1.0), blind=True,
                score=product_score("faceqan"), products=(FaceQanProduct,)),
    # mean of 5 cosines: [-1, 1], near 1 for a face whose embedding the DDPM's changes keep
    LabelMethod(DIFFIQA, DiffiqaSettings, (-1.0, 1.0), blind=True, score=product_score(DIFFIQA),
                products=(DiffiqaProduct,)),
    # eq. 1's S_v is unbounded below; [0, 1] with a normalisation
    LabelMethod("huo", HuoSettings, (-np.inf, 1.0), blind=False, score=huo_label,
                products=(SerFiqProduct, LowLevelFeatures)),
    LabelMethod("fused", FusedSettings, fused_range, blind=False, score=fused_label,
                source=COLUMNS, reads=fused_inputs),
):  # fmt: skip
    register_label_method(_method)
