"""The session-adaptive ranker: prior scores + exposure feedback -> posterior ranking.

Model (one session)
-------------------
* **Squares.** Outcome of a visited square = fraction of its exposed holes with
  CTF resolution better than ``ctf_good_A``. ``outcome = prior + f(x)`` with
  ``f ~ GP`` over the square's standardised features (ARD RBF), so an unvisited
  square's posterior mean starts at our finder's score and moves with the
  feedback of visited squares that look alike. Each outcome carries its
  binomial sampling variance ``p(1-p)/n`` (``p`` = session good rate so far,
  Laplace-smoothed; ``n`` = exposures of that square).
* **Holes.** Outcome of an exposed hole = 1 if good else 0; ``outcome = prior +
  g(t)`` with ``g ~ GP`` over the hole's *calibrated* ice thickness ``t`` (nm).
  This learns the session's good-ice window instead of a hand-set one.
* **Ice calibration.** Holes report intensity ``I`` and the finder's vacuum
  intensity ``I0``; exposures report the measured ice ``t_m``. Beer–Lambert
  ``t = λ ln(k I0 / I) = λ x + a`` with ``x = ln(I0/I)``, ``a = λ ln k``: a robust
  straight-line fit of ``t_m`` on ``x`` gives the session's effective mean free
  path λ and I0 error ``k`` (few pairs: λ kept at the default, only ``a`` fitted).
* **Ranking.** Upper confidence bound ``mean + β sd`` (``ucb_beta`` /
  ``hole_ucb_beta`` in :class:`AdaptiveSettings`) on the *unclipped* mean,
  mapped strictly increasingly into 0..1 (see :func:`_ucb`): that is the score
  Leginon ranks by (``GP_probs`` for squares, ``prior_score`` for holes).
* **Evidence test (never worse when the prior is right).** Each model's
  feedback enters with a weight ``w`` (squares and holes each have their own
  test): ``score = prior + w (mean - prior) + w β sd``.
  ``log BF`` = the residual GP's log evidence minus that of the null model
  "targets do at least as well as their prior scores say, in the prior's
  order" (outcome = an increasing straight-line calibration of the prior whose
  mean is at least the mean prior, fitted noise;
  :func:`ptolemy_core.adaptive.gp.prior_kept_evidence`);
  with ``z = log BF - prior_wrong_log_odds`` (posterior log odds of "the prior
  is wrong"), ``w = 0`` while ``z <= 0`` -- the score is then a strictly
  increasing map of the prior alone, so until the test fires the ranking *is*
  the prior's and a session in which it never fires plays exactly as
  prior-only -- and ``w = 2 sigmoid(z) - 1 = P(wrong) - P(right)`` above it
  (0 at the threshold, so the order changes continuously; exploration is
  weighted by it too). Feedback that is as good as
  or better than promised keeps the prior's order and explores nothing;
  feedback worse than promised, or structured by the features, hands the
  ranking to the GP and its UCB. (A symmetric null -- any increasing
  calibration of the prior -- cannot tell a wrong prior from a right one when
  only its top-ranked squares have been visited, so it never opened on the
  simulated thick-ice sessions.)
* **Kernel.** ``ConstantKernel + ConstantKernel × RBF + WhiteKernel``: the
  constant term is a session-wide bias of the prior (all squares do worse or
  better than their scores say, e.g. the sample's good rate differs from what
  the scorer was trained on), so that evidence moves every target together
  and only the local part favours or penalises look-alikes; without it, bad
  news about the first squares would send exploration to feature outliers.

Hyper-parameters: the constant and local variances both start at ``p̄(1-p̄)``
(``p̄`` = mean prior score: the largest residual variance a 0..1 outcome with
that mean rate can have),
square length-scales at 1 standardised unit (bounds 0.1–20), the hole
length-scale at the session's sd of calibrated thickness (bounds 5–1000 nm);
all are fitted by maximum marginal likelihood once ``min_fit_points`` exist.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

from ..errors import PtolemyInputError
from .gp import (
    ResidualGP,
    group_offset_evidence,
    prior_kept_evidence,
    prior_kept_evidence_grouped,
    residual_gp,
)
from .settings import AdaptiveSettings


@dataclass(frozen=True)
class IceCalibration:
    """Session calibration of intensity-based ice thickness: ``t = λ ln(I0/I) + offset``.

    Attributes
    ----------
    lambda_nm : float
        Fitted (or default) effective mean free path.
    offset_nm : float
        ``λ ln k`` where ``k`` = true vacuum intensity / the I0 the finder used.
    n_pairs : int
        Feedback pairs used.
    rmse_nm : float
        Residual scatter of the fit (NaN with < 2 pairs).
    fitted_lambda : bool
        Whether λ was fitted (else the default).
    """

    lambda_nm: float
    offset_nm: float
    n_pairs: int
    rmse_nm: float
    fitted_lambda: bool

    @property
    def i0_factor(self) -> float:
        """``k``: multiply the finder's I0 by this to get the calibrated vacuum intensity."""
        return float(np.exp(self.offset_nm / self.lambda_nm))

    def thickness(self, intensity, i0) -> np.ndarray:
        """Calibrated ice thickness (nm) of holes with mean ``intensity`` and vacuum ``i0``."""
        with np.errstate(divide="ignore", invalid="ignore"):
            x = np.log(np.asarray(i0, dtype=np.float64) / np.asarray(intensity, dtype=np.float64))
        return self.lambda_nm * x + self.offset_nm


def fit_ice_calibration(
    intensity, i0, measured_nm, settings: AdaptiveSettings | None = None
) -> IceCalibration:
    """Fit the session's Beer–Lambert calibration from (intensity, measured ice) pairs.

    Parameters
    ----------
    intensity, i0 : array_like
        Hole mean intensity and the vacuum intensity used for that image.
    measured_nm : array_like
        Ice thickness measured at exposure (nm).
    settings : AdaptiveSettings, optional

    Returns
    -------
    IceCalibration
        With no usable pair: the default λ and zero offset.
    """
    s = settings or AdaptiveSettings()
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.log(np.asarray(i0, dtype=np.float64) / np.asarray(intensity, dtype=np.float64))
    t = np.asarray(measured_nm, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(t) & (t >= 0)
    x, t = x[ok], t[ok]
    lam = float(s.lambda_nm)
    if len(t) == 0:
        return IceCalibration(lam, 0.0, 0, float("nan"), False)
    keep = np.ones(len(t), bool)
    fitted = False
    for _ in range(2):  # one robust pass: refit without > 3 MAD outliers
        xs, ts = x[keep], t[keep]
        fitted = len(ts) >= s.min_calibration_points and np.std(xs) > 0.02
        if fitted:
            slope, _ = np.polyfit(xs, ts, 1)
            lam = float(np.clip(slope, *s.lambda_bounds_nm))
        else:
            lam = float(s.lambda_nm)
        offset = float(np.median(ts - lam * xs)) if len(ts) < 3 else float(np.mean(ts - lam * xs))
        resid = t - (lam * x + offset)
        mad = float(np.median(np.abs(resid - np.median(resid)))) * 1.4826
        new_keep = np.abs(resid) <= max(3 * mad, 1.0)
        if new_keep.sum() < 1 or np.array_equal(new_keep, keep):
            break
        keep = new_keep
    resid = t[keep] - (lam * x[keep] + offset)
    rmse = float(np.sqrt(np.mean(resid**2))) if keep.sum() >= 2 else float("nan")
    return IceCalibration(lam, offset, int(keep.sum()), rmse, bool(fitted))


@dataclass(frozen=True)
class Scores:
    """Posterior of the good-exposure outcome for a set of targets (arrays, one per id)."""

    ids: np.ndarray
    prior: np.ndarray
    mean: np.ndarray
    sd: np.ndarray
    ucb: np.ndarray
    #: Weight of the feedback model in ``mean``/``ucb``: 0 until the evidence test
    #: fires, then P(prior wrong) - P(prior right) (see ``prior_wrong_log_odds``).
    weight: float = 0.0


class SessionRanker:
    """Prior scores + exposure feedback of one session -> adapted ranking scores.

    Usable in-process (Leginon nodes) and by ``ptolemy serve``. Not thread-safe:
    callers serialise updates.

    Examples
    --------
    >>> r = SessionRanker()
    >>> r.add_squares([0, 1], [[1.0, 2.0], [3.0, 1.0]], [0.9, 0.2])
    >>> r.add_holes([0, 1], square_ids=[0, 0], intensity=[500, 300], i0=[1000, 1000], prior=[0.8, 0.4])
    >>> r.record_visits([0], ctfs=[8.0], ices=[240.0])
    >>> s = r.square_scores()
    """

    def __init__(self, settings: AdaptiveSettings | None = None) -> None:
        self.settings = settings or AdaptiveSettings()
        self._sq_index: dict[int, int] = {}
        self._sq_feat: list[np.ndarray] = []
        self._sq_prior: list[float] = []
        self._sq_visited: list[bool] = []
        self._h_index: dict[int, int] = {}
        self._h_square: list[int] = []
        self._h_int: list[float] = []
        self._h_i0: list[float] = []
        self._h_prior: list[float] = []
        self._h_ctf: list[float] = []
        self._h_ice: list[float] = []
        self._version = 0
        self._cache: dict[str, tuple[int, object]] = {}
        # Last fitted hyper-parameters per model: (n points at fit, amplitude, length-scales, noise).
        self._hyper: dict[str, tuple[int, float, np.ndarray, float]] = {}

    # ------------------------------------------------------------------ data
    @property
    def n_squares(self) -> int:
        return len(self._sq_prior)

    @property
    def n_holes(self) -> int:
        return len(self._h_prior)

    def add_squares(self, ids, features, prior) -> None:
        """Register squares: ids (unique ints), feature rows (n, d), prior scores 0..1."""
        ids = [int(i) for i in np.atleast_1d(ids)]
        feats = np.asarray(features, dtype=np.float64).reshape(len(ids), -1) if ids else np.zeros((0, 0))
        prior = np.asarray(prior, dtype=np.float64).reshape(-1)
        if len(prior) != len(ids):
            raise PtolemyInputError("add_squares: ids and prior differ in length")
        if self._sq_feat and len(ids) and feats.shape[1] != len(self._sq_feat[0]):
            raise PtolemyInputError("add_squares: feature length differs from earlier squares")
        for i, f, p in zip(ids, feats, prior, strict=True):
            if i in self._sq_index:
                raise PtolemyInputError(f"square id {i} already registered")
            self._sq_index[i] = len(self._sq_prior)
            self._sq_feat.append(f)
            self._sq_prior.append(_clip01(p))
            self._sq_visited.append(False)
        self._version += 1

    def add_holes(self, ids, *, square_ids, intensity, i0, prior) -> None:
        """Register holes of one or more images.

        Parameters
        ----------
        ids : sequence of int
        square_ids : sequence of int
            Parent square of each hole (need not be registered).
        intensity : sequence of float
            Mean raw intensity inside the hole (NaN = unknown).
        i0 : float or sequence of float
            Vacuum intensity the finder used for that image (NaN/<=0 = unknown).
        prior : sequence of float
            Our finder's hole scores, 0..1.
        """
        ids = [int(i) for i in np.atleast_1d(ids)]
        n = len(ids)
        sq = np.broadcast_to(np.asarray(square_ids, dtype=np.int64), (n,))
        inten = np.broadcast_to(np.asarray(intensity, dtype=np.float64), (n,))
        i0s = np.broadcast_to(np.asarray(i0, dtype=np.float64), (n,))
        pr = np.broadcast_to(np.asarray(prior, dtype=np.float64), (n,))
        for k, i in enumerate(ids):
            if i in self._h_index:
                raise PtolemyInputError(f"hole id {i} already registered")
            self._h_index[i] = len(self._h_prior)
            self._h_square.append(int(sq[k]))
            self._h_int.append(float(inten[k]) if inten[k] > 0 else float("nan"))
            self._h_i0.append(float(i0s[k]) if i0s[k] > 0 else float("nan"))
            self._h_prior.append(_clip01(pr[k]))
            self._h_ctf.append(float("nan"))
            self._h_ice.append(float("nan"))
        self._version += 1

    def record_visits(self, hole_ids, ctfs, ices) -> list[int]:
        """Exposure feedback (``visit_holes``): CTF resolution (Å) and ice (nm) per hole.

        Unknown hole ids are skipped and returned; the parent square is marked visited.
        """
        hole_ids = list(np.atleast_1d(hole_ids))
        ctfs = list(np.atleast_1d(ctfs)) if ctfs is not None else [None] * len(hole_ids)
        ices = list(np.atleast_1d(ices)) if ices is not None else [None] * len(hole_ids)
        unknown = []
        for k, hid in enumerate(hole_ids):
            j = self._h_index.get(int(hid))
            if j is None:
                unknown.append(int(hid))
                continue
            self._h_ctf[j] = _float_or_nan(ctfs[k] if k < len(ctfs) else None)
            self._h_ice[j] = _float_or_nan(ices[k] if k < len(ices) else None)
            self.mark_square_visited(self._h_square[j])
        self._version += 1
        return unknown

    def mark_square_visited(self, square_id: int) -> None:
        j = self._sq_index.get(int(square_id))
        if j is not None:
            self._sq_visited[j] = True
            self._version += 1

    def square_visited(self, square_id: int) -> bool:
        j = self._sq_index.get(int(square_id))
        return bool(j is not None and self._sq_visited[j])

    # ------------------------------------------------------------- models
    def ice_calibration(self) -> IceCalibration:
        """The session's current ice calibration (from all holes with measured ice)."""
        return self._cached("ice", self._fit_ice)

    def _fit_ice(self) -> IceCalibration:
        ice = np.asarray(self._h_ice)
        ok = np.isfinite(ice)
        return fit_ice_calibration(
            np.asarray(self._h_int)[ok], np.asarray(self._h_i0)[ok], ice[ok], self.settings
        )

    def hole_thickness(self, ids=None) -> np.ndarray:
        """Calibrated ice thickness (nm) of holes (NaN where intensity or I0 is unknown)."""
        idx = self._hole_idx(ids)
        cal = self.ice_calibration()
        return cal.thickness(np.asarray(self._h_int)[idx], np.asarray(self._h_i0)[idx])

    def _good(self, ctf: np.ndarray) -> np.ndarray:
        return (ctf < self.settings.ctf_good_A).astype(np.float64)

    def _rate(self) -> float:
        ctf = np.asarray(self._h_ctf)
        ok = np.isfinite(ctf)
        return float((self._good(ctf[ok]).sum() + 1.0) / (ok.sum() + 2.0))

    def _square_model(self) -> tuple[ResidualGP, np.ndarray, np.ndarray, float]:
        feats = np.asarray(self._sq_feat, dtype=np.float64)
        prior = np.asarray(self._sq_prior)
        x = _standardise(feats)
        # Outcomes per visited square: good fraction over its exposed holes.
        ctf = np.asarray(self._h_ctf)
        hsq = np.asarray(self._h_square)
        done = np.isfinite(ctf)
        good = self._good(np.where(done, ctf, np.inf))
        rows, y, n = [], [], []
        for sid in np.unique(hsq[done]):
            j = self._sq_index.get(int(sid))
            if j is None:
                continue
            m = done & (hsq == sid)
            rows.append(j)
            y.append(good[m].mean())
            n.append(m.sum())
        rows_a = np.asarray(rows, dtype=np.int64)
        p = self._rate()
        pbar = float(np.clip(prior.mean(), 0.05, 0.95)) if len(prior) else 0.5
        gp = self._fit(
            "squares",
            x[rows_a] if len(rows_a) else np.zeros((0, x.shape[1] if x.ndim == 2 else 1)),
            np.asarray(y) - prior[rows_a] if len(rows_a) else np.zeros(0),
            p * (1 - p) / np.maximum(np.asarray(n, dtype=np.float64), 1.0),
            amplitude=pbar * (1 - pbar),
            length_scale=1.0,
            length_bounds=(0.1, 20.0),
        )
        weight = self._prior_wrong_weight(gp, np.asarray(y), prior[rows_a] if len(rows_a) else np.zeros(0),
                                          p * (1 - p) / np.maximum(np.asarray(n, dtype=np.float64), 1.0))
        return gp, x, prior, weight

    def _prior_wrong_weight(self, gp: ResidualGP, y, prior, var, tau: float | None = None,
                            groups=None) -> float:
        """Weight of the feedback model: 0 until the evidence test fires (exactly the prior order).

        Compares the residual GP's log evidence with the best "targets do at
        least as well as their prior scores, in the prior's order" model
        (:func:`prior_kept_evidence`):
        feedback better than promised is no reason to leave the prior's order,
        feedback worse than promised (or structured by the features) is;
        ``prior_wrong_log_odds`` is the prior log odds *against* "wrong" (a
        margin the data must beat: the GP's hyper-parameters are fitted).
        Returns 0 while the posterior log odds ``z = log BF - tau`` are <= 0,
        else ``P(wrong) - P(right) = tanh(z / 2)``. With ``groups`` (the
        hole test: each hole's square) both models get a random offset per
        group (:func:`prior_kept_evidence_grouped`,
        :func:`group_offset_evidence`), so one uniformly bad square is not
        evidence about the thickness.
        """
        tau = self.settings.prior_wrong_log_odds if tau is None else tau
        if tau == -np.inf:
            return 1.0
        if len(y) == 0:
            return 0.0
        if groups is None:
            log_bf = gp.log_evidence - prior_kept_evidence(y, prior, var)
        else:
            log_bf = group_offset_evidence(gp, groups) - prior_kept_evidence_grouped(y, prior, var, groups)
        z = log_bf - tau  # posterior log odds of "the prior is wrong"
        if not z > 0.0:  # (NaN too) the test has not fired: exactly the prior's order
            return 0.0
        return float(np.tanh(min(z, 50.0) / 2.0))  # = P(wrong) - P(right) = 2 sigmoid(z) - 1

    def _hole_model(self) -> tuple[ResidualGP, np.ndarray, float]:
        s = self.settings
        t = self.hole_thickness()
        ctf = np.asarray(self._h_ctf)
        prior = np.asarray(self._h_prior)
        train = np.isfinite(ctf) & np.isfinite(t)
        # The most recent points only: bounded O(n^3) cost, follows drift within a session.
        idx = np.flatnonzero(train)[-s.max_train_points:]
        finite_t = t[np.isfinite(t)]
        scale = float(np.std(finite_t)) if len(finite_t) > 1 else 50.0
        pbar = float(np.clip(prior.mean(), 0.05, 0.95)) if len(prior) else 0.5
        p = self._rate()
        gp = self._fit(
            "holes",
            t[idx, None],
            self._good(ctf[idx]) - prior[idx],
            np.full(len(idx), p * (1 - p)),
            amplitude=pbar * (1 - pbar),
            length_scale=float(np.clip(scale, 5.0, 1000.0)),
            length_bounds=(5.0, 1000.0),
        )
        weight = self._prior_wrong_weight(gp, self._good(ctf[idx]), prior[idx],
                                          np.full(len(idx), p * (1 - p)), s.hole_prior_wrong_log_odds,
                                          np.asarray(self._h_square)[idx] if s.hole_square_offset else None)
        return gp, t, weight

    def _fit(self, key, x, resid, var, *, amplitude, length_scale, length_bounds) -> ResidualGP:
        """Condition the GP; re-fit hyper-parameters only when the data grew by ``refit_growth``.

        Between re-fits the last fitted values are reused (conditioning is cheap,
        maximising the marginal likelihood is not); a re-fit starts from them.
        """
        n = len(resid)
        last = self._hyper.get(key)
        noise, offset = 1e-3, (amplitude if self.settings.session_bias else 0.0)
        if last is not None:
            _, amplitude, length_scale, noise, offset = last
        fit = n >= self.settings.min_fit_points and (
            last is None or n >= self.settings.refit_growth * last[0] or n < last[0])
        gp = residual_gp(x, resid, var, amplitude=amplitude, length_scale=length_scale,
                         length_bounds=length_bounds, fit=fit, noise=noise, offset=offset)
        if fit:
            self._hyper[key] = (n, gp.amplitude, gp.length_scales, gp.noise, gp.offset)
        return gp

    def square_scores(self, ids=None) -> Scores:
        """Posterior good-fraction of squares (all registered when ``ids`` is None)."""
        idx = self._square_idx(ids)
        if self.n_squares == 0:
            z = np.zeros(0)
            return Scores(np.zeros(0, np.int64), z, z, z, z)
        gp, x, prior, w = self._cached("squares", self._square_model)
        with _one_blas_thread():
            dm, sd = gp.predict(x[idx])
        # Feedback moves the ranking (and buys exploration) only as far as the
        # evidence says the prior is wrong; w = 0 is exactly the prior order.
        raw = prior[idx] + w * dm
        ucb = _ucb(raw, w * sd, prior[idx], self.settings.ucb_beta, gp.prior_var)
        return Scores(self._ids(self._sq_index, idx), prior[idx], np.clip(raw, 0.0, 1.0), sd, ucb, w)

    def hole_scores(self, ids=None) -> Scores:
        """Posterior good-probability of holes; ``ucb`` is what Leginon should rank by."""
        idx = self._hole_idx(ids)
        if self.n_holes == 0:
            z = np.zeros(0)
            return Scores(np.zeros(0, np.int64), z, z, z, z)
        gp, t, w = self._cached("holes", self._hole_model)
        prior = np.asarray(self._h_prior)[idx]
        ti = t[idx]
        known = np.isfinite(ti)
        dm = np.zeros(len(idx))
        sd = np.full(len(idx), np.sqrt(gp.prior_var))
        if known.any():
            with _one_blas_thread():
                dm[known], sd[known] = gp.predict(ti[known, None])
        raw = prior + w * dm  # as for squares: only as far as the prior is shown wrong
        ucb = _ucb(raw, w * sd, prior, self.settings.hole_ucb_beta, gp.prior_var)
        mean = np.clip(raw, 0.0, 1.0)
        return Scores(self._ids(self._h_index, idx), prior, mean, sd, ucb, w)

    def ice_window(self, grid_nm=None, level: float = 0.5) -> tuple[float, float] | None:
        """The learned good-ice window: calibrated thicknesses where P(good) ≥ ``level``.

        Evaluated for a hole whose prior is the session mean prior; None when no
        thickness on the grid reaches ``level``.
        """
        if self.n_holes == 0:
            return None
        gp, t, _ = self._cached("holes", self._hole_model)
        grid = np.arange(0.0, 300.0, 1.0) if grid_nm is None else np.asarray(grid_nm, float)
        pbar = float(np.mean(self._h_prior))
        dm, _ = gp.predict(grid[:, None])
        ok = grid[pbar + dm >= level]
        return (float(ok.min()), float(ok.max())) if len(ok) else None

    def warm(self) -> None:
        """Fit both models now (e.g. right after feedback), so the next scoring call is fast."""
        if self.n_squares:
            self._cached("squares", self._square_model)
        if self.n_holes:
            self._cached("holes", self._hole_model)

    # ------------------------------------------------------------- helpers
    def _cached(self, key: str, build):
        hit = self._cache.get(key)
        if hit is not None and hit[0] == self._version:
            return hit[1]
        with _one_blas_thread():
            value = build()
        self._cache[key] = (self._version, value)
        return value

    def _square_idx(self, ids) -> np.ndarray:
        if ids is None:
            return np.arange(self.n_squares)
        try:
            return np.asarray([self._sq_index[int(i)] for i in np.atleast_1d(ids)], dtype=np.int64)
        except KeyError as exc:
            raise PtolemyInputError(f"unknown square id {exc.args[0]}") from None

    def _hole_idx(self, ids) -> np.ndarray:
        if ids is None:
            return np.arange(self.n_holes)
        try:
            return np.asarray([self._h_index[int(i)] for i in np.atleast_1d(ids)], dtype=np.int64)
        except KeyError as exc:
            raise PtolemyInputError(f"unknown hole id {exc.args[0]}") from None

    @staticmethod
    def _ids(index: dict[int, int], idx: np.ndarray) -> np.ndarray:
        inv = np.empty(len(index), dtype=np.int64)
        for k, j in index.items():
            inv[j] = k
        return inv[idx]


@contextlib.contextmanager
def _one_blas_thread():
    """Run the small GP linear algebra on one BLAS thread.

    Matrices here are at most a few hundred wide: a multi-threaded BLAS spends
    more time waking threads than computing, and on a busy 2-core machine each
    call waits for the others' threads (measured: 3-4x slower per session).
    """
    global _CONTROLLER
    if _CONTROLLER is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
            yield
            return
        # Inspecting the loaded libraries is the slow part: do it once per process.
        _CONTROLLER = ThreadpoolController()
    with _CONTROLLER.limit(limits=1, user_api="blas"):
        yield


_CONTROLLER = None


def _ucb(raw_mean, sd, prior, beta: float, prior_var: float) -> np.ndarray:
    """UCB ``mean + β sd`` mapped into 0..1 without ties or clipping away its order.

    ``raw_mean`` is the unclipped posterior mean of the 0..1 outcome (prior +
    residual), so it lies in about ``[-1, 1]``, and the latent sd never exceeds
    its prior value ``sqrt(prior_var)``; ``(u + 1) / (2 + β sqrt(prior_var))``
    is therefore a strictly increasing map of ``u = mean + β sd`` into 0..1
    (Leginon reads a 0..1 score). Clipping the mean first would tie every
    target the model believes useless at 0 and hand the order to the sd alone,
    i.e. to the feature-space outliers. Exact ties keep the prior's order.
    """
    u = np.asarray(raw_mean) + beta * np.asarray(sd)
    score = (u + 1.0) / (2.0 + beta * np.sqrt(max(prior_var, 0.0))) - 1e-9 * (1.0 - np.asarray(prior))
    return np.clip(score, 0.0, 1.0)


def _standardise(feats: np.ndarray) -> np.ndarray:
    """Columns to zero median / unit scale over the session's squares (NaN -> median)."""
    if feats.size == 0:
        return feats
    x = np.array(feats, dtype=np.float64)
    med = np.nanmedian(np.where(np.isfinite(x), x, np.nan), axis=0)
    med = np.where(np.isfinite(med), med, 0.0)
    x = np.where(np.isfinite(x), x, med)
    sd = x.std(axis=0)
    return (x - med) / np.where(sd > 1e-12, sd, 1.0)


def _clip01(value) -> float:
    v = float(value)
    return float(np.clip(v, 0.0, 1.0)) if np.isfinite(v) else 0.0


def _float_or_nan(value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return v if np.isfinite(v) else float("nan")
