"""The label-method registry and the computation of method columns (fiqa.label.registry,
fiqa.label.methods, fiqa.label.compute, fiqa.label.table) on hand-made FR outputs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fiqa.config import compose_config
from fiqa.config.labels import label_job, label_settings
from fiqa.config.schemas import Settings
from fiqa.config.validate import load_settings
from fiqa.extract import Extractor, FREntry
from fiqa.label import METHODS, LabelContext, blind_methods, get_method
from fiqa.label.compute import MethodOutputs, method_columns
from fiqa.label.registry import COLUMNS, OWN_MODEL, LabelMethod, register_label_method
from fiqa.label.serfiq import SerFiqProduct
from fiqa.label.table import LabelJob, build_labels


def settings_of(*overrides: str) -> Settings:
    """The typed settings of the default config with ``overrides``."""
    return load_settings(compose_config(list(overrides)))


PARAMS = label_settings(settings_of())


def test_registry_order_and_what_each_method_needs():
    assert list(METHODS) == ["faceqnet", "serfiq", "crfiqa", "sddfiqa", "magface", "faceqan",
                             "diffiqa", "huo", "fused"]  # fmt: skip
    assert blind_methods() == ["serfiq", "magface", "faceqan", "diffiqa"]
    assert [m for m, d in METHODS.items() if d.white_box] == ["serfiq", "faceqan", "huo"]
    assert [m for m, d in METHODS.items() if d.gradients] == ["faceqan"]
    assert METHODS["magface"].source == OWN_MODEL and METHODS["fused"].source == COLUMNS
    assert METHODS["fused"].range_for(PARAMS["fused"]) == (0.0, 1.0)
    raw = type(PARAMS["fused"])(how="none", weights={"serfiq": 1.0})
    assert METHODS["fused"].range_for(raw) == (-np.inf, np.inf)
    with pytest.raises(ValueError, match="unknown label method 'magic'; known: faceqnet"):
        get_method("magic")
    with pytest.raises(ValueError, match="registered twice"):
        register_label_method(METHODS["serfiq"])
    with pytest.raises(ValueError, match="source must be one of"):
        LabelMethod("x", object, (0, 1), True, METHODS["serfiq"].score, source="elsewhere")


def test_products_are_configured_from_the_methods_settings_and_the_seed():
    (product,) = METHODS["serfiq"].request(PARAMS, seed=7).products
    assert product == SerFiqProduct(PARAMS["serfiq"], 7)
    huo = METHODS["huo"].request(PARAMS, seed=7)
    assert [p.name for p in huo.products] == ["serfiq", "low_level"]  # S_r reuses SER-FIQ's


def outputs(**serfiq: list[float]) -> MethodOutputs:
    """Outputs of FR models by name: embedding plus, where given, SER-FIQ scores."""
    per_model = {}
    for name, values in serfiq.items():
        out = {"embedding": np.eye(len(values), 4, dtype=np.float16)}
        per_model[name] = out | ({"serfiq": np.asarray(values)} if values else {})
    return MethodOutputs(per_model=per_model, n_models=len(per_model))


def test_per_model_columns_average_the_models_that_make_the_product():
    ctx = LabelContext(PARAMS, seed=0)
    columns, used = method_columns(METHODS["serfiq"], ctx, outputs(a=[0.2, 0.4], b=[0.4, 0.8],
                                                                   box=[]))  # fmt: skip
    assert used == {"a", "b"}  # the black box "box" makes no SER-FIQ scores
    np.testing.assert_allclose(columns["serfiq"], [0.3, 0.6])
    np.testing.assert_allclose(columns["serfiq@a"], [0.2, 0.4])
    assert set(columns) == {"serfiq", "serfiq@a", "serfiq@b"} and ctx.columns == columns
    single, _ = method_columns(METHODS["serfiq"], ctx, outputs(a=[0.2, 0.4]))
    assert set(single) == {"serfiq"}  # one FR model: no per-model column
    with pytest.raises(ValueError, match=r"label\.methods\.serfiq: needs a PyTorch FR model"):
        method_columns(METHODS["serfiq"], ctx, outputs(box=[]))


def test_fused_combines_earlier_columns_and_identity_methods_need_identities():
    ctx = LabelContext(PARAMS, seed=0, columns={"faceqnet": np.array([0.1, 0.9, 0.5]),
                                                "serfiq": np.array([0.3, 0.2, 0.1])})  # fmt: skip
    columns, used = method_columns(METHODS["fused"], ctx, MethodOutputs())
    # rank-normalised: faceqnet (0, 1, 0.5), serfiq (1, 0.5, 0); weights 0.5 each
    np.testing.assert_allclose(columns["fused"], [0.5, 0.75, 0.25])
    assert used == frozenset()
    with pytest.raises(ValueError, match=r"label\.methods\.crfiqa: crfiqa needs the identities"):
        method_columns(METHODS["crfiqa"], LabelContext(PARAMS, 0), outputs(a=[0.1, 0.2]))


def test_single_image_identities_get_no_identity_based_label_but_blind_ones():
    ids = np.array(["a", "a", "b", "c", "c"])  # b has one image
    ctx = LabelContext(PARAMS, seed=0, identities=ids)
    emb = np.random.default_rng(1).standard_normal((5, 4))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    out = MethodOutputs(per_model={"m": {"embedding": emb.astype(np.float16),
                                         "serfiq": np.full(5, 0.8)}}, n_models=1)  # fmt: skip
    crfiqa, _ = method_columns(METHODS["crfiqa"], ctx, out)
    assert np.isnan(crfiqa["crfiqa"][2]) and np.isfinite(np.delete(crfiqa["crfiqa"], 2)).all()
    serfiq, _ = method_columns(METHODS["serfiq"], ctx, out)
    assert np.isfinite(serfiq["serfiq"]).all()  # blind: every face has its own score
    fused, _ = method_columns(METHODS["fused"], replace(ctx, columns={"faceqnet": crfiqa["crfiqa"],
                              "serfiq": serfiq["serfiq"]}), out)  # fmt: skip
    assert np.isnan(fused["fused"][2]) and np.isfinite(np.delete(fused["fused"], 2)).all()


def test_own_model_methods_read_their_own_outputs():
    ctx = LabelContext(PARAMS, seed=0)
    out = MethodOutputs(own={"magface": {"norm": np.array([21.0, 25.0])}},
                        own_models={"magface": "magface_iresnet100"})  # fmt: skip
    columns, used = method_columns(METHODS["magface"], ctx, out)
    assert columns["magface"].tolist() == [21.0, 25.0] and used == {"magface_iresnet100"}


def test_job_computes_the_target_in_registry_order_and_checks_its_settings():
    job = label_job(settings_of("label=huo", "label.compute=[fused,faceqnet]"))
    assert job.methods == ["faceqnet", "serfiq", "huo", "fused"]  # fused reads serfiq too
    fr = {"sface": FREntry("sface", None, 64, False)}
    with pytest.raises(ValueError, match="unknown label method 'magic'"):
        LabelJob("magic", (), PARAMS, fr, fr["sface"], 0, job.ediffiqa)
    with pytest.raises(ValueError, match="unknown label method 'serfiq\\+boost'"):
        LabelJob("serfiq+boost", (), PARAMS, fr, fr["sface"], 0, job.ediffiqa)
    with pytest.raises(ValueError, match=r"label\.fr_models is empty"):
        LabelJob("serfiq", (), PARAMS, {}, fr["sface"], 0, job.ediffiqa)
    # A fused target computes the columns its weights name; a corrected one its base method.
    fused = label_job(settings_of("label=fused", "label.compute=[]"))
    assert fused.methods == ["faceqnet", "serfiq", "fused"] and fused.corrected == []
    corrected = label_job(settings_of("label.target=huo+ediffiqa", "label.compute=[]"))
    assert corrected.methods == ["serfiq", "huo"]  # Huo's S_r term reads SER-FIQ's settings
    assert corrected.corrected == ["huo+ediffiqa"]


def test_labels_table_columns_corrected_target_and_provenance(tmp_path: Path):
    from fiqa.data.preparation import write_prepared

    rng = np.random.default_rng(0)
    n, ids = 12, [f"id{i % 3}" for i in range(11)] + ["solo"]  # "solo": one image only
    prepared = write_prepared(tmp_path / "p", rng.integers(0, 256, (n, 112, 112, 3), np.uint8), ids)
    emb = rng.standard_normal((n, 8))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    cfg = compose_config(["label.target=crfiqa+ediffiqa", "label.compute=[sddfiqa]"])
    job = label_job(load_settings(cfg))
    ctx = LabelContext.of_prepared(prepared, job.params, job.seed)
    out = MethodOutputs(per_model={"sface": {"embedding": emb.astype(np.float16)}}, n_models=1)
    labels = build_labels(job, prepared, ctx, out, Extractor(tmp_path / "cache", None))
    table = labels.table
    columns = ["crfiqa", "sddfiqa", "crfiqa+ediffiqa"]
    assert list(table.columns) == ["sample_id", "path", "identity", "split", *columns, "quality"]
    # identity-based methods give the single-image identity no label (and so no target)
    solo = table["identity"] == "solo"
    assert table.loc[solo, [*columns, "quality"]].isna().all(axis=None)
    assert table.loc[~solo, [*columns, "quality"]].notna().all(axis=None)
    assert table["quality"].equals(table["crfiqa+ediffiqa"])
    assert table.loc[~solo, "quality"].between(0, 1).all()
    assert not table["quality"].equals(table["crfiqa"])
    assert labels.methods == columns  # the corrected column is reported like a method
    from fiqa.label.report import label_report

    report = label_report(table, labels.methods)
    assert report["n_single_image_identities"] == 1 and report["n_without_quality"] == 1
    assert report["methods"]["crfiqa"]["without_label"] == 1
    assert report["methods"]["crfiqa+ediffiqa"]["without_label"] == 1
    assert set(report["spearman_between_methods"]["crfiqa+ediffiqa"]) == set(columns)
    p = labels.provenance
    assert (p["target"], p["seed"]) == ("crfiqa+ediffiqa", 0)
    assert p["corrected"] == {"crfiqa+ediffiqa": {"base": "crfiqa", "eps": 0.5, "top": 0.2}}
    assert set(p["methods"]) == {"crfiqa", "sddfiqa"} and p["fr_models"]["sface"]["sha256"]
