"""The semi-supervised protocols of §5.1 and §5.2: which labels a classifier sees, and how C is chosen.

* :func:`semi_supervised_split`: a held-out validation split and a class-balanced labelled subset
  disjoint from it (§5.2's 1000 labels);
* :func:`fit_svm`: an L2-SVM (:class:`dcgan.svm.LinearL2SVM`, or scikit-learn's ``LinearSVC``) per C,
  the best C on validation (:class:`SVMResult`);
* :func:`authors_svhn_protocol`: §5.2 as the authors' analysis script runs it (C on the mean
  validation error over label draws, then the test error over many fresh draws; :class:`DrawsResult`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from .progress import bar as progress_bar
from .svm import LinearL2SVM, _decisions, _predict_from
from .timing import phased

__all__ = ["semi_supervised_split", "label_draws", "SVMResult", "fit_svm", "AUTHORS_CS", "DrawsResult", "authors_svhn_protocol"]


def semi_supervised_split(
    labels: np.ndarray | torch.Tensor,
    n_labels: int = 1000,
    n_val: int = 10_000,
    *,
    seed: int = 0,
    val_seed: int = 0,
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """§5.2: a validation split and a class-balanced labelled subset disjoint from it.

    The validation split (``n_val`` indices, drawn with ``val_seed``, so it is
    the same for every label draw) is held out of the training set; then
    ``n_labels / n_classes`` examples of each class are drawn with ``seed``
    from what is left. ``exclude`` marks indices that may be in neither (e.g.
    a test split stored in the same array). Returns ``(labelled, val)``
    index arrays (sorted).
    """
    y = np.asarray(labels)
    classes = np.unique(y)
    if n_labels % len(classes):
        raise ValueError(f"n_labels={n_labels} is not divisible by the {len(classes)} classes; "
                         "use a multiple so the labelled set is class-balanced")
    pool = np.ones(len(y), dtype=bool)
    if exclude is not None:
        pool[np.asarray(exclude, dtype=np.int64)] = False
    avail = np.flatnonzero(pool)
    if n_val + n_labels > len(avail):
        raise ValueError(f"need {n_val} validation + {n_labels} labelled examples but only {len(avail)} are available")
    val = np.sort(np.random.default_rng(val_seed).choice(avail, size=n_val, replace=False))
    pool[val] = False
    lab = _class_balanced_draw(y, n_labels // len(classes), np.random.default_rng(seed), classes=classes,
                               allowed=pool, where="outside the validation split")
    return np.sort(lab), val


def label_draws(labels: np.ndarray | torch.Tensor, per_class: int, n_draws: int, *, seed: int = 0) -> list[np.ndarray]:
    """``n_draws`` class-balanced labelled subsets of ``labels`` (positions into it), ``per_class`` of each
    class, draw ``i`` made with seed ``(seed, i)``: a few-label budget whose label-draw noise is measured
    over the draws. The same draws serve every representation, so their comparisons are paired."""
    y = np.asarray(labels)
    if per_class < 1 or n_draws < 1:
        raise ValueError(f"need at least 1 label per class and 1 draw, got {per_class} per class and {n_draws} draws")
    return [np.sort(_class_balanced_draw(y, per_class, np.random.default_rng([seed, i]),
                                         where="in the labelled training split")) for i in range(n_draws)]


def _class_balanced_draw(y: np.ndarray, per_class: int, rng: np.random.Generator, *, classes=None,
                         allowed: np.ndarray | None = None, where: str = "in the labelled pool") -> np.ndarray:
    """``per_class`` indices of each class (default: every class in ``y``), drawn without replacement among
    the ``allowed`` positions (a boolean mask; default: all), class by class in order."""
    out = []
    for c in (np.unique(y) if classes is None else classes):
        cand = np.flatnonzero((y == c) if allowed is None else allowed & (y == c))
        if len(cand) < per_class:
            raise ValueError(f"class {c} has only {len(cand)} examples {where}, need {per_class}")
        out.append(rng.choice(cand, size=per_class, replace=False))
    return np.concatenate(out)


@dataclass
class SVMResult:
    """A linear L2-SVM fitted on standardised features, C chosen by validation accuracy."""

    C: float
    val_acc: dict[float, float]
    model: object = field(repr=False)  # LinearL2SVM (or a Pipeline(StandardScaler, LinearSVC) for solver="liblinear")
    fit_seconds: float = 0.0
    fits: dict = field(default_factory=dict)  # step -> wall s, CPU s, iterations (per C), certified gap

    def accuracy(self, X: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean(self.predict(X) == np.asarray(y)))

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.model.predict(X if isinstance(self.model, LinearL2SVM) else _chunks_f32(X))

    def summary(self) -> str:
        """One entry per fit: iterations, wall and CPU seconds (CPU / wall ~ the cores kept busy)."""
        return "; ".join(f"{k}: {v['iters']} it, {v['wall']:.1f}s wall, {v['cpu']:.1f}s CPU" for k, v in self.fits.items())


def _chunks_f32(X: np.ndarray) -> np.ndarray:
    return X if X.dtype == np.float32 else X.astype(np.float32)


def _liblinear(C: float, max_iter: int, seed: int, tol: float = 1e-3):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    return make_pipeline(StandardScaler(), LinearSVC(C=C, loss="squared_hinge", penalty="l2", dual="auto",
                                                     tol=tol, max_iter=max_iter, random_state=seed))


def _fit_liblinear(C: float, X, y, *, tol: float, max_iter: int, seed: int):
    """scikit-learn's LinearSVC; its ConvergenceWarning is re-raised with the C that caused it."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        m = _liblinear(C, max_iter, seed, tol).fit(_chunks_f32(X), y)
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            warnings.warn(f"LinearSVC with C={C:g} did not converge in max_iter={max_iter}: {w.message}",
                          ConvergenceWarning, stacklevel=3)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return m


@phased("SVM fitting")
def fit_svm(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    Cs: Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1),
    *,
    refit_on_val: bool = False,
    solver: str = "lbfgs",
    max_iter: int | None = None,
    tol: float | None = None,
    seed: int = 0,
    threads: int | None = None,
) -> SVMResult:
    """Fit a linear L2-SVM (squared hinge) on standardised features per C; keep the best C on validation.

    ``solver="lbfgs"`` (default): :class:`LinearL2SVM`, every C solved together (``tol`` 1e-4: each
    objective certified within 0.01 % of its optimum); the refit starts from the chosen C's solution.
    ``solver="liblinear"``: scikit-learn's ``LinearSVC`` per C (single-threaded; ``tol`` 1e-3), the
    reference. Ties in validation accuracy go to the smallest C. ``refit_on_val``: refit the chosen C
    on train + validation (§5.1 uses all training labels; §5.2 keeps validation for model selection
    only). Non-convergence is never silenced: it is a ``ConvergenceWarning`` naming the C.
    """
    if solver not in ("lbfgs", "liblinear"):
        raise ValueError(f"solver must be 'lbfgs' or 'liblinear', got {solver!r}")
    if len(X_train) != len(y_train) or len(X_val) != len(y_val):
        raise ValueError("features and labels differ in length")
    if not len(Cs):
        raise ValueError("Cs is empty: give at least one regularisation constant")
    tol = (1e-4 if solver == "lbfgs" else 1e-3) if tol is None else tol
    max_iter = 1000 if max_iter is None else max_iter
    Cs = sorted(float(c) for c in Cs)
    y_val = np.asarray(y_val)
    t0 = time.perf_counter()
    fits: dict = {}
    w, c = time.perf_counter(), time.process_time()
    if solver == "lbfgs":
        models = LinearL2SVM(tol=tol, max_iter=max_iter, threads=threads).fit_path(X_train, y_train, Cs)
        preds = [_predict_from(m, z) for m, z in zip(models, _decisions(models, X_val))]
        fits[f"path over {len(Cs)} C"] = dict(wall=time.perf_counter() - w, cpu=time.process_time() - c,
                                              iters=[m.n_iter_ for m in models], gap=max(m.gap_ for m in models))
    else:
        models, preds = [], []
        for C in Cs:
            w, c = time.perf_counter(), time.process_time()
            models.append(_fit_liblinear(C, X_train, y_train, tol=tol, max_iter=max_iter, seed=seed))
            preds.append(models[-1].predict(_chunks_f32(X_val)))
            fits[f"C={C:g}"] = dict(wall=time.perf_counter() - w, cpu=time.process_time() - c,
                                    iters=int(np.max(models[-1][-1].n_iter_)), gap=float("nan"))
    scores = {C: float(np.mean(p == y_val)) for C, p in zip(Cs, preds)}
    best = max(Cs, key=lambda C: (scores[C], -C))  # ties: the smallest C
    best_model = models[Cs.index(best)]
    if refit_on_val:
        w, c = time.perf_counter(), time.process_time()
        Xa, ya = np.concatenate([X_train, X_val]), np.concatenate([y_train, y_val])
        if solver == "lbfgs":
            best_model = LinearL2SVM(C=best, tol=tol, max_iter=max_iter, threads=threads).fit(Xa, ya, init=best_model)
            iters, gap = best_model.n_iter_, best_model.gap_
        else:
            best_model = _fit_liblinear(best, Xa, ya, tol=tol, max_iter=max_iter, seed=seed)
            iters, gap = int(np.max(best_model[-1].n_iter_)), float("nan")
        fits[f"refit C={best:g}"] = dict(wall=time.perf_counter() - w, cpu=time.process_time() - c, iters=iters, gap=gap)
    return SVMResult(best, scores, best_model, time.perf_counter() - t0, fits)


# The C values the authors' SVHN analysis script (Newmu/dcgan_code, svhn/svhn_semisup_analysis.py) tries.
AUTHORS_CS = (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2)


@dataclass
class DrawsResult:
    """§5.2 by the authors' protocol: C chosen on mean validation error over label draws, then many test draws.

    Errors are in percent; ``val_by_C`` maps each C to (mean, 1.96 std) of the validation error over the
    selection draws; ``test_errors`` / ``val_errors`` are per test draw with the chosen C.
    """

    C: float
    val_by_C: dict[float, tuple[float, float]]
    test_errors: np.ndarray
    val_errors: np.ndarray
    seconds: float = 0.0

    @property
    def test(self) -> tuple[float, float]:
        """Mean test error and 1.96 std over the draws (the script's "mean +- 1.96 std")."""
        return float(self.test_errors.mean()), float(1.96 * self.test_errors.std())


@phased("SVM fitting")  # its label draws' features are extracted inside: a nested phase
def authors_svhn_protocol(
    featurize: Callable[[np.ndarray], np.ndarray],
    y_pool: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    *,
    Cs: Sequence[float] = AUTHORS_CS,
    select_draws: int = 10,
    test_draws: int = 100,
    per_class: int = 100,
    seed: int = 0,
    progress: bool = False,
) -> DrawsResult:
    """§5.2 exactly as the authors' analysis script runs it, with our L2-SVM solver.

    For each C, ``select_draws`` fresh class-balanced draws of ``per_class`` labels per class from the
    labelled pool (``y_pool``; ``featurize(indices)`` returns their features), an L2-SVM on the raw
    (not standardised) features, the validation error of each; the C with the lowest mean validation
    error wins. Then ``test_draws`` fresh draws with that C give the test error as mean +- 1.96 std
    over draws. The script uses scikit-learn's ``LinearSVC(C)`` (squared hinge, one-vs-rest, bias
    penalised like a weight): :class:`LinearL2SVM` with ``standardize=False`` solves the same problem.
    """
    y_pool, y_val, y_test = (np.asarray(v) for v in (y_pool, y_val, y_test))
    if select_draws < 1 or test_draws < 2:
        raise ValueError("need at least 1 selection draw and 2 test draws (the spread needs two)")
    if not len(Cs):
        raise ValueError("Cs is empty: give at least one regularisation constant")
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)

    def fit(C: float) -> LinearL2SVM:  # on a fresh draw of labels
        idx = _class_balanced_draw(y_pool, per_class, rng)
        return LinearL2SVM(C=C, standardize=False).fit(featurize(idx), y_pool[idx])

    val_by_C = {}
    for C in progress_bar(list(Cs), desc="C on validation", disable=not progress):
        errs = np.array([100 * np.mean(fit(C).predict(X_val) != y_val) for _ in range(select_draws)])
        val_by_C[float(C)] = (float(errs.mean()), float(1.96 * errs.std()))
    best = min(val_by_C, key=lambda c: (val_by_C[c][0], c))  # ties: the smallest C
    test_errs, val_errs = [], []
    for _ in progress_bar(range(test_draws), desc=f"test draws, C={best:g}", disable=not progress):
        m = fit(best)
        test_errs.append(100 * np.mean(m.predict(X_test) != y_test))
        val_errs.append(100 * np.mean(m.predict(X_val) != y_val))
    return DrawsResult(best, val_by_C, np.array(test_errs), np.array(val_errs), time.perf_counter() - t0)
