"""Tests for dcgan.stability: each ablation variant's construction, the oscillation/collapse measures, the table."""

import json
import math

import pytest
import torch
from torch import nn

from dcgan import metrics as M
from dcgan import stability as S
from dcgan.models import build_models


def _mods(net, kind):
    return [m for m in net.modules() if isinstance(m, kind)]


@pytest.mark.parametrize("name", list(S.VARIANTS))
def test_each_variant_builds_and_breaks_its_guideline(name):
    acfg = S.ablation_config("smoke")
    cfg = S.variant_config(name, acfg, seed=3)
    assert cfg.seed == 3 and cfg.nan_policy == "stop" and cfg.subset == acfg.subset
    G, D = build_models(cfg.model)
    z = torch.rand(4, cfg.model.nz) * 2 - 1
    x = G(z)
    assert x.shape == (4, 1, 32, 32)
    assert D(x).shape == (4,)
    base_g, base_d = build_models(S.variant_config("dcgan", acfg, 3).model)
    if name == "max-pooling":
        assert _mods(D, nn.MaxPool2d) and not _mods(G, nn.ConvTranspose2d)[1:]
    else:
        assert not _mods(D, nn.MaxPool2d)
    if name == "no-batchnorm":
        assert not _mods(G, nn.BatchNorm2d) and not _mods(D, nn.BatchNorm2d)
    if name == "bn-everywhere":
        assert _mods(G.out, nn.BatchNorm2d) and _mods(D.blocks[0], nn.BatchNorm2d)
    else:
        assert not _mods(G.out, nn.BatchNorm2d) and not _mods(D.blocks[0], nn.BatchNorm2d)
    if name == "relu-in-d":
        assert not _mods(D, nn.LeakyReLU) and _mods(D, nn.ReLU)
    else:
        assert _mods(D, nn.LeakyReLU)
    if name == "fc-hidden":
        assert any(m.out_features == acfg.fc_hidden for m in _mods(G, nn.Linear))
        assert any(m.out_features == acfg.fc_hidden for m in _mods(D, nn.Linear))
    else:
        assert not _mods(G, nn.Linear) and not _mods(D, nn.Linear)
    assert cfg.beta1 == (0.9 if name == "beta1-0.9" else 0.5)
    assert cfg.lr == (1e-3 if name == "lr-0.001" else 2e-4)
    if name != "dcgan":  # every variant differs from the DCGAN somewhere
        assert cfg != S.variant_config("dcgan", acfg, 3)


def test_unknown_variant_is_a_clear_error():
    with pytest.raises(KeyError, match="unknown variant"):
        S.variant_config("dropout", S.ablation_config("smoke"), 0)
    with pytest.raises(ValueError, match="unknown variants"):
        S.AblationConfig(variants=("dcgan", "nope"))
    with pytest.raises(ValueError, match="profile"):
        S.ablation_config("huge")


def test_count_rises():
    assert S.count_rises([10, 8, 7, 6]) == 0
    assert S.count_rises([10, 8, 12, 7, 9.5]) == 2  # 8->12 (+50%) and 7->9.5 (+36%)
    assert S.count_rises([10, 8, 9]) == 0  # +12.5% is within the tolerance
    assert S.count_rises([10, math.nan]) == 1


def test_filter_states_tell_dead_filters_from_collapsed_ones():
    """A filter that outputs zero for every z is dead; one that draws the same non-zero map whatever z is collapsed."""
    acfg = S.ablation_config("smoke")
    G, _ = build_models(S.variant_config("dcgan", acfg, 0).model)
    bn = next(m for m in G.blocks[1].modules() if isinstance(m, nn.BatchNorm2d))
    with torch.no_grad():
        bn.weight[:3] = 0  # the map no longer depends on z: BatchNorm's shift alone remains
        bn.bias[:2] = -1.0  # ... negative: ReLU gives 0 everywhere (dead)
        bn.bias[2] = 1.0  # ... positive: the constant 1 (collapsed)
    states = S.filter_states(G, n=64)
    n_filters = bn.weight.shape[0]
    assert len(states) == len(G.blocks)
    assert states[1]["dead"] == pytest.approx(2 / n_filters) and states[1]["collapsed"] == pytest.approx(1 / n_filters)
    assert states[0] == {"dead": 0.0, "collapsed": 0.0}
    assert S.filter_collapse(G, n=64)[1] == pytest.approx(1 / n_filters)  # dead filters are not counted as collapsed


def _row(fid, classes, diverged=False, rises=0):
    return {"fid": fid, "kid": fid / 100, "classes_found": classes, "class_entropy": 0.9, "precision": 0.5,
            "recall": 0.5, "coverage": 0.5, "diverged": diverged, "oscillating": rises > 0,
            "mode_collapse": classes < 8, "rises": rises, "collapsed_filters": [0.0, 0.25]}


def test_summarize_and_table():
    rows = {("dcgan", 0): _row(10, 10), ("dcgan", 1): _row(12, 10), ("lr-0.001", 0): _row(30, 5, True, 2),
            ("lr-0.001", 1): _row(math.nan, 0, True, 1)}
    s = S.summarize(rows)
    assert s["dcgan"]["fid"] == pytest.approx(11) and s["dcgan"]["diverged"] == 0
    assert s["lr-0.001"]["fid"] == 30 and s["lr-0.001"]["diverged"] == 2 and s["lr-0.001"]["oscillating"] == 2
    assert s["lr-0.001"]["mode_collapse"] == 2 and s["dcgan"]["last_layer_collapsed"] == 0.25
    table = S.markdown_table(s, floor={"fid": 1.0, "kid": 0.0, "classes_found": 10, "recall": 0.9})
    assert "| dcgan | - | 11.00 ± 1.41 |" in table and "| 2/2 | 2/2 | 2/2 |" in table
    assert table.count("\n") == 2 + 1 + 2
    assert s["dcgan"]["fid_seeds"] == [10, 12]
    d = S.fid_differences(s)
    assert list(d) == ["lr-0.001"] and d["lr-0.001"][0] == pytest.approx(19)  # the NaN seed is left out
    assert math.isnan(d["lr-0.001"][1])  # one finite seed: no interval
    rows[("lr-0.001", 1)] = _row(34, 5, True, 2)
    diff, lo, hi = S.fid_differences(S.summarize(rows))["lr-0.001"]
    assert diff == pytest.approx(21) and lo < diff < hi


def test_train_and_evaluate_tiny_ablation(tmp_path, monkeypatch):
    """Two variants x one seed, a few steps on a fixture data set: rows, curves and summary come out."""
    d = tmp_path / "data" / "mnist-10k" / "digits"
    d.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    for digit in range(10):
        imgs = torch.rand(12, 28, 28, generator=g) * 0.2
        imgs[:, 2 + 12 * (digit // 5):14 + 12 * (digit // 5), 1 + 5 * (digit % 5):7 + 5 * (digit % 5)] = 1
        (d / f"{digit}.json").write_text(json.dumps({"data": imgs.reshape(12, -1).tolist()}))
    monkeypatch.setenv("DCGAN_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("DCGAN_RUNS", str(tmp_path / "runs"))
    M._EXTRACTORS.clear()
    M._real_features.cache_clear()
    monkeypatch.setattr(M, "classifier_spec", lambda ds, s, p: M.ClassifierSpec(ds, s, subset=None, epochs=1))
    acfg = S.AblationConfig(dataset="mnist-10k", ngf=4, ndf=4, nz=8, fc_hidden=8, batch_size=16, subset=64,
                            epochs=2, seeds=(0,), variants=("dcgan", "lr-0.001"), n_eval=40, n_curve=30, n_real=None)
    runs = S.train_variants(acfg)
    assert set(runs) == {("dcgan", 0), ("lr-0.001", 0)}
    rows = {k: S.evaluate_run(r, acfg, "smoke") for k, r in runs.items()}
    for r in rows.values():
        assert [c["epoch"] for c in r["curve"]] == [1, 2] and r["steps"] == 8
        assert math.isfinite(r["fid"]) and 0 <= r["classes_found"] <= 10
    s = S.summarize(rows)
    assert list(s) == ["dcgan", "lr-0.001"] and s["dcgan"]["runs"] == 1
