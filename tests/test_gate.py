"""Tests for dcgan.gate: the reference file, the convergence span, and the gate on a trained and an untrained run."""

from dataclasses import dataclass

import pytest
import torch

from dcgan import gate, metrics
from dcgan.models import ModelConfig
from dcgan.results import ResultsRecorder, load_results
from dcgan.train import TrainConfig, train


@pytest.fixture
def tiny_mnist(tiny_mnist, monkeypatch):
    """conftest's 200-image mnist-10k, with results in its folder and a 4-epoch domain classifier."""
    monkeypatch.setenv("DCGAN_RESULTS_DIR", str(tiny_mnist / "results"))
    monkeypatch.setattr(metrics, "classifier_spec",
                        lambda ds, s, p: metrics.ClassifierSpec(ds, s, subset=None, epochs=4, batch_size=32))
    gate._floor_fid.cache_clear()
    return tiny_mnist


def _cfg(epochs: int, **kw) -> TrainConfig:
    m = ModelConfig(image_size=16, channels=1, nz=16, ngf=16, ndf=16)
    return TrainConfig("mnist-10k", "train", 16, m, epochs=epochs, batch_size=17, precision="fp32", **kw)


def test_gate_key_ignores_length_seed_and_precision_but_not_data_or_architecture():
    a = _cfg(5)
    assert gate.gate_key(a) == gate.gate_key(a.replace(epochs=50, seed=3, precision="bf16", max_steps=7))
    assert gate.gate_key(a) != gate.gate_key(a.replace(lr=1e-3))
    assert gate.gate_key(a) != gate.gate_key(a.replace(model={"ngf": 8}))
    assert gate.gate_key(a) != gate.gate_key(a.replace(dataset="fashion-mnist"))


@pytest.mark.parametrize("epochs, span", [([1, 2, 3, 4, 5], (3, 5)), ([1, 2], (1, 2)), (list(range(1, 21)), (16, 20)),
                                          ([2, 4, 6, 8, 10], (6, 10)), (list(range(1, 81)), (64, 80))])
def test_last_fifth_span_has_at_least_three_snapshots(epochs, span):
    assert gate._last_fifth(epochs) == span


def test_trend_gain_is_the_ratio_for_two_points_and_exact_on_exponential_decay():
    assert gate.trend_gain([(3, 10.0), (5, 8.0)]) == pytest.approx((0.2, 0.2, 0.2))
    decay = [(e, 50 * 0.9 ** e) for e in range(10, 15)]  # 10 % a snapshot: 1 - 0.9**4 over four epochs
    assert gate.trend_gain(decay) == pytest.approx((1 - 0.9 ** 4,) * 3)
    assert gate.trend_gain([(1, 5.0), (2, 6.0), (3, 7.0)])[0] < 0  # rising FID: a negative gain
    with pytest.raises(ValueError, match="two snapshots"):
        gate.trend_gain([(1, 5.0)])


def test_one_noisy_snapshot_does_not_decide_convergence():
    """A flat curve whose first snapshot of the span happens to be high: the two-point ratio says 'still
    improving' (33 %), the robust trend over the span does not."""
    pts = [(16, 3.0), (17, 2.0), (18, 2.05), (19, 1.95), (20, 2.0)]
    assert (pts[0][1] - pts[-1][1]) / pts[0][1] > gate.MAX_GAIN
    assert not gate.still_improving(*gate.trend_gain(pts)[:2])
    # and a curve that keeps falling is still caught
    assert gate.still_improving(*gate.trend_gain([(16, 3.0), (17, 2.8), (18, 2.6), (19, 2.4), (20, 2.2)])[:2])


def test_a_fall_inside_the_noise_is_not_a_failed_convergence_test():
    """Snapshots that jump by +-30 % around a slow fall: a point estimate above 10 %, an interval that
    includes a flat trend, so the run is not called unconverged on noise."""
    pts = [(16, 3.0), (17, 2.0), (18, 3.1), (19, 1.9), (20, 2.4)]
    gain, least, most = gate.trend_gain(pts)
    assert gain >= gate.MAX_GAIN and least <= 0 < most
    assert not gate.still_improving(gain, least)


def test_every_gated_model_builds_under_every_profile():
    for name in gate.GATED_MODELS:
        for profile in ("smoke", "book", "paper"):
            cfg = gate.gated_config(name, profile)
            assert cfg.epochs >= 1
    with pytest.raises(KeyError, match="known"):
        gate.gated_config("nope")


def test_committed_references_match_the_book_configs():
    """A reference in the committed file is for today's book config of its model (else the gate could never pass)."""
    if not gate.REFERENCES_PATH.is_file():
        pytest.skip("no dcgan/gate_references.json committed yet (`make reference` makes it)")
    refs = gate.load_references(gate.REFERENCES_PATH)
    assert refs, "dcgan/gate_references.json holds no reference: run `python -m dcgan reference`"
    for key, ref in refs.items():
        cfg = gate.gated_config(ref.model, ref.provenance["profile"])
        assert gate.gate_key(cfg) == key, f"{ref.model}: the book config changed since its reference was made"
        assert ref.epochs >= 2 * cfg.epochs and ref.fid >= ref.fid_floor
        assert 0 <= ref.precision <= 1 and 0 <= ref.recall <= 1


def test_no_reference_fails_with_the_command_to_make_one(tiny_mnist):
    run = train(_cfg(1, max_steps=2), progress=False)
    r = gate.quality_gate(run, "tiny", "smoke", references={})
    assert not r.passed and "python -m dcgan reference --model tiny --profile smoke" in r.reason


def test_build_reference_trains_other_seeds_longer_and_round_trips(tiny_mnist, monkeypatch):
    """Three seeds the book never trains, each at the snapshot the book's rule chooses, measured as the gate
    measures a run (fresh noise, test images); the plateau is their mean; the feature space is recorded."""
    monkeypatch.setitem(gate.GATED_MODELS, "tiny", lambda p: _cfg(3))
    ref = gate.build_reference("tiny", "smoke", factor=2, n_fake=300, n_real=None, progress=False, require_clean=False)
    assert ref.epochs == 6 and ref.key == gate.gate_key(_cfg(3))
    assert ref.seeds == list(gate.REFERENCE_SEEDS) and [p["seed"] for p in ref.per_seed] == ref.seeds
    assert not set(ref.seeds) & {0, 1, 2}  # never a book seed
    for p in ref.per_seed:
        run = train(_cfg(6, seed=p["seed"]), progress=False)  # the cached reference run
        assert p["epoch"] == gate.select_epoch(run, "smoke", n_fake=300, n_real=None)[0]
        q = gate.sample_quality(run.at(p["epoch"]).generator(), run.config, "smoke", gate.gate_noise_seed(0),
                                n_fake=300, n_real=None)
        assert p["fid"] == pytest.approx(q["fid"]) and [r["epoch"] for r in p["curve"]] == list(range(1, 7))
    assert ref.fid == pytest.approx(sum(p["fid"] for p in ref.per_seed) / 3)
    assert ref.classifier == gate.features_key("mnist-10k", 16, "smoke") and 0 < ref.classifier_accuracy <= 1
    assert ref.fid_abs_limit > ref.fid_floor
    path = gate.write_reference(ref, tiny_mnist / "refs.json")
    assert gate.load_references(path)[ref.key] == ref  # round trip through the JSON file


def test_a_reference_is_never_written_from_uncommitted_code(tmp_path, monkeypatch):
    import subprocess

    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "a.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "a.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "a"], check=True)
    monkeypatch.setattr(gate, "REPO_ROOT", repo)
    assert len(gate._clean_commit()) == 12
    (repo / "a.py").write_text("x = 2\n")
    with pytest.raises(RuntimeError, match=r"(?s)uncommitted changes.*a\.py"):
        gate._clean_commit()
    with pytest.raises(RuntimeError, match="uncommitted"):
        gate.build_references(["fashion-mnist-32"], "smoke")  # refused before any training


class _Memoriser(torch.nn.Module):
    """A 'perfect' generator: each noise vector picks a real training image (the best FID a GAN can reach)."""

    def __init__(self, cfg, images):
        super().__init__()
        self.cfg, self.images = cfg, images
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, z, y=None):
        idx = (z.flatten(1)[:, 0].abs() * 1e6).long() % len(self.images)
        return self.images[idx] + 0 * self.w


@dataclass
class _StubRun:
    """What the gate reads of a run: its config, divergence flag, snapshots and generator."""

    config: TrainConfig
    G: torch.nn.Module
    diverged: bool = False

    def snapshot_epochs(self):
        return list(range(1, 11))

    def generator(self, epoch=None):
        return self.G


def test_gate_passes_a_trained_generator_and_fails_an_untrained_one(tiny_mnist):
    """The decisions, on generators whose quality is known: memorised training images vs an untrained G."""
    from dcgan.data import load_dataset
    from dcgan.models import Generator

    cfg = _cfg(10)
    real = load_dataset("mnist-10k", "train", 16).images.float() / 127.5 - 1
    perfect = _StubRun(cfg, _Memoriser(cfg.model, real))
    torch.manual_seed(0)
    untrained = _StubRun(cfg, Generator(cfg.model))
    flat = [{"epoch": e, "fid": 1.0} for e in range(1, 11)]
    # the reference: a model twice as far from the data as memorisation, with its precision and recall
    fx, real_f = gate._features(cfg, "smoke", None)
    fake_f = gate._fake_features(fx, perfect.G, 300, 0)
    fid0 = metrics.fid(real_f, fake_f)
    p0, r0 = metrics.precision_recall(real_f, fake_f)
    ref = _ref(cfg, fid=2 * fid0 + 1, precision=p0, recall=r0)
    refs = {ref.key: ref}

    trained = gate.quality_gate(perfect, "tiny", "smoke", references=refs, curve=flat)
    untrained = gate.quality_gate(untrained, "tiny", "smoke", references=refs, curve=flat)
    assert trained.passed, trained.summary()
    assert not untrained.passed and not untrained.checks["quality"], untrained.summary()
    assert "FID" in untrained.reason and untrained.fid > 3 * trained.fid
    assert trained.span == (6, 10) and trained.n_trend == 5 and trained.gain == 0.0  # widened to five snapshots
    assert trained.checks["absolute"] and not untrained.checks["absolute"]

    res = ResultsRecorder("02_training", "smoke", 0)
    assert trained.record(res) == 1 and untrained.record(res, "tiny-untrained") == 0
    got = {r.name: r for r in load_results()}
    assert got["tiny_gate"].value == 1 and got["tiny-untrained_gate"].value == 0
    # the limits are results of their own, never in the "paper" column
    assert got["tiny_gate_fid_limit"].value == pytest.approx(gate.FID_RATIO * ref.fid, rel=1e-3)
    assert all(r.paper is None for r in got.values() if r.name.startswith("tiny_gate"))
    assert "tiny_gate_classifier_accuracy" in got and "held-out accuracy" in trained.summary()
    assert "PASS" in trained.summary() and "FAIL" in str(untrained)


def _ref(cfg, fid=1e6, precision=0.0, recall=0.0, **kw) -> "gate.GateReference":
    """A reference in today's feature space, from seeds the tests' runs (seed 0) do not use."""
    kw = {"seeds": [1000, 1001, 1002], "classifier": gate.features_key(cfg.dataset, cfg.image_size, "smoke"), **kw}
    return gate.GateReference("tiny", gate.gate_key(cfg), fid=fid, precision=precision, recall=recall, fid_floor=0.0,
                              n_fake=300, n_real=None, features="x", epochs=12, steps=1, **kw)


@pytest.mark.parametrize("trend, check, words", [(lambda e: 3.0 ** (6 - e), "converged", "not converged"),
                                                  (lambda e: 3.0 ** e, "not degrading", "past its best")])
def test_gate_fails_a_run_still_improving_or_degrading(tiny_mnist, trend, check, words):
    """The convergence test alone, against a reference so weak that quality passes: a FID that still falls
    steeply over the last five snapshots fails, and so does one that rises steeply."""
    run = train(_cfg(6), progress=False)
    curve = gate.snapshot_metrics(run, profile="smoke", n_fake=300, n_real=None)
    fake = [dict(r, fid=r["fid"] * trend(r["epoch"])) for r in curve]
    ref = _ref(run.config, fid_abs_limit=None)
    flat = gate.quality_gate(run, "tiny", "smoke", references={ref.key: ref},
                             curve=[dict(r, fid=1.0) for r in curve])
    assert flat.checks["converged"] and flat.checks["not degrading"]
    gate._abs_limit_fid.cache_clear()
    r = gate.quality_gate(run.at(None), "tiny", "smoke", references={ref.key: ref}, curve=fake, seed=5)
    assert r.span == (2, 6) and r.n_trend == 5
    assert not r.passed and not r.checks[check] and words in r.reason, r.summary()
    assert [k for k, ok in r.checks.items() if not ok] == [check] or not r.checks["absolute"]


def test_gate_refuses_a_reference_from_another_feature_space_or_the_runs_own_seed(tiny_mnist):
    run = train(_cfg(2), progress=False)
    other = _ref(run.config, classifier="mnist-10k-16-0123456789")
    r = gate.quality_gate(run, "tiny", "smoke", references={other.key: other})
    assert not r.passed and "another feature space" in r.reason and "python -m dcgan reference" in r.reason
    own = _ref(run.config, seeds=[0, 1000, 1001])
    r = gate.quality_gate(run, "tiny", "smoke", references={own.key: own})
    assert not r.passed and "own seed" in r.reason
    ok = _ref(run.config)
    assert gate.quality_gate(run, "tiny", "smoke", references={ok.key: ok}).fid is not None


def test_a_corrupt_references_file_is_a_clear_error(tmp_path):
    p = tmp_path / "refs.json"
    p.write_text("{not json")
    with pytest.raises(ValueError, match="python -m dcgan reference"):
        gate.load_references(p)


def test_paper_profile_measures_on_ten_thousand_images():
    assert gate.sample_sizes("paper") == (10_000, 10_000)
    assert gate.sample_sizes("book") == gate.sample_sizes("smoke") == (gate.N_FAKE, gate.N_REAL)


def test_sample_quality_is_the_gates_measure(tiny_mnist):
    """The same numbers as the gate's own FID/precision/recall for the same G, seed and sample sizes."""
    from dcgan.models import Generator

    cfg = _cfg(1)
    torch.manual_seed(0)
    G = Generator(cfg.model)
    q = gate.sample_quality(G, cfg, "smoke")
    fx, real_f = gate._features(cfg, "smoke", gate.N_REAL)
    fake_f = gate._fake_features(fx, G, gate.N_FAKE, 0)
    assert q["fid"] == pytest.approx(metrics.fid(real_f, fake_f)) and (q["n_fake"], q["n_real"]) == gate.sample_sizes("smoke")
    assert (q["precision"], q["recall"]) == pytest.approx(metrics.precision_recall(real_f, fake_f))
    assert gate.sample_quality(G, cfg, "smoke", bn="batch")["fid"] != pytest.approx(q["fid"])


def test_model_selection_picks_the_last_fifth_snapshot_closest_to_the_training_images(tiny_mnist):
    """D is kept over the last fifth of training; the model is the snapshot there with the lowest FID against
    *training* images; Run.at makes that snapshot the run's G and D; a run without D snapshots keeps its end."""
    run = train(_cfg(6), progress=False)
    assert run.discriminator_epochs() == [4, 5, 6] and run.snapshot_epochs() == [1, 2, 3, 4, 5, 6]
    epoch, rows = gate.select_epoch(run, "smoke", n_fake=200, n_real=None)
    assert [r["epoch"] for r in rows] == [4, 5, 6]
    assert epoch == min(rows, key=lambda r: r["train_fid"])["epoch"]
    chosen = gate.book_run(run, "smoke")
    assert chosen.epoch == epoch and run.epoch is None  # a view: the cached run itself is unchanged
    same = lambda a, b: all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))  # noqa: E731
    assert same(chosen.generator(), run.generator(epoch=epoch))
    assert same(chosen.discriminator(), run.discriminator(epoch=epoch))
    assert same(run.at(None).discriminator(), run.discriminator(epoch=6))  # the last snapshot is the final D
    r = gate.quality_gate(chosen, "tiny", "smoke", references={})
    assert r.epoch == epoch
    with pytest.raises(FileNotFoundError, match="no discriminator snapshot for epoch 2"):
        run.discriminator(epoch=2)
    # the choice is stored with the run: a second chapter reads it instead of measuring again
    calls = []
    real_fid = metrics.fid
    try:
        metrics.fid = lambda *a, **k: calls.append(1) or real_fid(*a, **k)
        assert gate.select_epoch(run, "smoke", n_fake=200, n_real=None) == (epoch, rows) and not calls
        gate.select_epoch(run, "smoke", n_fake=200, n_real=None, seed=3)  # another setting: measured
        assert calls
    finally:
        metrics.fid = real_fid
    for p in (run.dir / "snapshots").glob("D_epoch_*.pt"):  # a run from before D snapshots: its final nets
        p.unlink()
    assert gate.select_epoch(run, "smoke") == (None, [])
