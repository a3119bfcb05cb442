"""Stability ablations: does each §3/§4 guideline make training more stable? (§3, §4, §7; chapter 08)

The paper's central claim ("a family of architectures that result in
stable training") is never measured in it. Here the DCGAN and variants that
each break one guideline are trained over several seeds with the same
budget, and every run is scored with :mod:`dcgan.metrics`: FID/KID over
training snapshots, mode collapse (how many classes the domain classifier
finds in the samples), divergence (a non-finite loss ends the run:
``nan_policy="stop"``) and oscillation (FID rising between snapshots).
:func:`filter_collapse` probes §7's remark that long training collapses a
subset of filters to a single mode.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch

from . import metrics as M
from .checkpoints import Run
from .config import TrainConfig, tiny
from .models import ModelConfig, sample_noise
from .timing import phased
from .train import train_many

__all__ = [
    "VARIANTS",
    "AblationConfig",
    "ablation_config",
    "variant_config",
    "train_variants",
    "fid_curve",
    "count_rises",
    "filter_variance",
    "filter_collapse",
    "filter_states",
    "evaluate_run",
    "summarize",
    "markdown_table",
]

# name -> (what changes, the guideline it breaks, TrainConfig overrides; "model" holds ModelConfig fields)
VARIANTS: dict[str, tuple[str, str, dict]] = {
    "dcgan": ("the paper's architecture and optimiser", "-", {}),
    "max-pooling": ("D: conv + max-pool; G: nearest upsampling + conv", "§3 guideline 1", {"model": {"pooling": True}}),
    "no-batchnorm": ("no BatchNorm anywhere", "§3 guideline 3", {"model": {"batchnorm": False}}),
    "bn-everywhere": ("BatchNorm also on G's output and D's input", "§3 guideline 3", {"model": {"bn_everywhere": True}}),
    "relu-in-d": ("ReLU instead of LeakyReLU in D", "§3 guideline 4", {"model": {"d_activation": "relu"}}),
    "fc-hidden": ("a fully connected hidden layer in G and D", "§3 guideline 2", {"model": {"fc_hidden": -1}}),
    "beta1-0.9": ("Adam beta1 = 0.9", "§4 (0.9 oscillated)", {"beta1": 0.9}),
    "lr-0.001": ("learning rate 0.001", "§4 (0.001 too high)", {"lr": 1e-3}),
}


@dataclass(frozen=True)
class AblationConfig:
    """The common scale of every ablation run (one budget for all variants)."""

    dataset: str = "fashion-mnist"
    image_size: int = 32
    channels: int = 1
    nz: int = 64
    ngf: int = 16
    ndf: int = 16
    fc_hidden: int = 256  # width of the fully connected layer of the "fc-hidden" variant
    batch_size: int = 64
    subset: int = 10240  # first-N training images; one "epoch" = subset / batch_size steps = one snapshot
    # 4,800 steps: where the reference DCGAN's FID curve flattens at this width (a 120-epoch run, the gate's
    # reference in dcgan/gate_references.json; at 20 epochs FID still falls by ~25% over the last fifth)
    epochs: int = 30
    seeds: tuple[int, ...] = (0, 1, 2)  # the reference DCGAN's seeds (the quality gate wants 2 of 3 to pass)
    variant_seeds: tuple[int, ...] | None = None  # seeds of every other variant (None: the same as ``seeds``)
    variants: tuple[str, ...] = tuple(VARIANTS)
    n_eval: int = 1000  # samples behind each final metric
    n_curve: int = 500  # samples behind each snapshot's FID
    n_real: int = 2000  # real test images behind every metric
    rise: float = 0.25  # FID rising by more than this share between snapshots counts as one oscillation
    min_classes: int = 8  # fewer classes (of 10) found in the samples counts as mode collapse

    def __post_init__(self) -> None:
        unknown = set(self.variants) - set(VARIANTS)
        if unknown:
            raise ValueError(f"unknown variants {sorted(unknown)}; known: {', '.join(VARIANTS)}")
        if not self.seeds or self.variant_seeds == ():
            raise ValueError("give at least one seed")

    @property
    def other_seeds(self) -> tuple[int, ...]:
        """The seeds of every variant other than the reference DCGAN."""
        return self.seeds if self.variant_seeds is None else self.variant_seeds

    def seeds_of(self, variant: str) -> tuple[int, ...]:
        """The seeds ``variant`` is trained with."""
        return self.seeds if variant == "dcgan" else self.other_seeds

    @property
    def runs(self) -> list[tuple[str, int]]:
        """Every (variant, seed) trained."""
        return [(v, s) for v in self.variants for s in self.seeds_of(v)]

    @property
    def steps(self) -> int:
        return self.epochs * (self.subset // self.batch_size)


def ablation_config(profile: str, **overrides) -> AblationConfig:
    """Per-profile scale: smoke (seconds, one seed), book (~15 CPU minutes), paper (GPU, full nets)."""
    if profile == "smoke":
        base = AblationConfig(ngf=8, ndf=8, nz=32, fc_hidden=64, subset=256, epochs=2, seeds=(0,), n_eval=200,
                              n_curve=100, n_real=300)
    elif profile == "book":
        # 3 seeds of every variant (issue 12: claims about training behaviour rest on >= 3 seeds): 24 runs
        base = AblationConfig()
    elif profile == "paper" and tiny():  # the paper profile's data and code paths at toy scale (tests only)
        base = AblationConfig(dataset="cifar10", channels=3, ngf=8, ndf=8, nz=16, fc_hidden=16, batch_size=8,
                              subset=16, epochs=2, seeds=(0, 1), n_eval=16, n_curve=16, n_real=16)
    elif profile == "paper":
        # CIFAR-10, one of the paper's data sets (§5.1) with the ten classes the mode-collapse count needs
        # (the whole training split, batch 128 as §4, 25 epochs as pytorch/examples' dcgan: ~9,800 steps a run)
        base = AblationConfig(dataset="cifar10", channels=3, nz=100, ngf=64, ndf=64, fc_hidden=1024, batch_size=128,
                              subset=50000, epochs=25, seeds=(0, 1, 2, 3, 4), n_eval=10000, n_curve=2000, n_real=10000)
    else:
        raise ValueError(f"unknown profile {profile!r}; known: smoke, book, paper")
    return AblationConfig(**{**asdict(base), **overrides}) if overrides else base


def variant_config(name: str, acfg: AblationConfig, seed: int) -> TrainConfig:
    """The TrainConfig of one variant and seed (``nan_policy="stop"``: a non-finite loss ends the run)."""
    if name not in VARIANTS:
        raise KeyError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
    over = dict(VARIANTS[name][2])
    model_over = dict(over.pop("model", {}))
    if model_over.get("fc_hidden") == -1:
        model_over["fc_hidden"] = acfg.fc_hidden
    m = ModelConfig(image_size=acfg.image_size, channels=acfg.channels, nz=acfg.nz, ngf=acfg.ngf, ndf=acfg.ndf,
                    **model_over)
    return TrainConfig(acfg.dataset, "train", acfg.image_size, m, epochs=acfg.epochs, subset=acfg.subset,
                       batch_size=acfg.batch_size, seed=seed, nan_policy="stop", **over)


def train_variants(acfg: AblationConfig, progress: bool = False, workers: int | None = None
                   ) -> dict[tuple[str, int], Run]:
    """Train (or load from the run cache) every variant x seed, ``workers`` runs at a time
    (:func:`dcgan.train.train_many`: by default one one-thread process per core torch uses)."""
    keys = acfg.runs
    runs = train_many([variant_config(v, acfg, s) for v, s in keys], progress=progress, workers=workers)
    return dict(zip(keys, runs))


# ------------------------------------------------------------------ measures

def _finite(x: torch.Tensor) -> bool:
    return bool(torch.isfinite(x).all())


def fid_curve(run: Run, fx: M.FeatureExtractor, real_f: torch.Tensor, n: int, seed: int = 0) -> list[dict]:
    """FID and KID of every epoch snapshot of ``run`` (same noise each time); NaN where G's output is not finite
    (:func:`dcgan.metrics.snapshot_curve`)."""
    return M.snapshot_curve(run, fx, real_f, n, seed=seed, kid_subset=min(500, n))


def count_rises(values: list[float], rise: float = 0.25) -> int:
    """How often a curve (e.g. FID over snapshots) goes *up* by more than ``rise`` (a share) in one step.

    A stable run's FID falls or stays; each such rise is one oscillation.
    NaNs (a diverged snapshot) count as a rise.
    """
    n = 0
    for a, b in zip(values[:-1], values[1:]):
        if math.isnan(b) and not math.isnan(a):
            n += 1
        elif not (math.isnan(a) or math.isnan(b)) and b > a * (1 + rise):
            n += 1
    return n


@torch.no_grad()
def filter_variance(G, n: int = 256, seed: int = 0) -> list[torch.Tensor]:
    """Per hidden layer of G, each filter's variance across samples (mean over positions), for n fixed z.

    A filter whose output no longer depends on z (a "collapsed" filter, §7)
    has variance near 0.
    """
    return [a.float().var(0).mean((1, 2)) for a in _hidden_activations(G, n, seed)]


def _hidden_activations(G, n: int, seed: int) -> list[torch.Tensor]:
    """G's hidden maps (not the image) for n fixed z (and balanced labels for a conditional G), eval mode."""
    g = torch.Generator().manual_seed(seed)
    z = sample_noise(G.cfg, n, g)
    y = (torch.arange(n) % G.cfg.n_classes) if G.cfg.n_classes else None
    G.eval()
    return G.activations(z, y)[:-1]  # the last entry is the image


@torch.no_grad()
def filter_states(G, n: int = 256, seed: int = 0, rel: float = 0.01, dead_tol: float = 1e-6) -> list[dict]:
    """Per hidden layer of G, the shares of *dead* and of *collapsed* filters, for n fixed z.

    Dead: the output is zero for every z and position (a ReLU that never
    fires). Collapsed (§7, "collapse a subset of filters to a single
    oscillating mode"): alive, but its output varies across z by less than
    ``rel`` x the median variance of the layer's live filters, so it draws
    one pattern whatever z. The two are counted apart: a dead ReLU is not
    what §7 describes.
    """
    out = []
    for a in _hidden_activations(G, n, seed):
        a = a.float()
        dead = a.abs().amax(dim=(0, 2, 3)) <= dead_tol
        var = a.var(0).mean((1, 2))
        live = var[~dead]
        med = live.median() if len(live) else torch.tensor(0.0)
        collapsed = ~dead & (var <= rel * med) if med > 0 else ~dead
        out.append({"dead": float(dead.float().mean()), "collapsed": float(collapsed.float().mean())})
    return out


def filter_collapse(G, n: int = 256, seed: int = 0, rel: float = 0.01) -> list[float]:
    """Per hidden layer, the share of collapsed filters (alive but independent of z; :func:`filter_states`)."""
    return [s["collapsed"] for s in filter_states(G, n, seed, rel)]


@phased("ablation measures")  # FID curve, final metrics, class counts, filter probes of one run
def evaluate_run(run: Run, acfg: AblationConfig, profile: str, fx: M.FeatureExtractor | None = None) -> dict:
    """One row per run: final metrics, the FID curve, divergence, oscillation, mode collapse, filter collapse."""
    cfg = run.config
    fx = fx or M.feature_extractor(cfg.dataset, cfg.image_size, profile)
    real_f = M.real_features(fx, cfg.dataset, cfg.image_size, "test", acfg.n_real)
    curve = fid_curve(run, fx, real_f, acfg.n_curve)
    row = {"steps": run.steps, "diverged": run.diverged, "curve": curve}
    G = run.generator()
    x = M.sample_images(G, acfg.n_eval, seed=12345)
    if _finite(x):
        row.update(M.evaluate(x, cfg.dataset, cfg.image_size, profile, n_real=acfg.n_real))
        row["collapsed_filters"] = filter_collapse(G)
    else:
        row.update(fid=math.nan, kid=math.nan, classes_found=0, class_entropy=math.nan, precision=math.nan,
                   recall=math.nan, density=math.nan, coverage=math.nan, collapsed_filters=[])
    fids = [c["fid"] for c in curve] + ([row["fid"]] if len(curve) == 0 else [])
    row["rises"] = count_rises(fids, acfg.rise)
    row["oscillating"] = row["rises"] > 0
    row["mode_collapse"] = row["classes_found"] < acfg.min_classes
    m = run.metrics
    tail = m[len(m) // 2:]
    row["loss_g_std_tail"] = float(torch.tensor([r["loss_g"] for r in tail]).std()) if len(tail) > 1 else math.nan
    return row


def _mean_std(xs: list[float]) -> tuple[float, float]:
    xs = [x for x in xs if not math.isnan(x)]
    if not xs:
        return math.nan, math.nan
    t = torch.tensor(xs, dtype=torch.float64)
    return float(t.mean()), float(t.std()) if len(xs) > 1 else 0.0


def summarize(rows: dict[tuple[str, int], dict]) -> dict[str, dict]:
    """Per variant: mean and std over seeds of FID/KID/classes found (and each seed's FID), and counts of
    diverged/oscillating/collapsed runs."""
    out: dict[str, dict] = {}
    for v in dict.fromkeys(k[0] for k in rows):
        rs = [r for (name, _), r in rows.items() if name == v]
        s = {"runs": len(rs)}
        for k in ("fid", "kid", "classes_found", "class_entropy", "precision", "recall", "coverage"):
            s[k], s[k + "_std"] = _mean_std([float(r[k]) for r in rs])
        s["fid_seeds"] = [float(r["fid"]) for r in rs]  # per seed: the comparisons' Welch intervals need them
        for k in ("diverged", "oscillating", "mode_collapse"):
            s[k] = sum(bool(r[k]) for r in rs)
        s["rises"] = sum(r["rises"] for r in rs)
        s["last_layer_collapsed"] = _mean_std([r["collapsed_filters"][-1] for r in rs if r["collapsed_filters"]])[0]
        out[v] = s
    return out


def fid_differences(summary: dict[str, dict], reference: str = "dcgan") -> dict[str, tuple[float, float, float]]:
    """Each variant's mean FID minus the reference's, with the Welch 95 % interval over their seeds
    (:func:`dcgan.intervals.welch_diff_ci`; NaN bounds with fewer than two seeds on a side)."""
    from .intervals import welch_diff_ci

    base = summary[reference]["fid_seeds"]
    out = {}
    for v, s in summary.items():
        if v == reference:
            continue
        a = [f for f in s["fid_seeds"] if math.isfinite(f)]
        out[v] = welch_diff_ci(a, base) if a else (math.nan, math.nan, math.nan)
    return out


def markdown_table(summary: dict[str, dict], floor: dict | None = None) -> str:
    """The chapter's table: one line per variant (and the real-data floor)."""
    head = ("| variant | breaks | FID | KID x 1000 | classes found | recall | diverged | oscillating | "
            "mode collapse |\n|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    if floor is not None:
        lines.append(f"| real test vs train (floor) | - | {floor['fid']:.2f} | {1000 * floor['kid']:.1f} | "
                     f"{floor['classes_found']} | {floor['recall']:.2f} | - | - | - |")
    for v, s in summary.items():
        n = s["runs"]
        lines.append(
            f"| {v} | {VARIANTS[v][1]} | {s['fid']:.2f} ± {s['fid_std']:.2f} | {1000 * s['kid']:.1f} ± "
            f"{1000 * s['kid_std']:.1f} | {s['classes_found']:.1f} | {s['recall']:.2f} | {s['diverged']}/{n} | "
            f"{s['oscillating']}/{n} | {s['mode_collapse']}/{n} |")
    return head + "\n".join(lines) + "\n"
