"""Tests for dcgan.report: the claims table's verdicts from recorded results."""

import pytest

from dcgan import report
from dcgan.results import ResultsRecorder, load_results


def _rec(tmp_path, chapter, profile="book"):
    return ResultsRecorder(chapter, profile, 0, tmp_path)


def _verdicts(results):
    return {(r["section"], r["claim"][:30]): r["verdict"] for r in report.claim_rows(results)}


def _by_section(results, section, text):
    for r in report.claim_rows(results):
        if r["section"] == section and text in r["claim"]:
            return r
    raise KeyError((section, text))


def test_no_results_means_every_claim_not_run():
    rows = report.claim_rows([])
    assert len(rows) == len(report.CLAIMS) and {r["verdict"] for r in rows} == {"not run"}


def test_stability_verdicts(tmp_path):
    res = _rec(tmp_path, "08_stability")
    for v, fid, osc in (("dcgan", 10.0, "0/3"), ("bn-everywhere", 20.0, "2/3"), ("beta1-0.9", 10.5, "0/3"),
                        ("lr-0.001", 25.0, "0/3")):
        res.record(f"stability_{v}_fid", fid, dataset="fashion-mnist")
        res.record(f"stability_{v}_fid_std", 1.0, dataset="fashion-mnist")
        for k in ("diverged", "mode_collapse"):
            res.record(f"stability_{v}_{k}", "0/3", dataset="fashion-mnist")
        res.record(f"stability_{v}_oscillating", osc, dataset="fashion-mnist")
    results = load_results(tmp_path)
    assert _by_section(results, "§3 (3)", "output")["verdict"] == "reproduced"  # worse FID and oscillating
    assert _by_section(results, "§4", "beta1")["verdict"] == "not reproduced"  # within the spread, stable
    assert _by_section(results, "§4", "0.001")["verdict"] == "partly"  # worse FID only
    assert _by_section(results, "§3 (1)", "pooling")["verdict"] == "not run"
    row = _by_section(results, "§3 (3)", "output")
    assert "stability_bn-everywhere_fid = 20" in row["ours"] and row["behind"] == "fashion-mnist (book)"


def test_stability_verdicts_inconclusive_when_the_reference_collapsed(tmp_path):
    res = _rec(tmp_path, "08_stability")
    for v, fid, collapse in (("dcgan", 400.0, "3/3"), ("bn-everywhere", 300.0, "3/3")):
        res.record(f"stability_{v}_fid", fid, dataset="fashion-mnist")
        res.record(f"stability_{v}_mode_collapse", collapse, dataset="fashion-mnist")
    results = load_results(tmp_path)
    assert _by_section(results, "§3 (3)", "output")["verdict"] == "inconclusive"
    # A reference that mostly converged: back to the usual rule (better FID, but more collapsed runs).
    res.record("stability_dcgan_mode_collapse", "1/3", dataset="fashion-mnist")
    assert _by_section(load_results(tmp_path), "§3 (3)", "output")["verdict"] == "partly"


def test_data_bound_claims_need_the_paper_data(tmp_path):
    res = _rec(tmp_path, "04_cifar10_features")
    res.record("transfer_dcgan_test_accuracy", 82.0, dataset="emoji-64->fashion-mnist", paper=82.8)
    assert _by_section(load_results(tmp_path), "§5.1 Table 1", "DCGAN")["verdict"] == "needs the paper's data"
    res.record("transfer_dcgan_test_accuracy", 82.0, dataset="imagenet32->cifar10", paper=82.8)
    assert _by_section(load_results(tmp_path), "§5.1 Table 1", "DCGAN")["verdict"] == "reproduced"
    res.record("transfer_dcgan_test_accuracy", 70.0, dataset="imagenet32->cifar10", paper=82.8)
    assert _by_section(load_results(tmp_path), "§5.1 Table 1", "DCGAN")["verdict"] == "not reproduced"


def test_mnist_supplement_verdicts(tmp_path):
    res = _rec(tmp_path, "09_mnist_supplement")
    res.record("mnist_nn_error_real", 4.0, dataset="mnist-10k")
    res.record("mnist_nn_error_generated_affine", 9.0, dataset="mnist-10k")
    res.record("mnist_nn_error_generated_noaffine", 6.0, dataset="mnist-10k")
    results = load_results(tmp_path)
    assert _by_section(results, "§8.1", "1-NN")["verdict"] == "partly"  # 6% <= 2 x 4%
    assert _by_section(results, "§8.1", "scale and bias")["verdict"] == "reproduced"
    assert not report.on_paper_data(results[0])  # mnist-10k is a stand-in, not MNIST


def test_results_page_has_claims_and_all_numbers(tmp_path):
    res = _rec(tmp_path, "01_architecture", "smoke")
    res.record("guidelines_hold", 1, dataset="-", paper=1)
    res.record("init_std", 0.05, dataset="-", paper=0.02)
    page = report.write_results_page(tmp_path, tmp_path / "results.md").read_text()
    assert page.startswith("# Results")
    assert "| §3 | The four architecture guidelines" in page and "**reproduced** |" in page
    assert "| §4 | Weights initialised from N(0, 0.02) | std 0.02 | init_std = 0.05 | - (smoke) | **not reproduced** |" in page
    assert "| 01_architecture | init_std | 0.05 | 0.02 |" in page
    assert f"{len(report.CLAIMS) - 2} not run" in page


def test_bad_rule_is_reported():
    bad = (report.Claim("§0", "x", "y", ("*",), lambda f: "maybe"),)
    from dcgan.results import Result

    r = Result("c", "n", 1, None, "", "d", "book", "cpu", 0)
    with pytest.raises(ValueError, match="maybe"):
        report.claim_rows([r], bad)
