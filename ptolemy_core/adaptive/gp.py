"""Gaussian-process regression on the residual of a prior (scikit-learn kernels).

The adaptive ranker models an outcome ``y`` (fraction of good exposures of a
square, or 0/1 for a hole) as ``prior + f(x)`` with ``f ~ GP(0, k)``, so with
no feedback the posterior mean *is* the prior and the ranking is the prior's.
Hyper-parameters (amplitude, ARD length-scales, extra noise) are fitted by
maximising scikit-learn's log marginal likelihood once enough points exist;
before that they keep their data-set values (see :func:`residual_gp`).
The posterior itself is computed here from the fitted kernel so that the
returned sd is that of the latent ``f`` (scikit-learn's ``predict`` adds the
white-noise level to it, which would inflate exploration).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import PtolemyUnavailableError


def _sklearn_gp():
    try:
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
    except ImportError:  # pragma: no cover - depends on the installation
        raise PtolemyUnavailableError(
            "the adaptive ranker needs scikit-learn: install ptolemy-leginon[server]"
        ) from None
    return GaussianProcessRegressor, RBF, ConstantKernel, WhiteKernel


@dataclass
class ResidualGP:
    """A fitted residual GP: call :meth:`predict` for the latent mean and sd."""

    x_train: np.ndarray
    weights: np.ndarray  # K^-1 y
    chol: np.ndarray  # lower Cholesky factor of K + noise
    latent_kernel: object  # scikit-learn kernel without the white-noise term
    amplitude: float  # variance of the local (RBF) part of the residual
    length_scales: np.ndarray
    noise: float
    fitted: bool
    offset: float = 0.0  # variance of the session-wide constant part of the residual
    log_evidence: float = 0.0  # log marginal likelihood of the training residuals (0 with none)

    @property
    def prior_var(self) -> float:
        """Latent variance before data: constant offset + local part."""
        return self.amplitude + self.offset

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Latent posterior mean and sd at rows of ``x`` (shape (m, d))."""
        x = np.asarray(x, dtype=np.float64)
        if len(self.x_train) == 0:
            return np.zeros(len(x)), np.full(len(x), np.sqrt(self.prior_var))
        ks = self.latent_kernel(x, self.x_train)
        mean = ks @ self.weights
        v = _solve_lower(self.chol, ks.T)
        var = np.clip(self.prior_var - np.einsum("ij,ij->j", v, v), 1e-12, None)
        return mean, np.sqrt(var)


def _solve_lower(chol: np.ndarray, b: np.ndarray) -> np.ndarray:
    from scipy.linalg import solve_triangular

    return solve_triangular(chol, b, lower=True, check_finite=False)


def _lbfgs(obj_func, initial_theta, bounds):
    """scikit-learn's default optimiser (L-BFGS-B on the log marginal likelihood), capped.

    The start is the previous fit (warm start), so a few dozen iterations
    suffice; the cap bounds the cost of a call on a busy machine.
    """
    from scipy.optimize import minimize

    res = minimize(obj_func, initial_theta, method="L-BFGS-B", jac=True, bounds=bounds,
                   options={"maxiter": MAX_FIT_ITER})
    return res.x, res.fun


#: Iteration cap of the hyper-parameter fit.
MAX_FIT_ITER = 40


def residual_gp(
    x: np.ndarray,
    residual: np.ndarray,
    point_var: np.ndarray,
    *,
    amplitude: float,
    length_scale: np.ndarray | float,
    length_bounds: tuple[float, float],
    fit: bool,
    noise: float = 1e-3,
    offset: float | None = None,
) -> ResidualGP:
    """Condition a zero-mean GP on residuals; optionally fit its hyper-parameters.

    Parameters
    ----------
    x : ndarray, shape (n, d)
        Training inputs (already scaled by the caller).
    residual : ndarray, shape (n,)
        Outcome minus prior.
    point_var : ndarray, shape (n,)
        Known sampling variance of each outcome (binomial), added to the
        diagonal (scikit-learn's ``alpha``).
    amplitude : float
        Initial (and, unfitted, final) variance of the latent residual.
    length_scale : float or ndarray
        Initial RBF length-scale(s) (one per column: ARD).
    length_bounds : (float, float)
        Bounds for the fitted length-scales.
    fit : bool
        Maximise the log marginal likelihood (L-BFGS-B, deterministic start
        from the given values); otherwise keep the given values.
    noise : float
        Initial (unfitted: final) extra white-noise variance for model misfit.
    offset : float, optional
        Initial variance of a session-wide constant residual (a ConstantKernel
        term: the prior may be biased for this sample as a whole, e.g. every
        square does worse than its score says); default ``amplitude``; 0 = no
        such term.

    Returns
    -------
    ResidualGP
    """
    gpr_cls, rbf, const, white = _sklearn_gp()
    x = np.asarray(x, dtype=np.float64)
    x = x.reshape(len(x), -1) if x.ndim != 2 else x
    residual = np.asarray(residual, dtype=np.float64)
    point_var = np.asarray(point_var, dtype=np.float64)
    d = x.shape[1]
    ls = np.broadcast_to(np.asarray(length_scale, dtype=np.float64), (d,)).copy()
    ls = np.clip(ls, *length_bounds)
    amplitude = float(np.clip(amplitude, 1e-4, 1.0))
    use_offset = offset is None or offset > 0
    offset = float(np.clip(amplitude if offset is None else offset, 1e-4, 1.0)) if use_offset else 0.0
    # Outcomes live in 0..1, so the residual variance is at most 1: bounds for the fit.
    kernel = (
        const(offset, (1e-4, 1.0) if use_offset else "fixed")
        + const(amplitude, (1e-4, 1.0)) * rbf(ls if d > 1 else float(ls[0]), length_bounds)
        + white(float(np.clip(noise, 1e-6, 0.25)), (1e-6, 0.25))
    )
    if len(residual) == 0:
        latent = kernel.k1
        return ResidualGP(x, np.zeros(0), np.zeros((0, 0)), latent, amplitude, ls, 0.0, False, offset, 0.0)
    gpr = gpr_cls(
        kernel=kernel,
        alpha=point_var,
        optimizer=_lbfgs if fit else None,
        normalize_y=False,
        n_restarts_optimizer=0,
        random_state=0,
        copy_X_train=True,
    )
    with warnings.catch_warnings():
        # A length-scale or noise level at its bound is a legitimate answer with
        # few points (e.g. "no extra noise"), not something to report per call.
        warnings.simplefilter("ignore")
        gpr.fit(x, residual)
    fitted = gpr.kernel_
    latent = fitted.k1  # offset + amplitude * RBF
    noise = float(fitted.k2.noise_level)
    off = float(latent.k1.constant_value)
    amp = float(latent.k2.k1.constant_value)
    k = latent(x) + np.diag(point_var + noise)
    chol = np.linalg.cholesky(k + 1e-10 * np.eye(len(k)))
    # K^-1 y via the two triangular solves (upper = chol.T).
    from scipy.linalg import solve_triangular

    z = solve_triangular(chol, residual, lower=True, check_finite=False)
    weights = solve_triangular(chol.T, z, lower=False, check_finite=False)
    scales = np.atleast_1d(np.asarray(latent.k2.k2.length_scale, dtype=np.float64))
    n = len(residual)
    lml = float(-0.5 * residual @ weights - np.log(np.diag(chol)).sum() - 0.5 * n * np.log(2 * np.pi))
    return ResidualGP(x, weights, chol, latent, amp, scales, noise, fit, off, lml)


#: Grid of the null models' extra noise variance s2 (0/1 or 0..1 outcomes: at most 0.25).
NOISE_VAR_GRID = np.concatenate(([0.0], np.geomspace(1e-4, 0.25, 25)))


def _float64s(*arrays) -> tuple[np.ndarray, ...]:
    return tuple(np.asarray(a, dtype=np.float64) for a in arrays)


def prior_kept_evidence(y: np.ndarray, prior: np.ndarray, point_var: np.ndarray) -> float:
    """Log likelihood of outcomes under "the prior keeps its promise".

    The null model of the adaptive ranker's evidence test: ``y = a + b * prior
    + e`` with ``b >= 0`` (an increasing calibration keeps the prior's order)
    that does not under-deliver on average (weighted mean of ``a + b * prior``
    >= weighted mean prior: targets do at least as well as their scores say),
    ``e ~ N(0, point_var + s2)``. ``a``, ``b`` by constrained weighted least
    squares (closed form: the fit passes through ``(p̄, max(ȳ, p̄))``), the
    extra noise ``s2`` by a grid search (maximum likelihood).

    Parameters
    ----------
    y, prior, point_var : ndarray, shape (n,)
        Outcomes, prior scores, known sampling variance of each outcome.

    Returns
    -------
    float
        The maximised log likelihood (0 with no points).
    """
    y, p, point_var = _float64s(y, prior, point_var)
    if len(y) == 0:
        return 0.0
    best = -np.inf
    for s2 in NOISE_VAR_GRID:
        var = point_var + s2 + 1e-9
        w = 1.0 / var
        p_bar = float(np.sum(w * p) / np.sum(w))
        y_bar = float(np.sum(w * y) / np.sum(w))
        dp = p - p_bar
        ss = float(np.sum(w * dp * dp))
        b = max(0.0, float(np.sum(w * dp * (y - y_bar))) / ss) if ss > 1e-12 else 0.0
        e = y - (max(y_bar, p_bar) + b * dp)
        best = max(best, float(-0.5 * np.sum(e * e * w + np.log(2 * np.pi * var))))
    return best


#: Grid of the square-offset variance (0/1 or 0..1 outcomes: at most 0.25).
GROUP_VAR_GRID = np.concatenate(([0.0], np.geomspace(1e-3, 0.25, 12)))


def _group_sums(groups: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    return np.bincount(groups, weights=values, minlength=n_groups)


def prior_kept_evidence_grouped(y: np.ndarray, prior: np.ndarray, point_var: np.ndarray,
                                groups) -> float:
    """:func:`prior_kept_evidence` with a random offset shared by each group's targets.

    The null model of the hole test when holes come in squares: ``y = c + b
    (prior - p̄) + u_g + e`` with ``u_g ~ N(0, v)`` shared by the holes of
    square ``g`` (a square-level defect -- crystalline ice, contamination,
    a bad patch of the grid -- lowers all its holes whatever their
    thickness), ``e ~ N(0, point_var + s2)``; ``b >= 0`` and ``c >= p̄``
    (in the prior's order, at least as good as promised on average, as in
    :func:`prior_kept_evidence`). ``c``, ``b`` by constrained generalised
    least squares (exact: the best feasible of the four active sets of two
    bound constraints), ``s2`` and ``v`` by grid search (maximum likelihood).
    With ``v = 0`` this is exactly :func:`prior_kept_evidence`.

    Parameters
    ----------
    y, prior, point_var : ndarray, shape (n,)
        Outcomes, prior scores, known sampling variance of each outcome.
    groups : array_like of int, shape (n,)
        Group (square) label of each outcome.

    Returns
    -------
    float
        The maximised log likelihood (0 with no points).
    """
    y, p, point_var = _float64s(y, prior, point_var)
    n = len(y)
    if n == 0:
        return 0.0
    _, g = np.unique(np.asarray(groups), return_inverse=True)
    n_g = int(g.max()) + 1
    v = GROUP_VAR_GRID[:, None]  # (n_v, 1) against (1, n_g) group sums
    best = -np.inf
    for s2 in NOISE_VAR_GRID:
        var = point_var + s2 + 1e-9
        w = 1.0 / var
        p_bar = float(np.sum(w * p) / np.sum(w))
        dp = p - p_bar
        cols = {"1": np.ones(n), "d": dp, "y": y}
        tot = {k: float(np.sum(w * a)) for k, a in cols.items()}
        tot.update({k1 + k2: float(np.sum(w * cols[k1] * cols[k2]))
                    for k1, k2 in (("1", "d"), ("d", "d"), ("1", "y"), ("d", "y"), ("y", "y"))})
        tot["11"] = tot["1"]
        gs = {k: _group_sums(g, w * a, n_g)[None, :] for k, a in cols.items()}
        wg = gs["1"]
        shrink = v / (1.0 + v * wg)  # Sherman-Morrison per group

        def inner(a: str, b: str, gs=gs, tot=tot, shrink=shrink) -> np.ndarray:
            # a' Sigma^-1 b for every v of the grid
            return tot[a + b] - np.sum(shrink * gs[a] * gs[b], axis=1)

        a11, a1d, add = inner("1", "1"), inner("1", "d"), inner("d", "d")
        g1, gd, yy = inner("1", "y"), inner("d", "y"), inner("y", "y")
        logdet = float(np.sum(np.log(var))) + np.sum(np.log1p(v * wg), axis=1)

        def quad(c, b, a11=a11, a1d=a1d, add=add, g1=g1, gd=gd, yy=yy):
            return yy - 2 * c * g1 - 2 * b * gd + c * c * a11 + 2 * c * b * a1d + b * b * add

        det = a11 * add - a1d * a1d
        safe = np.where(np.abs(det) > 1e-12, det, np.nan)  # singular: no free candidate
        c_bar = np.full_like(a11, p_bar)
        b_at_c_bar = np.where(add > 1e-12, (gd - p_bar * a1d) / np.maximum(add, 1e-12), 0.0)
        cands = [((add * g1 - a1d * gd) / safe, (a11 * gd - a1d * g1) / safe),  # both free
                 (c_bar, b_at_c_bar),  # c at its bound
                 (g1 / a11, np.zeros_like(a11)),  # b at its bound
                 (c_bar, np.zeros_like(a11))]  # both at their bounds
        q = np.full(len(a11), np.inf)
        for c, b in cands:
            ok = np.isfinite(c) & np.isfinite(b) & (c >= p_bar - 1e-12) & (b >= -1e-12)
            q = np.where(ok, np.minimum(q, quad(c, np.maximum(b, 0.0))), q)
        ll = -0.5 * (q + logdet + n * np.log(2 * np.pi))
        best = max(best, float(np.max(ll)))
    return best


def group_offset_evidence(gp: ResidualGP, groups) -> float:
    """Log evidence of a fitted residual GP plus a random offset per group.

    ``residual = f(x) + u_g + e`` with ``u_g ~ N(0, v)`` shared by a group
    (square), ``v`` by grid search (the GP's own hyper-parameters kept):
    the alternative of the hole test gets the same square offsets as its null
    (:func:`prior_kept_evidence_grouped`), so the test weighs only what the
    thickness explains beyond square-level effects. Woodbury / determinant
    lemma on the GP's Cholesky factor: ``O(n G + G^3)`` per grid value.
    ``v = 0`` gives ``gp.log_evidence``.
    """
    n = len(gp.weights)
    if n == 0:
        return gp.log_evidence
    _, g = np.unique(np.asarray(groups), return_inverse=True)
    n_g = int(g.max()) + 1
    z = np.zeros((n, n_g))
    z[np.arange(n), g] = 1.0
    kz = _solve_lower(gp.chol, z)
    m = kz.T @ kz  # Z' K^-1 Z
    b = z.T @ gp.weights  # Z' K^-1 y
    best = gp.log_evidence
    eye = np.eye(n_g)
    for v in GROUP_VAR_GRID[1:]:
        a = eye + v * m
        sign, logdet = np.linalg.slogdet(a)
        if sign <= 0:
            continue
        best = max(best, gp.log_evidence + 0.5 * v * float(b @ np.linalg.solve(a, b)) - 0.5 * logdet)
    return best
