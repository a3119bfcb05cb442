"""The linear L2-SVM the paper fits on D's features (§5.1 CIFAR-10, §5.2 SVHN), solved in torch.

:class:`LinearL2SVM` solves scikit-learn's ``LinearSVC`` problem (squared hinge, L2 penalty,
one-vs-rest, the bias penalised like a weight) on standardised features: L-BFGS per one-vs-rest
column with an exact line search (:func:`_exact_step`) and a principal-direction preconditioner
(:class:`_Preconditioner`), every column and every C of a path at once, matrix products on every
core; a fit stops at a certified objective gap. :func:`l2svm_objective` is the objective itself
(tests compare with ``LinearSVC``). How C is chosen and labels drawn lives in :mod:`dcgan.protocol`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

__all__ = ["LinearL2SVM", "l2svm_objective"]


def _threads(n: int | None):
    """Context: torch intra-op threads set to ``n`` (None: leave torch's default, one per core)."""
    import contextlib

    @contextlib.contextmanager
    def ctx():
        old = torch.get_num_threads()
        if n:
            torch.set_num_threads(n)
        try:
            yield
        finally:
            torch.set_num_threads(old)

    return ctx()


def _ovr_signs(y: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """(n, K) +-1 targets: one column per class, or one column (positive = ``classes[1]``) for two classes, as LinearSVC."""
    idx = np.searchsorted(classes, y)
    if len(classes) == 2:
        return np.where(idx == 1, 1.0, -1.0)[:, None]
    s = -np.ones((len(y), len(classes)))
    s[np.arange(len(y)), idx] = 1.0
    return s


def l2svm_objective(coef: np.ndarray, intercept: np.ndarray, X: np.ndarray, y: np.ndarray, C: float,
                    classes: np.ndarray | None = None) -> np.ndarray:
    """LinearSVC's primal objective per one-vs-rest problem (float64).

    f_k = 0.5 (|w_k|^2 + b_k^2) + C sum_i max(0, 1 - s_ik (x_i . w_k + b_k))^2, s_ik = +1 if y_i is
    class k else -1. The bias is penalised like a weight, as liblinear does with ``intercept_scaling=1``.
    """
    classes = np.unique(y) if classes is None else np.asarray(classes)
    S = _ovr_signs(np.asarray(y), classes)
    W = np.asarray(coef, dtype=np.float64).reshape(S.shape[1], -1)
    b = np.asarray(intercept, dtype=np.float64).reshape(-1)
    h = np.maximum(0.0, 1.0 - S * (np.asarray(X, dtype=np.float64) @ W.T + b))
    return 0.5 * ((W * W).sum(1) + b * b) + C * (h * h).sum(0)


def _exact_step(a: np.ndarray, pp: np.ndarray, m: np.ndarray, dm: np.ndarray, C: np.ndarray,
                iters: int = 60) -> np.ndarray:
    """Exact minimiser t >= 0 of phi(t) = f(W + t p) per column (phi is a convex piecewise quadratic).

    phi'(t) = a + t pp - 2C sum_i max(0, 1 - m_i - t dm_i) dm_i with a = W.p, pp = p.p, m the margins
    s*(x.w + b) and dm = s*(x.p + p_b). Newton on phi' (exact on each quadratic piece), kept inside a
    bracket [lo, hi] where phi'(lo) <= 0 < phi'(hi) (bisection when Newton leaves it).
    """
    r = 1.0 - m
    g0 = np.maximum(np.abs(a), 1e-300)
    lo = np.zeros_like(a)
    hi = np.full_like(a, np.inf)
    t = np.ones_like(a)
    done = np.zeros(a.shape, dtype=bool)
    for _ in range(iters):
        h = np.maximum(r - t * dm, 0.0)
        d1 = a + t * pp - 2.0 * C * (h * dm).sum(0)
        d2 = pp + 2.0 * C * ((h > 0) * dm * dm).sum(0)
        done |= np.abs(d1) <= 1e-9 * g0
        if done.all():
            return t
        neg = d1 <= 0
        lo = np.where(neg, np.maximum(lo, t), lo)
        hi = np.where(neg, hi, np.minimum(hi, t))
        with np.errstate(divide="ignore", invalid="ignore"):
            nt = t - d1 / d2
        mid = np.where(np.isinf(hi), 2.0 * np.maximum(lo, t), 0.5 * (lo + hi))
        nt = np.where((nt <= lo) | (nt >= hi) | ~np.isfinite(nt), mid, nt)
        t = np.where(done, t, nt)
    # phi' <= 0 on [0, lo], so the bracket's lower end always decreases phi
    return np.where(done, t, lo)


@dataclass
class _Preconditioner:
    """The features' top principal directions, to start L-BFGS's two-loop recursion from a good inverse Hessian.

    Column k's Hessian is I + 2C X_A^T X_A over its active points A (margin < 1). With
    rho_k = |A| / n, X_A^T X_A ~ rho_k X^T X, whose largest eigenvalues (the features' common modes)
    make the problem ill-conditioned. ``V`` (d, r) and ``s2`` are X's top right singular vectors and
    squared singular values (decreasing); ``V=None`` means the features already are principal
    coordinates with variances ``s2`` (the reduced problem of :func:`_solve_l2svm`), so the
    approximation is diagonal and complete.
    """

    V: torch.Tensor | None
    s2: np.ndarray
    n: int

    @classmethod
    def top(cls, X: torch.Tensor, rank: int, seed: int = 0) -> "_Preconditioner | None":
        r = min(rank, min(X.shape) - 1)
        if r < 1:
            return None
        g = torch.random.get_rng_state()
        torch.manual_seed(seed)  # svd_lowrank starts from a random matrix: keep fits reproducible
        try:
            _, S, V = torch.svd_lowrank(X, q=r, niter=2)
        finally:
            torch.random.set_rng_state(g)
        return cls(V.double(), (S.double() ** 2).numpy(), X.shape[0])

    def apply(self, q: np.ndarray, mu: np.ndarray) -> np.ndarray:
        """H0 q for columns with curvature scale ``mu`` = 2 C rho (one per column)."""
        coef = 1.0 / (1.0 + mu[None, :] * self.s2[:, None])  # (r, K)
        out = np.empty_like(q)
        if self.V is None:
            out[:-1] = q[:-1] * coef
        else:
            rest = 1.0 / (1.0 + mu * self.s2[-1])  # the complement's eigenvalues are below s2[-1]
            qd = torch.from_numpy(q[:-1])
            out[:-1] = (qd * torch.from_numpy(rest)
                        + self.V @ (torch.from_numpy(coef - rest) * (self.V.T @ qd))).numpy()
        out[-1] = q[-1] / (1.0 + mu * self.n)  # the bias: a constant column, orthogonal to centred features
        return out


def _lbfgs_columns(X: torch.Tensor, S: np.ndarray, C: np.ndarray, W: np.ndarray, *, tol: float,
                   max_iter: int, memory: int, precond: _Preconditioner | None = None,
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Minimise every column's L2-SVM objective at once: L-BFGS per column, exact line search.

    ``X`` (n, d) float32 tensor, ``S`` (n, K) +-1, ``C`` (K,) one constant per column (so a whole
    path over C shares the passes over X), ``W`` (d+1, K) float64 start ([w; b] per column).
    The two matrix products per iteration (the whole cost: each reads X once) run in float32 on every
    torch thread; the O(n K) and O(d K) rest in float64 numpy. A column stops when
    0.5 |grad|^2 <= tol * f: f is 1-strongly convex, so f - f* <= 0.5 |grad|^2, i.e. its objective is
    then within ``tol`` (relative) of the optimum: a certificate, not a heuristic. Returns W,
    iterations and certified relative gap per column, and the objective per column.
    """
    n, d = X.shape
    K = S.shape[1]
    C = np.broadcast_to(np.asarray(C, dtype=np.float64), (K,)).copy()
    W = W.copy()

    def xdot(V: np.ndarray) -> np.ndarray:  # [X 1] @ V, (n, k)
        return (X @ torch.from_numpy(np.ascontiguousarray(V[:d], dtype=np.float32))).numpy().astype(np.float64) + V[d]

    def grad(Wc: np.ndarray, mc: np.ndarray, Sc: np.ndarray, Cc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h = np.maximum(1.0 - mc, 0.0)
        r = Sc * h
        g = Wc.copy()
        g[:d] -= 2.0 * Cc * (X.T @ torch.from_numpy(r.astype(np.float32))).numpy()
        g[d] -= 2.0 * Cc * r.sum(0)
        return 0.5 * (Wc * Wc).sum(0) + Cc * (h * h).sum(0), g

    m = S * xdot(W)
    f, g = grad(W, m, S, C)
    iters = np.zeros(K, dtype=np.int64)
    gap = 0.5 * (g * g).sum(0) / np.maximum(f, 1e-300)
    act = gap > tol
    mem: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (s, y, 1/s.y), zero on finished columns
    for it in range(max_iter):
        if not act.any():
            break
        cols = np.flatnonzero(act)
        # two-loop recursion with column-wise inner products (the columns are independent problems)
        q = g.copy()
        alphas = []
        for s, y, rho in reversed(mem):
            al = rho * (s * q).sum(0)
            q -= al * y
            alphas.append(al)
        if precond is not None:
            q = precond.apply(q, 2.0 * C * np.maximum((m < 1).mean(0), 1.0 / n))
        elif mem:
            s, y, _ = mem[-1]
            yy = (y * y).sum(0)
            q *= np.where(yy > 0, (s * y).sum(0) / np.maximum(yy, 1e-300), 1.0)
        for (s, y, rho), al in zip(mem, reversed(alphas)):
            q += s * (al - rho * (y * q).sum(0))
        p, ga = -q[:, cols], g[:, cols]
        uphill = (ga * p).sum(0) >= 0  # curvature pairs spoilt by rounding: steepest descent
        p[:, uphill] = -ga[:, uphill]
        Sc, Cc = S[:, cols], C[cols]
        dm = Sc * xdot(p)
        t = _exact_step((W[:, cols] * p).sum(0), (p * p).sum(0), m[:, cols], dm, Cc)
        W[:, cols] += t * p
        m[:, cols] += t * dm
        fa, gn = grad(W[:, cols], m[:, cols], Sc, Cc)
        s_full, y_full = np.zeros_like(W), np.zeros_like(W)
        s_full[:, cols], y_full[:, cols] = t * p, gn - ga
        sy = (s_full * y_full).sum(0)
        mem.append((s_full, y_full, np.where(sy > 0, 1.0 / np.maximum(sy, 1e-300), 0.0)))
        if len(mem) > memory:
            mem.pop(0)
        g[:, cols], f[cols] = gn, fa
        iters[cols] += 1
        gap[cols] = 0.5 * (gn * gn).sum(0) / np.maximum(fa, 1e-300)
        act[cols] = gap[cols] > tol
        if it % 50 == 49:  # margins are updated incrementally: recompute them against drift
            m = S * xdot(W)
    return W, iters, gap, f


def _solve_l2svm(Xs: torch.Tensor, S: np.ndarray, C: np.ndarray, W0: np.ndarray | None, *, tol: float,
                 max_iter: int, memory: int, rank: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Solve the L2-SVM columns on float32 features ``Xs`` (n, d); returns as :func:`_lbfgs_columns`.

    n >= d: L-BFGS on Xs, preconditioned with its top ``rank`` principal directions.
    n < d (few labels): the optimal w lies in the span of the n training rows, so with
    Xs Xs^T = U diag(lam) U^T the problem is solved exactly on the n principal coordinates
    L = U diag(sqrt(lam)) (n x n instead of n x d, same objective), fully preconditioned, and
    w = Xs^T U diag(lam^-1/2) u is mapped back.
    """
    n, d = Xs.shape
    K = S.shape[1]
    if n >= d:
        W0 = np.zeros((d + 1, K)) if W0 is None else W0
        return _lbfgs_columns(Xs, S, C, W0, tol=tol, max_iter=max_iter, memory=memory,
                              precond=_Preconditioner.top(Xs, rank))
    X64 = Xs.double()
    lam, U = torch.linalg.eigh(X64 @ X64.T)
    lam, U = lam.flip(0), U.flip(1)
    keep = lam > 1e-10 * lam[0].clamp(min=1e-300)
    lam, U = lam[keep], U[:, keep]
    B = U / lam.sqrt()  # columns of Q = Xs^T B are orthonormal
    L = (U * lam.sqrt()).float().contiguous()
    r = L.shape[1]
    U0 = np.zeros((r + 1, K))
    if W0 is not None:
        U0[:r] = (B.T @ (X64 @ torch.from_numpy(W0[:d]))).numpy()
        U0[r] = W0[d]
    Ur, iters, gap, f = _lbfgs_columns(L, S, C, U0, tol=tol, max_iter=max_iter, memory=memory,
                                       precond=_Preconditioner(None, lam.numpy(), n))
    W = np.empty((d + 1, K))
    W[:d] = (X64.T @ (B @ torch.from_numpy(Ur[:r]))).numpy()
    W[d] = Ur[r]
    return W, iters, gap, f


def _standardize(X: np.ndarray, mean: np.ndarray, scale: np.ndarray, rows: int = 4096) -> torch.Tensor:
    """(X - mean) / scale as a float32 tensor, a block of rows at a time (X may be float16)."""
    out = torch.empty(X.shape, dtype=torch.float32)
    m32, s32 = torch.from_numpy(mean.astype(np.float32)), torch.from_numpy(scale.astype(np.float32))
    for i in range(0, len(X), rows):
        out[i : i + rows] = (torch.from_numpy(np.asarray(X[i : i + rows], dtype=np.float32)) - m32) / s32
    return out


def _moments(X: np.ndarray, rows: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Column mean and standard deviation (ddof 0, zero -> 1, as StandardScaler), float64, in blocks."""
    n = len(X)
    s = np.zeros(X.shape[1])
    ss = np.zeros(X.shape[1])
    for i in range(0, n, rows):
        s += np.asarray(X[i : i + rows], dtype=np.float64).sum(0)
    mean = s / n
    for i in range(0, n, rows):
        b = np.asarray(X[i : i + rows], dtype=np.float64) - mean
        ss += (b * b).sum(0)
    scale = np.sqrt(ss / n)
    scale[scale < 10 * np.finfo(np.float64).eps] = 1.0
    return mean, scale


def _in_units_of(m: "LinearL2SVM", mean: np.ndarray | None, scale: np.ndarray | None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``m``'s (coef, intercept) re-expressed for features standardised with ``mean``/``scale`` (None: raw).

    The same decision function, so a warm start on more data (the refit on train + validation, whose
    mean and scale differ from the training set's) starts where the first fit ended, not elsewhere.
    """
    m1 = m.mean_ if m.standardize else np.zeros(m.coef_.shape[1])
    s1 = m.scale_ if m.standardize else np.ones(m.coef_.shape[1])
    m2 = np.zeros_like(m1) if mean is None else mean
    s2 = np.ones_like(s1) if scale is None else scale
    # w . (x - m1) / s1 + b  with  x = s2 x' + m2   ->   (w s2 / s1) . x' + b + w . (m2 - m1) / s1
    return m.coef_ * (s2 / s1), m.intercept_ + m.coef_ @ ((m2 - m1) / s1)


@dataclass
class LinearL2SVM:
    """One-vs-rest linear L2-SVM (squared hinge, L2 penalty; the paper's classifier), solved in torch.

    The same objective as scikit-learn's ``LinearSVC(loss="squared_hinge", penalty="l2")`` with its
    default ``intercept_scaling=1`` (the bias is penalised like a weight), on features standardised
    with the training set's mean and standard deviation when ``standardize`` (as ``StandardScaler``).
    Every one-vs-rest problem (and, in :meth:`fit_path`, every C) is solved at once by L-BFGS with an
    exact line search and a principal-direction preconditioner; the matrix products use every torch
    thread (``threads``: None = one per core). A fit stops when each problem's objective is certified
    within ``tol`` (relative) of its optimum; when ``max_iter`` runs out first, a ``ConvergenceWarning``
    names the C and the gap reached (never silenced here).
    """

    C: float = 1.0
    tol: float = 1e-4
    max_iter: int = 1000
    memory: int = 10
    rank: int = 64  # principal directions in the preconditioner (n >= d)
    standardize: bool = True
    threads: int | None = None
    classes_: np.ndarray | None = field(default=None, repr=False)
    coef_: np.ndarray | None = field(default=None, repr=False)  # (K, d) in standardised units
    intercept_: np.ndarray | None = field(default=None, repr=False)
    mean_: np.ndarray | None = field(default=None, repr=False)
    scale_: np.ndarray | None = field(default=None, repr=False)
    n_iter_: int = 0
    gap_: float = float("nan")  # largest certified relative objective gap over the one-vs-rest problems
    objective_: np.ndarray | None = field(default=None, repr=False)
    converged_: bool = False

    def _prepare(self, X: np.ndarray) -> torch.Tensor:
        if self.standardize:
            return _standardize(X, self.mean_, self.scale_)
        return torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))

    def fit(self, X: np.ndarray, y: np.ndarray, init: "LinearL2SVM | None" = None) -> "LinearL2SVM":
        """Fit on (n, d) features ``X`` and labels ``y``; ``init``: a fitted model to start from (a warm start)."""
        return self.fit_path(X, y, [self.C], init=init)[0]

    def fit_path(self, X: np.ndarray, y: np.ndarray, Cs: Sequence[float],
                 init: "LinearL2SVM | None" = None) -> list["LinearL2SVM"]:
        """One fitted model per C in ``Cs``, all solved together (the passes over X are shared).

        This model's settings are used for every C; it becomes the fit for ``Cs[0]``.
        """
        import copy
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        y = np.asarray(y)
        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)} labels")
        if not len(Cs):
            raise ValueError("Cs is empty: give at least one regularisation constant")
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ValueError("the L2-SVM needs at least two classes")
        if self.standardize:
            self.mean_, self.scale_ = _moments(X)
        S = _ovr_signs(y, self.classes_)
        K, d, nC = S.shape[1], X.shape[1], len(Cs)
        W0 = None
        if init is not None and init.coef_ is not None and init.coef_.shape == (K, d):
            coef, icpt = _in_units_of(init, self.mean_ if self.standardize else None,
                                      self.scale_ if self.standardize else None)
            W0 = np.tile(np.vstack([coef.T, icpt[None]]), (1, nC))
        with _threads(self.threads):
            W, iters, gap, f = _solve_l2svm(self._prepare(X), np.tile(S, (1, nC)), np.repeat(np.asarray(Cs, float), K),
                                            W0, tol=self.tol, max_iter=self.max_iter, memory=self.memory, rank=self.rank)
        models = []
        for j, C in enumerate(Cs):
            m = self if j == 0 else copy.copy(self)
            cols = slice(j * K, (j + 1) * K)
            m.C = float(C)
            m.coef_, m.intercept_ = W[:d, cols].T.copy(), W[d, cols].copy()
            m.n_iter_, m.gap_, m.objective_ = int(iters[cols].max()), float(gap[cols].max()), f[cols].copy()
            m.converged_ = bool(m.gap_ <= m.tol)
            if not m.converged_:
                warnings.warn(
                    f"L2-SVM with C={m.C:g} did not converge in max_iter={m.max_iter} iterations: "
                    f"{int((gap[cols] > m.tol).sum())} of {K} one-vs-rest problems have a certified objective gap "
                    f"up to {m.gap_:.1e} (tol {m.tol:g}); raise max_iter or tol", ConvergenceWarning, stacklevel=2)
            models.append(m)
        return models

    def decision_function(self, X: np.ndarray, rows: int = 8192) -> np.ndarray:
        return _decisions([self], X, rows)[0]

    def predict(self, X: np.ndarray) -> np.ndarray:
        return _predict_from(self, self.decision_function(X))


def _decisions(models: list[LinearL2SVM], X: np.ndarray, rows: int = 8192) -> list[np.ndarray]:
    """Decision values of models fitted on the same standardisation, in one pass over X."""
    m0 = models[0]
    if m0.coef_ is None:
        raise RuntimeError("LinearL2SVM.decision_function called before fit")
    W = torch.from_numpy(np.concatenate([m.coef_.T for m in models], 1).astype(np.float32))
    b = torch.from_numpy(np.concatenate([m.intercept_ for m in models]).astype(np.float32))
    out = []
    with _threads(m0.threads):
        for i in range(0, len(X), rows):
            out.append((m0._prepare(X[i : i + rows]) @ W + b).numpy())
    Z = np.concatenate(out) if out else np.empty((0, W.shape[1]), dtype=np.float32)
    K = m0.coef_.shape[0]
    return [Z[:, j * K : (j + 1) * K][:, 0] if len(m0.classes_) == 2 else Z[:, j * K : (j + 1) * K]
            for j in range(len(models))]


def _predict_from(m: LinearL2SVM, z: np.ndarray) -> np.ndarray:
    if len(m.classes_) == 2:
        return m.classes_[(z > 0).astype(int)]
    return m.classes_[z.argmax(1)]
