"""The quality gate: has a trained model learned enough to draw conclusions from it? (§4.1, §7, §8.1)

The paper judges its generators by eye. Every later claim of the book (§5
features, §6 latent space, §7 ablations, §8.1) stands on a trained model, so
a chapter calls :func:`quality_gate` on the run it uses and draws no
conclusion from a model that fails it. The tests compare the run with a
*reference*: the same data, architecture and recipe trained
:data:`REFERENCE_FACTOR` times longer from :data:`REFERENCE_SEEDS`, seeds the
book never trains, so a reference is never the judged run's own continuation.
Its length is fixed by that constant, in code committed before any reference
was trained; references are written only from a clean working tree
(``python -m dcgan reference``, ``make reference``), with the commit, the
domain classifier's key and its held-out accuracy. Each reference seed's
model is chosen by the rule the book's runs use (:func:`select_epoch`: the
snapshot of the last fifth of training closest to the *training* images) and
measured as the gate measures a run (fresh noise, held-out test images); the
plateau is the mean over the seeds.

1. **quality**: FID (domain-classifier features, :mod:`dcgan.metrics`) of
   ``n_fake`` samples against ``n_real`` held-out test images at most
   :data:`FID_RATIO` x the reference's plateau FID;
2. **absolute**: FID below that of real held-out-distribution images blurred
   with a Gaussian of :data:`ABS_BLUR_SIGMA` pixels (:mod:`dcgan.sensitivity`),
   so a model that converged to something bad fails even against a bad
   reference; the real-vs-real floor is reported beside it;
3. **coverage**: precision and recall (k-NN manifolds) at most
   :data:`PR_MARGIN` below the reference's;
4. **convergence**: over the last fifth of training, widened to at least
   :data:`MIN_TREND_POINTS` snapshots, the robust (Theil-Sen) FID trend
   (:func:`trend_gain`) neither fell by :data:`MAX_GAIN` or more outside the
   noise (still improving) nor rose by as much outside the noise (degrading).
5. **yardstick**: the reference was measured in the same feature space (same
   classifier key) and from other seeds than the run.

The samples the gate measures use noise (:func:`gate_noise_seed`) other than
the noise that chose the snapshot, and held-out test images, where the choice
used training images: the selection's luck does not carry into the gate.
The result is recorded in the results registry as ``<model>_gate`` (1 pass,
0 fail) with the numbers beside it (:meth:`GateResult.record`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

import torch

from . import metrics as M
from .paths import REPO_ROOT
from .checkpoints import Run, last_fifth_start
from .config import CODE_VERSION, TrainConfig, preset, tiny
from .train import train

__all__ = [
    "FID_RATIO",
    "PR_MARGIN",
    "MAX_GAIN",
    "REFERENCE_FACTOR",
    "trend_gain",
    "select_epoch",
    "REFERENCE_SEEDS",
    "MIN_TREND_POINTS",
    "ABS_BLUR_SIGMA",
    "build_references",
    "features_key",
    "gate_noise_seed",
    "book_run",
    "still_improving",
    "GATED_MODELS",
    "GateReference",
    "GateResult",
    "gate_key",
    "gated_config",
    "load_references",
    "quality_gate",
    "snapshot_metrics",
    "build_reference",
    "write_reference",
    "REFERENCES_PATH",
]

FID_RATIO = 1.3  # the run's FID may be at most this multiple of the reference plateau
PR_MARGIN = 0.1  # precision and recall may be at most this much below the reference's
MAX_GAIN = 0.10  # converged: over the last fifth of training the fitted FID trend changed by less than this share
MIN_TREND_POINTS = 5  # snapshots behind the convergence trend (the last fifth, widened to this many)
# A reference trains this many times the book's epochs. Fixed (issue 22) before any reference of this kind was
# trained or any gate outcome seen: 2x reaches the plateau in every curve of the earlier seed-0 references
# (fashion-mnist flat from epoch ~8-11 of 20, emoji from ~100 of 160, mnist-cond from ~20 of 80), at half of
# their cost, which pays for three seeds.
REFERENCE_FACTOR = 2
REFERENCE_SEEDS = (1000, 1001, 1002)  # seeds the book never trains: a reference is never the run's continuation
ABS_BLUR_SIGMA = 1.0  # absolute limit: the FID of real images blurred so (dcgan.sensitivity's middle blur level)
GATE_NOISE_OFFSET = 1_000_003  # the gate samples z with seed + this: other noise than the snapshot choice used
N_FAKE = 1000  # samples behind every gate number (FID is biased by sample size: fixed for run and reference)
N_REAL = 2000  # held-out test images behind every gate number
PAPER_N = 10_000  # under `paper`: 10,000 samples against 10,000 test images, the count published FIDs use
TINY_N = 16  # the paper profile at toy scale (dcgan.config.tiny: tests of its code paths on fixture files)


def sample_sizes(profile: str) -> tuple[int, int]:
    """(samples, held-out test images) behind the gate's numbers under ``profile``."""
    if profile == "paper":
        return (TINY_N, TINY_N) if tiny() else (PAPER_N, PAPER_N)
    return (N_FAKE, N_REAL)


def _sizes(profile: str, n_fake: int, n_real: int | None) -> tuple[int, int | None]:
    """``n_fake``/``n_real`` with 0 meaning the profile's :func:`sample_sizes` (``n_real`` None: every image)."""
    default = sample_sizes(profile)
    return n_fake or default[0], default[1] if n_real == 0 else n_real

REFERENCES_PATH = Path(__file__).with_name("gate_references.json")
REFERENCES_ENV = "DCGAN_GATE_REFERENCES"  # an extra file of references (e.g. made for the paper profile)


def _stability(profile: str, seed: int = 0) -> TrainConfig:
    from .stability import ablation_config, variant_config

    return variant_config("dcgan", ablation_config(profile), seed)


# The models the book draws conclusions from: name -> config under a profile.
GATED_MODELS: dict[str, Callable[[str], TrainConfig]] = {
    "fashion-mnist-32": lambda p: preset("fashion-mnist-32", p),
    "emoji-32": lambda p: preset("emoji-32", p),
    "stability-dcgan": _stability,
    "mnist-cond": lambda p: preset("mnist-cond", p),
    "mnist-cond-noaffine": lambda p: preset("mnist-cond-noaffine", p),
}

# What a reference may differ in from the run it judges: length, seed, bookkeeping and precision.
_NOT_IN_KEY = ("epochs", "max_steps", "seed", "sample_every", "ckpt_every", "n_samples", "compile", "precision",
               "deterministic", "nan_policy")


def gate_key(cfg: TrainConfig) -> str:
    """Hash of what a reference must share with a run: data, architecture and recipe (not length or seed)."""
    d = {k: v for k, v in cfg.to_dict().items() if k not in _NOT_IN_KEY}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def gated_config(model: str, profile: str = "book") -> TrainConfig:
    if model not in GATED_MODELS:
        raise KeyError(f"unknown gated model {model!r}; known: {', '.join(GATED_MODELS)}")
    return GATED_MODELS[model](profile)


# ------------------------------------------------------------------ references

@dataclass(frozen=True)
class GateReference:
    """The plateau of long runs from other seeds: what the gate compares a book run with."""

    model: str
    key: str  # gate_key of its config
    fid: float  # plateau: mean over the seeds of the selected snapshot's FID (fresh noise, test images)
    precision: float
    recall: float
    fid_floor: float  # real train vs real test at the same sample sizes
    n_fake: int
    n_real: int
    features: str
    epochs: int
    steps: int
    curve: list = field(default_factory=list)  # [{"epoch", "fid"}]: mean over the seeds (noise seed 0)
    provenance: dict = field(default_factory=dict)
    seeds: list = field(default_factory=list)  # the reference runs' seeds (never a book run's)
    per_seed: list = field(default_factory=list)  # [{seed, run, epoch, fid, precision, recall, gain, curve}]
    classifier: str = ""  # features_key of the feature space it was measured in
    classifier_accuracy: float | None = None  # that classifier's held-out test accuracy
    fid_abs_limit: float | None = None  # FID of blurred real images (ABS_BLUR_SIGMA) at the same sample sizes


def load_references(path: str | Path | None = None) -> dict[str, GateReference]:
    """References by gate key: the committed file, then ``$DCGAN_GATE_REFERENCES`` (later files win)."""
    paths = [Path(path)] if path else [REFERENCES_PATH, *([Path(os.environ[REFERENCES_ENV])]
                                                         if os.environ.get(REFERENCES_ENV) else [])]
    out: dict[str, GateReference] = {}
    for p in paths:
        if not p.is_file():
            continue
        try:
            rows = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"gate references file {p} is not valid JSON ({e}); restore it with git or "
                             "rebuild it with `python -m dcgan reference`") from e
        for r in rows.values():
            ref = GateReference(**r)
            out[ref.key] = ref
    return out


def write_reference(ref: GateReference, path: str | Path = REFERENCES_PATH) -> Path:
    """Add (or replace) ``ref`` in the references file, atomically."""
    import fcntl

    path = Path(path)
    with open(path.with_name(f".{path.name}.lock"), "w") as lock:  # two reference jobs may finish together
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = json.loads(path.read_text()) if path.is_file() else {}
        rows[ref.model] = asdict(ref)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            tmp.write_text(json.dumps(rows, indent=1, sort_keys=True) + "\n")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return path


# ------------------------------------------------------------------ measuring

def _features(cfg: TrainConfig, profile: str, n_real: int, split: str = "test"):
    fx = M.feature_extractor(cfg.dataset, cfg.image_size, profile)
    return fx, M.real_features(fx, cfg.dataset, cfg.image_size, split, n_real)


def _fake_features(fx, G, n_fake: int, seed: int, bn: str = "running") -> torch.Tensor:
    return M.extract_features(fx, M.sample_images(G, n_fake, seed, bn=bn))


def sample_quality(G, cfg: TrainConfig, profile: str = "book", seed: int = 0, bn: str = "running", *,
                   n_fake: int = 0, n_real: int | None = 0) -> dict:
    """FID, precision and recall of ``G``'s samples, as the gate measures them (``n_fake``/``n_real`` 0: the
    profile's :func:`sample_sizes`; ``bn``: BatchNorm's statistics at sampling, see
    :func:`dcgan.metrics.sample_images`)."""
    n_fake, n_real = _sizes(profile, n_fake, n_real)
    fx, real_f = _features(cfg, profile, n_real)
    fake_f = _fake_features(fx, G, n_fake, seed, bn)
    prec, rec = M.precision_recall(real_f, fake_f)
    return {"fid": M.fid(real_f, fake_f), "precision": prec, "recall": rec, "n_fake": n_fake, "n_real": n_real}


def snapshot_metrics(run: Run, epochs: list[int] | None = None, *, pr_epochs: list[int] | None = None,
                     profile: str = "book", n_fake: int = 0, n_real: int | None = 0, seed: int = 0) -> list[dict]:
    """FID of the run's generator at each snapshot epoch (all by default), precision/recall at ``pr_epochs``.

    ``n_fake``/``n_real`` 0: the profile's :func:`sample_sizes` (``n_real`` None: every test image).

    Every epoch is sampled with the same noise (``seed``), so the curve shows
    the model changing, not the sample changing.
    """
    n_fake, n_real = _sizes(profile, n_fake, n_real)
    fx, real_f = _features(run.config, profile, n_real)
    return M.snapshot_curve(run, fx, real_f, n_fake, seed=seed, epochs=epochs, pr_epochs=pr_epochs or ())


def features_key(dataset: str, image_size: int, profile: str) -> str:
    """Names the feature space of every gate number: the domain classifier's cache key (its data, training
    budget and code) or the Inception weights' name. A gate and its reference must share it."""
    fx = M.feature_extractor(dataset, image_size, profile)
    if fx.kind == "domain":
        return M.classifier_spec(dataset, image_size, profile).key()
    return fx.name


def classifier_accuracy(dataset: str, image_size: int, profile: str) -> float | None:
    """Held-out test accuracy of the domain classifier behind the gate's features (None: Inception)."""
    fx = M.feature_extractor(dataset, image_size, profile)
    return float(fx.net.info["test_accuracy"]) if fx.kind == "domain" else None


def gate_noise_seed(seed: int) -> int:
    """The noise seed of the gate's samples: not the one :func:`select_epoch` chose the snapshot with."""
    return seed + GATE_NOISE_OFFSET


@lru_cache(maxsize=16)
def _abs_limit_fid(dataset: str, image_size: int, profile: str, n_fake: int, n_real: int | None) -> float:
    """FID of ``n_fake`` real training images blurred by :data:`ABS_BLUR_SIGMA` pixels against the held-out
    images: the gate's absolute limit (a model must be closer to the data than visibly blurred real images)."""
    from .data import load_dataset
    from .sensitivity import disturb

    fx, real_f = _features_for(dataset, image_size, profile, n_real)
    train_ds = load_dataset(dataset, "train", image_size)
    idx = torch.randperm(len(train_ds), generator=torch.Generator().manual_seed(2))[:n_fake]
    blurred = disturb(train_ds.as_float(idx), "blur", ABS_BLUR_SIGMA)
    return float(M.fid(real_f, M.extract_features(fx, blurred)))


def _features_for(dataset: str, image_size: int, profile: str, n_real: int | None, split: str = "test"):
    fx = M.feature_extractor(dataset, image_size, profile)
    return fx, M.real_features(fx, dataset, image_size, split, n_real)


@lru_cache(maxsize=16)
def _floor_fid(dataset: str, image_size: int, profile: str, n_fake: int, n_real: int) -> float:
    return float(M.real_floor(dataset, image_size, profile, n_fake=n_fake, n_real=n_real)["fid"])


def _last_fifth(epochs: list[int]) -> tuple[int, int]:
    """(first, last) epoch of the span the convergence test looks at: the last fifth of training, widened
    to at least three snapshots where the run has them (a trend needs more than two points)."""
    last = epochs[-1]
    start = last_fifth_start(last)
    # the snapshot at or before that mark
    first = max([e for e in epochs if e <= start] or [epochs[0]])
    if len(epochs) >= 3:
        first = min(first, epochs[-3])
    return first, last


def _trend_span(epochs: list[int]) -> tuple[int, int]:
    """(first, last) epoch of the convergence test: the last fifth of training widened to at least
    :data:`MIN_TREND_POINTS` snapshots where the run has them (fewer points: the trend's interval is too wide
    to catch a run still falling, or rising)."""
    first, last = _last_fifth(epochs)
    if len(epochs) >= MIN_TREND_POINTS:
        first = min(first, epochs[-MIN_TREND_POINTS])
    return first, last


def _selection_key(profile: str, n_fake: int, n_real: int | None, seed: int, fkey: str) -> str:
    return f"{profile}|{n_fake}|{n_real}|{seed}|{fkey}"


def _read_json(path: Path | None) -> dict:
    try:
        return json.loads(path.read_text()) if path is not None and path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}  # a torn or foreign file is recomputed, never trusted


def _write_json_entry(path: Path | None, key: str, value) -> None:
    """Add ``key`` to the JSON object in ``path``, atomically (a read-only run folder is left alone)."""
    if path is None:
        return
    rows = _read_json(path)
    rows[key] = value
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps(rows, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


def select_epoch(run: Run, profile: str = "book", *, n_fake: int = 0, n_real: int | None = 0,
                 seed: int = 0) -> tuple[int | None, list[dict]]:
    """The snapshot a chapter takes as the run's model, and the measurements behind the choice.

    A GAN's quality jumps between epochs even on its plateau (the references' FID curves in chapter 02),
    so the last snapshot may be a bad one. Among the snapshots of the last fifth of training that have
    both G and D, this picks the one whose samples are closest, by FID, to the *training* images: a
    choice made on training data only, so the gate's test-set numbers stay an honest measure of the
    chosen model. Returns (epoch, rows of {epoch, train_fid}); (None, []) for a run with no D snapshots
    (the final nets are then the model) or a diverged run.
    """
    if run.diverged:
        return None, []
    d_epochs = set(run.discriminator_epochs())
    epochs = run.snapshot_epochs()
    if not epochs or not d_epochs:
        return None, []
    first, last = _last_fifth(epochs)
    cands = [e for e in epochs if first <= e <= last and e in d_epochs]
    if len(cands) < 2:
        return (cands[0] if cands else None), []
    n_fake, n_real = _sizes(profile, n_fake, n_real)
    # computed once per run and setting, stored with the run: every chapter that loads it reads the choice
    cache = run.dir / "selection.json"
    key = _selection_key(profile, n_fake, n_real, seed, features_key(run.config.dataset, run.config.image_size,
                                                                     profile))
    hit = _read_json(cache).get(key)
    if hit and hit.get("candidates") == cands:
        return hit["epoch"], hit["rows"]
    fx, real_f = _features(run.config, profile, n_real, split="train")
    rows = [{"epoch": e, "train_fid": M.fid(real_f, _fake_features(fx, run.generator(epoch=e), n_fake, seed))}
            for e in cands]
    best = min(rows, key=lambda r: (r["train_fid"], -r["epoch"]))  # ties: the later snapshot
    _write_json_entry(cache, key, {"epoch": best["epoch"], "rows": rows, "candidates": cands})
    return best["epoch"], rows


def book_run(run: Run, profile: str = "book") -> Run:
    """``run`` with its model at :func:`select_epoch`'s snapshot: what the book's chapters build on."""
    return run.at(select_epoch(run, profile)[0])


def trend_gain(points: list[tuple[int, float]]) -> tuple[float, float, float]:
    """Share by which FID improved over ``points`` ((epoch, FID), >= 2), read off a fitted trend.

    The Theil-Sen line (median of the pairwise slopes, ``scipy.stats.theilslopes``)
    of log FID on epoch: ``gain = 1 - exp(slope * (last - first))``, positive
    when FID fell. Returns ``(gain, least, most)``: the point estimate and the
    gains at the ends of the slope's 95 % interval. With two points it is the
    plain ratio ``(fid_first - fid_last) / fid_first`` (no interval); with more,
    one noisy snapshot (a GAN's FID jumps between epochs) cannot decide it, as it
    decides the ratio of two snapshots or a least-squares line.
    """
    from scipy.stats import theilslopes

    pts = sorted(points)
    if len(pts) < 2:
        raise ValueError("the convergence trend needs at least two snapshots")
    xs = [float(e) for e, _ in pts]
    fit = theilslopes([math.log(max(f, 1e-12)) for _, f in pts], xs)
    g = lambda s: 1.0 - math.exp(float(s) * (xs[-1] - xs[0]))  # noqa: E731
    return g(fit.slope), g(fit.high_slope), g(fit.low_slope)


def still_improving(gain: float, least: float) -> bool:
    """The convergence test's verdict: FID fell by at least :data:`MAX_GAIN` over the span *and* the
    fall is outside the noise (the least-improving end of its 95 % interval is still a fall)."""
    return gain >= MAX_GAIN and least > 0


def degrading(gain: float, most: float) -> bool:
    """FID *rose* by at least :data:`MAX_GAIN` over the span, outside the noise (the most-improving end of
    the trend's 95 % interval is still a rise): a run past its best, which the gate fails too."""
    return gain <= -MAX_GAIN and most < 0


# ------------------------------------------------------------------ the gate

@dataclass
class GateResult:
    """Pass/fail of one model with the numbers and the reason (print it, record it)."""

    model: str
    passed: bool
    reason: str
    dataset: str
    fid: float | None = None
    fid_floor: float | None = None
    precision: float | None = None
    recall: float | None = None
    gain: float | None = None  # FID improvement over the trend span (share, fitted trend; negative: a rise)
    gain_interval: tuple[float, float] | None = None  # (least, most) gain: the trend's 95 % interval
    span: tuple[int, int] | None = None  # the epochs of the convergence test
    reference: GateReference | None = None
    checks: dict = field(default_factory=dict)  # test name -> passed
    epoch: int | None = None  # the snapshot judged (Run.at / select_epoch); None: the final nets
    fid_abs_limit: float | None = None  # FID of blurred real images: the absolute limit
    classifier_accuracy: float | None = None  # held-out accuracy of the classifier whose features measured it
    n_trend: int | None = None  # snapshots behind the convergence trend
    seed: int | None = None  # the run's training seed

    @property
    def fid_limit(self) -> float | None:
        return FID_RATIO * self.reference.fid if self.reference else None

    def record(self, res, name: str | None = None) -> int:
        """``<name>_gate`` (1/0) and its numbers into a :class:`dcgan.results.ResultsRecorder`.

        The limits are results of their own (``_gate_fid_limit`` ...), never the "paper" value: the paper
        has no such number."""
        name = name or self.model
        ref = self.reference
        kw = dict(dataset=self.dataset, claim="quality gate")
        v = res.record(f"{name}_gate", int(self.passed), note=self.reason, **kw)
        for k, val in (("fid", self.fid), ("fid_limit", self.fid_limit), ("fid_abs_limit", self.fid_abs_limit),
                       ("precision", self.precision), ("precision_limit", ref and ref.precision - PR_MARGIN),
                       ("recall", self.recall), ("recall_limit", ref and ref.recall - PR_MARGIN),
                       ("fid_floor", self.fid_floor), ("gain", self.gain), ("epoch", self.epoch),
                       ("classifier_accuracy", self.classifier_accuracy and 100 * self.classifier_accuracy)):
            if val is not None and math.isfinite(val):
                res.record(f"{name}_gate_{k}", round(float(val), 4), unit="%" if k == "classifier_accuracy" else "",
                           **kw)
        return v

    def summary(self) -> str:
        """One paragraph a reader can check: verdict, numbers, limits, reason."""
        head = f"Quality gate for `{self.model}` ({self.dataset}): **{'PASS' if self.passed else 'FAIL'}**"
        if self.reference is None or self.fid is None:
            return f"{head}. {self.reason}"
        r = self.reference
        iv = (f", 95% interval [{100 * self.gain_interval[0]:.1f}%, {100 * self.gain_interval[1]:.1f}%]"
              if self.gain_interval and self.gain_interval[0] != self.gain_interval[1] else "")
        conv = (f"over epochs {self.span[0]}-{self.span[1]} ({self.n_trend} snapshots) the fitted FID trend changed by "
                f"{-100 * self.gain:+.1f}%{iv} (fails at a fall or a rise of {100 * MAX_GAIN:.0f}% or more outside "
                f"the noise)") if self.gain is not None else "no convergence test (one snapshot)"
        head += f" (the snapshot of epoch {self.epoch})" if self.epoch is not None else ""
        acc = (f"Features: {r.features}, held-out accuracy {100 * self.classifier_accuracy:.1f}%. "
               if self.classifier_accuracy is not None else f"Features: {r.features}. ")
        absl = (f", and below {self.fid_abs_limit:.2f}, the FID of real images blurred by {ABS_BLUR_SIGMA:g} px"
                if self.fid_abs_limit is not None else "")
        return (f"{head}. FID {self.fid:.2f} (limit {FID_RATIO} x reference plateau {r.fid:.2f} = {self.fid_limit:.2f}"
                f"{absl}; real-data floor {self.fid_floor:.2f}); precision {self.precision:.3f} (reference "
                f"{r.precision:.3f}, limit {r.precision - PR_MARGIN:.3f}); recall {self.recall:.3f} (reference "
                f"{r.recall:.3f}, limit {r.recall - PR_MARGIN:.3f}); {conv}. {acc}{n_text(r)} {self.reason}")

    def __str__(self) -> str:
        return self.summary().replace("**", "").replace("`", "")


def n_text(r: GateReference) -> str:
    real = "all" if r.n_real is None else f"{r.n_real:,}"
    seeds = f"seeds {', '.join(map(str, r.seeds))}" if r.seeds else "one seed"
    return (f"({r.n_fake:,} samples against {real} held-out images; reference: {len(r.seeds) or 1} runs of "
            f"{r.epochs} epochs ({seeds}), {r.steps:,} steps each.)")


def _measure(run: Run, ref: GateReference, profile: str, seed: int, curve: list[dict] | None) -> dict:
    """The gate's numbers of ``run`` (at its selected snapshot), cached in the run folder by setting: the
    sample quality, and the FID of each snapshot of the trend span (``curve``'s values win where given)."""
    cfg = run.config
    fkey = features_key(cfg.dataset, cfg.image_size, profile)
    epochs = run.snapshot_epochs()
    ep = getattr(run, "epoch", None)
    cache = run.dir / "gate.json" if getattr(run, "dir", None) is not None else None
    key = _selection_key(profile, ref.n_fake, ref.n_real, seed, fkey)
    stored = _read_json(cache).get(key, {})
    qkey = f"epoch={ep}"
    q = stored.get("quality", {}).get(qkey)
    if q is None:
        q = sample_quality(run.generator(), cfg, profile, gate_noise_seed(seed), n_fake=ref.n_fake, n_real=ref.n_real)
        q = {k: q[k] for k in ("fid", "precision", "recall")}
    fids = {int(e): f for e, f in stored.get("snapshot_fid", {}).items()}
    out = {**q, "trend": None}
    if len(epochs) >= 2:
        span = _trend_span(epochs)
        in_span = [e for e in epochs if span[0] <= e <= span[1]]
        have = {**fids, **{r["epoch"]: r["fid"] for r in (curve or [])}}
        missing = [e for e in in_span if e not in have]
        if missing:
            new = {r["epoch"]: r["fid"] for r in snapshot_metrics(run, missing, profile=profile, n_fake=ref.n_fake,
                                                                  n_real=ref.n_real, seed=seed)}
            have.update(new)
            fids.update(new)
        out["trend"] = {"span": list(span), "points": [[e, have[e]] for e in in_span]}
    _write_json_entry(cache, key, {"quality": {**stored.get("quality", {}), qkey: q},
                                   "snapshot_fid": {str(e): f for e, f in sorted(fids.items())}})
    return out


def quality_gate(run: Run, model: str | None = None, profile: str = "book", *, curve: list[dict] | None = None,
                 references: dict[str, GateReference] | None = None, seed: int = 0) -> GateResult:
    """Judge ``run`` against the reference of its data, architecture and recipe.

    ``model`` names it in the result (default: the reference's name);
    ``curve`` reuses FID per epoch already computed with
    :func:`snapshot_metrics` (same n_fake, n_real, seed) for the convergence
    trend. ``seed`` is the chapter's sampling seed; the gate's own samples
    use :func:`gate_noise_seed` of it. Never raises for a weak model: a
    failing gate is a result.
    """
    cfg = run.config
    refs = load_references() if references is None else references
    ref = refs.get(gate_key(cfg))
    name = model or (ref.model if ref else f"{cfg.dataset}-{cfg.image_size}")
    ep = getattr(run, "epoch", None)
    base = dict(reference=ref, epoch=ep, seed=cfg.seed)
    if run.diverged:
        return GateResult(name, False, "The run diverged (a non-finite loss ended it).", cfg.dataset, **base)
    if ref is None:
        return GateResult(name, False, f"No gate reference for this data, architecture and recipe (gate key "
                          f"{gate_key(cfg)}) under profile '{profile}': train one with `python -m dcgan reference "
                          f"--model {name} --profile {profile}`.", cfg.dataset, **base)
    fkey = features_key(cfg.dataset, cfg.image_size, profile)
    acc = classifier_accuracy(cfg.dataset, cfg.image_size, profile)
    if ref.classifier != fkey:
        return GateResult(name, False, f"The reference was measured in another feature space (classifier "
                          f"{ref.classifier or 'unrecorded'}, now {fkey}): its numbers do not compare with this "
                          f"run's. Rebuild it with `python -m dcgan reference --model {ref.model} --profile {profile}`.",
                          cfg.dataset, classifier_accuracy=acc, **base)
    if cfg.seed in (ref.seeds or [ref.provenance.get("seed")]):
        return GateResult(name, False, f"The reference includes a run of this run's own seed ({cfg.seed}): it would "
                          f"judge the run by its own continuation. Train the book run with another seed, or the "
                          f"reference with seeds other than {cfg.seed}.", cfg.dataset, classifier_accuracy=acc, **base)
    m = _measure(run, ref, profile, seed, curve)
    fid_now, prec, rec = m["fid"], m["precision"], m["recall"]
    floor = _floor_fid(cfg.dataset, cfg.image_size, profile, ref.n_fake, ref.n_real)
    abs_limit = _abs_limit_fid(cfg.dataset, cfg.image_size, profile, ref.n_fake, ref.n_real)
    gain = span = least = most = None
    n_trend = None
    if m["trend"]:
        span, pts = tuple(m["trend"]["span"]), [tuple(p) for p in m["trend"]["points"]]
        gain, least, most = trend_gain(pts)
        n_trend = len(pts)
    checks = {
        "quality": fid_now <= FID_RATIO * ref.fid,
        "absolute": fid_now <= abs_limit,
        "precision": prec >= ref.precision - PR_MARGIN,
        "recall": rec >= ref.recall - PR_MARGIN,
        "converged": gain is None or not still_improving(gain, least),
        "not degrading": gain is None or not degrading(gain, most),
    }
    why = {
        "quality": f"FID {fid_now:.2f} is above {FID_RATIO} x the reference plateau ({FID_RATIO * ref.fid:.2f})",
        "absolute": f"FID {fid_now:.2f} is above {abs_limit:.2f}, the FID of real images blurred by "
                    f"{ABS_BLUR_SIGMA:g} px (the samples are further from the data than visibly blurred images)",
        "precision": f"precision {prec:.3f} is more than {PR_MARGIN} below the reference's {ref.precision:.3f}",
        "recall": f"recall {rec:.3f} is more than {PR_MARGIN} below the reference's {ref.recall:.3f}",
        "converged": f"the FID trend still improved by {100 * (gain or 0):.1f}% over the span, outside the noise "
                     f"(95% interval from {100 * (least or 0):.1f}%; not converged)",
        "not degrading": f"the FID trend rose by {-100 * (gain or 0):.1f}% over the span, outside the noise "
                         f"(95% interval to {-100 * (most or 0):.1f}%; the run is past its best)",
    }
    failed = [k for k, ok in checks.items() if not ok]
    reason = ("Every test passed." if not failed else "Failed: " + "; ".join(why[k] for k in failed) + ".")
    return GateResult(name, not failed, reason, cfg.dataset, fid_now, floor, prec, rec, gain,
                      None if gain is None else (least, most), span, ref, checks, ep, abs_limit, acc, n_trend,
                      cfg.seed)


# ------------------------------------------------------------------ references

def _clean_commit() -> str:
    """The commit of the code, refusing a working tree with uncommitted changes to tracked files: a reference
    records the code that made it, and "+uncommitted changes" names no code anyone can check out."""
    import subprocess

    git = ["git", "-C", str(REPO_ROOT)]
    try:
        commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        raise RuntimeError(f"cannot read the code's git commit ({e}); references are made from a git checkout") from e
    if not commit:
        raise RuntimeError(f"{REPO_ROOT} is not a git checkout; references are made from a clean checkout of the code")
    if dirty:
        raise RuntimeError("the working tree has uncommitted changes to tracked files:\n" + dirty +
                           "\ncommit (or stash) them first: a reference records the commit of the code that made it")
    return commit[:12]


def build_references(models: list[str], profile: str = "book", factor: int = REFERENCE_FACTOR, *,
                     seeds: tuple[int, ...] = REFERENCE_SEEDS, n_fake: int = 0, n_real: int | None = 0,
                     progress: bool = True, runs: str | Path | None = None,
                     require_clean: bool = True) -> list[GateReference]:
    """Train each model's config ``factor`` times longer from each of ``seeds`` (all runs at once, one process
    per core: :func:`dcgan.train.train_many`), choose each run's snapshot as the book does, measure it as the
    gate measures a run, and return one reference per model: the mean over the seeds.

    ``require_clean``: refuse a working tree with uncommitted changes (the tests' throw-away references set it
    False). ``n_fake``/``n_real`` 0: the profile's :func:`sample_sizes`.
    """
    from .provenance import hardware
    from .train import train_many

    commit = _clean_commit() if require_clean else None
    if len(seeds) < 1:
        raise ValueError("a reference needs at least one seed (the book uses three)")
    n_fake, n_real = _sizes(profile, n_fake, n_real)
    bases = {m: gated_config(m, profile) for m in models}
    cfgs = {m: [b.replace(epochs=b.epochs * factor, max_steps=None, seed=s) for s in seeds] for m, b in bases.items()}
    t0 = time.time()
    flat = train_many([c for cs in cfgs.values() for c in cs], runs_root=runs, progress=progress)
    out, i = [], 0
    for model, cs in cfgs.items():
        runs_m, i = flat[i:i + len(cs)], i + len(cs)
        cfg = cs[0]
        per = []
        for run in runs_m:
            if run.diverged:
                raise RuntimeError(f"reference run {run.dir} of {model} diverged; a reference must be a trained model")
            epoch, _ = select_epoch(run, profile, n_fake=n_fake, n_real=n_real)
            at = run.at(epoch)
            q = sample_quality(at.generator(), cfg, profile, gate_noise_seed(0), n_fake=n_fake, n_real=n_real)
            curve = snapshot_metrics(run, profile=profile, n_fake=n_fake, n_real=n_real)
            span = _trend_span([r["epoch"] for r in curve])
            g = trend_gain([(r["epoch"], r["fid"]) for r in curve if span[0] <= r["epoch"] <= span[1]])
            per.append({"seed": run.config.seed, "run": run.dir.name, "epoch": epoch, "fid": q["fid"],
                        "precision": q["precision"], "recall": q["recall"], "gain": g[0], "gain_interval": list(g[1:]),
                        "still_improving": still_improving(g[0], g[1]),
                        "train_seconds": run.info.get("seconds_last_session"),
                        "curve": [{"epoch": r["epoch"], "fid": r["fid"]} for r in curve]})
        mean = lambda k: sum(p[k] for p in per) / len(per)  # noqa: E731
        epochs = sorted({r["epoch"] for p in per for r in p["curve"]})
        curve = [{"epoch": e, "fid": sum(r["fid"] for p in per for r in p["curve"] if r["epoch"] == e) / len(per)}
                 for e in epochs]
        fx_name = M.feature_extractor(cfg.dataset, cfg.image_size, profile).name
        out.append(GateReference(
            model=model, key=gate_key(bases[model]), fid=mean("fid"), precision=mean("precision"),
            recall=mean("recall"), fid_floor=_floor_fid(cfg.dataset, cfg.image_size, profile, n_fake, n_real),
            n_fake=n_fake, n_real=n_real, features=fx_name, epochs=runs_m[0].epochs_done, steps=runs_m[0].steps,
            curve=curve, seeds=list(seeds), per_seed=per,
            classifier=features_key(cfg.dataset, cfg.image_size, profile),
            classifier_accuracy=classifier_accuracy(cfg.dataset, cfg.image_size, profile),
            fid_abs_limit=_abs_limit_fid(cfg.dataset, cfg.image_size, profile, n_fake, n_real),
            provenance={"command": f"python -m dcgan reference --model {model} --profile {profile} --factor {factor}",
                        "profile": profile, "factor": factor, "book_epochs": bases[model].epochs,
                        "length_rule": "REFERENCE_FACTOR x the book's epochs, a constant of dcgan/gate.py committed "
                                       "before these references were trained",
                        "selection": "dcgan.gate.select_epoch per seed (the book's rule); measured with "
                                     "gate_noise_seed(0) on the held-out test images; plateau = mean over seeds",
                        "config": cfg.to_dict(), "code_version": CODE_VERSION, "commit": commit,
                        "hardware": hardware(), "torch": torch.__version__,
                        "precision": runs_m[0].info.get("precision"), "seeds": list(seeds),
                        "wall_seconds_all_models": round(time.time() - t0, 1), "date": time.strftime("%Y-%m-%d")}))
    return out


def build_reference(model: str, profile: str = "book", factor: int = REFERENCE_FACTOR, **kw) -> GateReference:
    """:func:`build_references` of one model."""
    return build_references([model], profile, factor, **kw)[0]
