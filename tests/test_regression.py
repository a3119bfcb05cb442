"""dcgan.regression: the results regression of `make test`, portable across CPU kinds and still sharp."""

from __future__ import annotations

import json

import pytest

from dcgan.regression import (BOUND_FLOOR, BOUND_MARGIN, CALIBRATION, Check, Variant, calibrate_from, classify, compare,
                              is_timing, load_calibration, main, report)
from dcgan.results import Result, ResultsRecorder, load_results

from dcgan.paths import REPO_ROOT

BASELINE = REPO_ROOT / "tests" / "notebooks"


def _r(name, value, unit="", chapter="03_x", hardware="cpu A"):
    return Result(chapter, name, value, None, unit, "d", "smoke", hardware, 0)


def test_timing_results_are_not_compared():
    assert is_timing(_r("group_seconds", 0.19, "s")) and is_timing(_r("encode_codes_per_s", 4460, "codes/s"))
    assert is_timing(_r("training_minutes", 0.8, "min")) and is_timing(_r("lsun_scale_minutes", 11.3))
    assert not is_timing(_r("emoji_hash_recall", 0.03)) and not is_timing(_r("stability_dcgan_fid", 3.0, "FID"))


@pytest.mark.parametrize("base, kernel, allv, kind", [
    (60000, [60000, 60000], [60000, 60000, 60000], "exact"),  # a data count
    (0.0200014, [0.0200014], [0.0200014], "exact"),  # init statistics from a seeded draw
    (277.9, [260.1, 281.0], [260.1, 281.0, 300.2], "bounded"),  # an FID of a one-epoch GAN
    (32, [26], [26, 30], "bounded"),  # a count that depends on a trained hash
    ("0/1", ["1/1"], ["1/1"], "shape"),  # a string that depends on training
    (1.5, [1.5], [1.5, 9.0], "exact"),  # moved only with the seed: exact (the baseline's seed is fixed)
])
def test_classify(base, kernel, allv, kind):
    c = classify(_r("x", base), kernel, allv)
    assert c.kind == kind
    if kind == "bounded":
        assert (c.lo, c.hi) == (min(base, *allv), max(base, *allv))


def test_checks_accept_and_refuse():
    exact = Check("exact", 0.02)
    assert exact.accepts(0.020000001) and not exact.accepts(0.0201) and not exact.accepts("0.02")
    assert Check("exact", 69).accepts(69) and not Check("exact", 69).accepts(70)
    b = Check("bounded", 277.9, 260.0, 300.0)
    lo, hi = b.limits()
    assert (lo, hi) == (260.0 - 40 * BOUND_MARGIN, 300.0 + 40 * BOUND_MARGIN)  # calibrated ranges on each side
    assert b.accepts(lo + 1) and b.accepts(hi - 1) and not b.accepts(lo - 1) and not b.accepts(hi + 1)
    assert not b.accepts("x")
    flat = Check("bounded", 10.0, 10.0, 10.0)
    assert flat.limits() == pytest.approx((10.0 - BOUND_FLOOR * 10, 10.0 + BOUND_FLOOR * 10))
    s = Check("shape", "0/1 diverged")
    assert s.accepts("1/1 diverged") and not s.accepts("0/1 oscillated") and not s.accepts(1)
    assert Check("timing", 3.0).accepts(900.0)


def _calibration(baseline, *runs):
    samples = {f"v{i}": (Variant(f"v{i}"), r) for i, r in enumerate(runs)}
    return calibrate_from(baseline, samples, "cpu A [x86 AMX]", {n: "cpu B" for n in samples})


def test_compare_reports_each_kind_with_both_machines():
    base = [_r("n_images", 60000), _r("fid", 277.9, "FID"), _r("verdict", "0/1"), _r("t_seconds", 3.0, "s"),
            _r("gone", 1), _r("diff", 2.0), _r("diff_ci_lo", 1.0), _r("diff_ci_hi", 3.0)]
    other = [_r("n_images", 60000), _r("fid", 260.0, "FID"), _r("verdict", "1/1"), _r("t_seconds", 9.0, "s"),
             _r("gone", 1), _r("diff", 2.5), _r("diff_ci_lo", 1.2), _r("diff_ci_hi", 3.1)]
    cal = _calibration(base, other)
    assert {k: c.kind for k, c in cal.checks.items()} == {
        "03_x/n_images": "exact", "03_x/fid": "bounded", "03_x/verdict": "shape", "03_x/t_seconds": "timing",
        "03_x/gone": "exact", "03_x/diff": "bounded", "03_x/diff_ci_lo": "bounded", "03_x/diff_ci_hi": "bounded"}
    fresh = [_r("n_images", 59999, hardware="cpu C"), _r("fid", 275.0, "FID"), _r("verdict", "0/1"),
             _r("t_seconds", 99.0, "s"), _r("diff", 2.9), _r("diff_ci_lo", 1.0), _r("diff_ci_hi", 2.85), _r("new_one", 1)]
    cmp = compare(base, cal, fresh)
    assert cmp.moved == [("03_x/n_images", "exact", 59999)] and cmp.missing == ["03_x/gone"]
    assert cmp.new == ["03_x/new_one"] and not cmp.ok
    assert cmp.broken == ["03_x/diff = 2.9 lies outside its interval [1.0, 2.85]"]  # each side within its bounds
    text = report(cmp, cal, base, fresh)
    assert "MOVED [exact] 03_x/n_images: expected exactly 60000, got 59999" in text
    assert "baseline on cpu A; this run on cpu C" in text and "MISSING 03_x/gone" in text
    assert "baseline made on cpu A [x86 AMX]" in text
    same = compare(base, cal, other)
    assert same.ok, report(same, cal, base, other)


def test_a_calibration_out_of_date_with_its_baseline_fails():
    base = [_r("n", 1), _r("fid", 3.0)]
    cal = _calibration(base, [_r("n", 1), _r("fid", 3.5)])
    regenerated = [_r("n", 2), _r("fid", 3.0)]  # the baseline was regenerated, the calibration was not
    cmp = compare(regenerated, cal, regenerated)
    assert cmp.uncalibrated == ["03_x/n"] and not cmp.ok
    assert "make regression-calibrate ONLY=03_x" in report(cmp, cal, regenerated, regenerated)


def test_partial_recalibration_keeps_the_other_chapters():
    base = [_r("n", 1, chapter="01_a"), _r("n", 1, chapter="02_b")]
    cal = _calibration(base, [_r("n", 2, chapter="01_a"), _r("n", 1, chapter="02_b")])
    assert cal.checks["01_a/n"].kind == "bounded" and cal.checks["02_b/n"].kind == "exact"
    again = calibrate_from(base, {"w": (Variant("w"), [_r("n", 7, chapter="02_b")])}, "cpu A", previous=cal,
                           chapters={"02_b"})
    assert again.checks["01_a/n"].kind == "bounded" and again.checks["02_b/n"].kind == "bounded"
    assert set(again.runs) == {"v0", "w"}


def test_check_command(tmp_path, capsys):
    for d, v in (("a", 0.50), ("b", 0.52), ("c", 0.9)):
        rec = ResultsRecorder("03_x", "smoke", 0, directory=tmp_path / d)
        rec.record("recall", v, dataset="d")
        rec.record("pairs", 450, dataset="d")
    _calibration(load_results(tmp_path / "a"), load_results(tmp_path / "b")).save(tmp_path / "a" / CALIBRATION)
    assert main(["check", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert "1 exact, 1 bounded by calibration" in capsys.readouterr().out
    assert main(["check", str(tmp_path / "a"), str(tmp_path / "c")]) == 1
    assert "MOVED [bounded] 03_x/recall" in capsys.readouterr().out
    assert main(["check", str(tmp_path / "a"), str(tmp_path / "empty")]) == 1
    assert main(["check", str(tmp_path / "b"), str(tmp_path / "a")]) == 1  # b has no calibration
    assert "make regression-calibrate" in capsys.readouterr().out


# ---------------------------------------------------------------- the committed baseline and its calibration

def test_the_committed_calibration_covers_the_baseline():
    baseline = load_results(BASELINE)
    cal = load_calibration(BASELINE / CALIBRATION)
    cmp = compare(baseline, cal, baseline)
    assert not cmp.uncalibrated, f"recalibrate (make regression-calibrate): {cmp.uncalibrated[:5]}"
    assert cmp.ok, report(cmp, cal, baseline, baseline)
    kinds = {c.kind for c in cal.checks.values()}
    assert {"exact", "bounded"} <= kinds
    assert len(cal.runs) >= 3, "bounds come from at least three calibration runs"
    stale = set(cal.checks) - {f"{r.chapter}/{r.name}" for r in baseline}
    assert not stale, f"calibrated results the baseline no longer has: {sorted(stale)[:5]}"


def test_the_calibration_file_is_plain_json():
    data = json.loads((BASELINE / CALIBRATION).read_text())
    assert set(data) == {"baseline_machine", "runs", "checks"}


def test_a_point_and_its_interval_are_one_family():
    base = [_r("d", 3.4), _r("d_ci_lo", 0.0), _r("d_ci_hi", 7.0)]
    other = [_r("d", 3.7), _r("d_ci_lo", 0.0), _r("d_ci_hi", 7.1)]  # the lower bound happened not to move
    cal = _calibration(base, other)
    assert {c.kind for c in cal.checks.values()} == {"bounded"}
    assert compare(base, cal, [_r("d", 3.5), _r("d_ci_lo", -0.01), _r("d_ci_hi", 7.0)]).ok


# ---------------------------------------------------------------- planted changes: the regression can fail

# Each plant is a real change to the library, made in the chapter's kernel before the chapter imports anything
# (a sitecustomize module on PYTHONPATH), and the results the regression must then report as moved.
PLANTS = {
    "init-std": ("01_architecture", ["01_architecture/init_std"], """
import torch.nn as nn
import dcgan.models as M
_init = M.weights_init
def weights_init(m):  # N(0, 0.03) instead of the paper's N(0, 0.02)
    _init(m)
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(m.weight, 0.0, 0.03)
M.weights_init = weights_init
"""),
    "no-batchnorm": ("01_architecture", ["01_architecture/g_params_64_top512", "01_architecture/guidelines_hold"], """
import torch.nn as nn
import dcgan.models as M
M._norm = lambda cfg, ch: nn.Identity()  # BatchNorm dropped from every layer
"""),
    "dedup-criterion": ("03_deduplication", ["03_deduplication/fashion_mnist_l2_threshold"], """
import dcgan.dedup as D
_pick = D.pick_threshold
D.pick_threshold = lambda curve, target_precision: _pick(curve, 0.8)  # 80% precision instead of the paper's 99%
"""),
    "svm-c-grid": ("04_cifar10_features", ["04_cifar10_features/transfer_pixels_test_accuracy"], """
import sys
import dcgan.features as F
_fit = F.fit_svm
def fit_svm(X, y, Xv, yv, Cs=(1e-4,), *args, **kw):  # the C grid shifted 1000x up
    return _fit(X, y, Xv, yv, [c * 1000 for c in Cs], *args, **kw)
F.fit_svm = sys.modules[_fit.__module__].fit_svm = fit_svm
"""),
}


def _run_smoke(chapter: str, out, monkeypatch, plant: str | None = None, runs=None):
    from dcgan.book import execute_chapters

    if plant is not None:
        site = out / "site"
        site.mkdir(parents=True)
        (site / "sitecustomize.py").write_text(plant)
        monkeypatch.setenv("PYTHONPATH", f"{site}:{REPO_ROOT}")
    else:
        monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))
    monkeypatch.setenv("DCGAN_RUNS", str(runs or out / "runs"))
    # a planted bug may warn (an SVM that no longer converges): its numbers matter here, not its page
    execute_chapters("smoke", out / "results", only=[chapter], stderr_ok=plant is not None)
    return load_results(out / "results")


@pytest.mark.parametrize("chapter", sorted({c for c, _, _ in PLANTS.values()}))
def test_the_regression_fails_on_each_planted_change_and_passes_without(chapter, tmp_path, monkeypatch):
    from dcgan.paths import data_root

    if not (data_root() / "fashion-mnist").exists():
        pytest.skip(f"the offline data is not in {data_root()} (make data)")
    monkeypatch.delenv("DCGAN_RESULTS_DIR", raising=False)
    baseline, cal = load_results(BASELINE), load_calibration(BASELINE / CALIBRATION)
    runs = tmp_path / "runs"  # trained models are shared: no plant here changes training
    clean = _run_smoke(chapter, tmp_path / "clean", monkeypatch, runs=runs)
    cmp = compare(baseline, cal, clean, {chapter})
    assert cmp.ok, report(cmp, cal, baseline, clean)
    for name, (ch, expect, code) in PLANTS.items():
        if ch != chapter:
            continue
        planted = _run_smoke(chapter, tmp_path / name, monkeypatch, code, runs=runs)
        cmp = compare(baseline, cal, planted, {chapter})
        text = report(cmp, cal, baseline, planted)
        assert not cmp.ok, f"planted change {name!r} went unnoticed:\n{text}"
        moved = {k for k, _, _ in cmp.moved}
        print(f"planted {name}: {len(moved)} results moved, e.g. {sorted(moved)[:3]}")
        assert set(expect) <= moved, f"planted change {name!r}: expected {expect} to move\n{text}"
