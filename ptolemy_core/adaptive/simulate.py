"""Simulated screening sessions: does adaptive ranking collect more good exposures?

A feature-level simulator (fast enough for hundreds of sessions): a grid of
squares with hidden ice thickness and defects, holes with hidden thickness,
noisy observables computed from them with Beer–Lambert, and a CTF model that
turns the hidden state into the CTF resolution each exposure reports. Policies
play the session in Leginon's call order under a fixed exposure budget.

CTF model (documented; resolution in Å, smaller is better)
---------------------------------------------------------
For a hole with ice thickness ``t`` (nm) in a session whose *sample* works in
the ice window ``[t_lo, t_hi]``::

    ctf = r_best + (t - t_hi)/10  if t > t_hi      (1 Å per 10 nm of excess ice:
                                                    multiple/inelastic scattering
                                                    wash out the Thon rings)
        + (t_lo - t)/5   if t < t_lo               (1 Å per 5 nm too thin: the
                                                    particles are excluded or
                                                    denatured at the air–water
                                                    interface, little signal)
        + 3 Å if the hole is contaminated, + 2 Å if the ice is crystalline
    ctf *= exp(N(0, 0.08))                          (fit-to-fit scatter)
    ctf = U(12, 30) Å if t < 5 nm                   (empty hole: no specimen)

with ``r_best ~ U(2.8, 3.6)`` per session. "Usual" sessions have
``t_lo ~ U(10, 25)``, ``t_hi ~ U(50, 70)`` (what our finders' priors favour);
"thick" sessions (the sample wants thicker ice: large complexes, membrane
proteins in detergent) have ``t_lo ~ U(55, 70)``, ``t_hi ~ U(110, 140)``;
"thin" sessions (small particles that need thin ice) ``t_lo ~ U(3, 8)``,
``t_hi ~ U(25, 35)``. These are the tuning ("train") ranges; the held-out
"test" split widens them (see :data:`RANGES`).
The measured ice of an exposure is ``t + N(0, 5 nm)``.

The priors stand in for our finders' scores: a preference for ~40 nm ice
estimated from intensity with a *default* λ and an I0 that is off by a
session-wide factor, a penalty on visibly rough squares, and noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..synth.physics import LAMBDA_NM
from .ranker import SessionRanker
from .settings import AdaptiveSettings

SCENARIOS = ("usual", "thick", "thin")
POLICIES = ("random", "prior", "reference-gp", "ours")

#: Parameter ranges: the tuning split and the held-out evaluation split differ
#: in seeds *and* ranges (wider λ, I0 error, square counts, windows).
RANGES = {
    "train": {"lambda": (300.0, 400.0), "i0_factor": (0.9, 1.12), "n_squares": (60, 90),
              "usual_lo": (10, 25), "usual_hi": (50, 70), "thick_lo": (55, 70), "thick_hi": (110, 140),
              "thin_lo": (3, 8), "thin_hi": (25, 35)},
    "test": {"lambda": (260.0, 440.0), "i0_factor": (0.87, 1.15), "n_squares": (50, 110),
             "usual_lo": (8, 28), "usual_hi": (45, 75), "thick_lo": (50, 75), "thick_hi": (100, 150),
             "thin_lo": (2, 10), "thin_hi": (22, 38)},
}


@dataclass
class SimSquare:
    """One square: observable features/prior and its holes' hidden and observable values."""

    features: np.ndarray  # brightness, std, area, relative_thickness (as the server's lm_feats)
    prior: float
    thickness: float
    defect: str
    hole_intensity: np.ndarray
    hole_i0: float  # the vacuum intensity the hole finder used for this image
    hole_prior: np.ndarray
    hole_ctf: np.ndarray  # what each exposure would report (fixed per hole: fair across policies)
    hole_ice: np.ndarray  # measured ice at exposure


@dataclass
class SimSession:
    seed: int
    scenario: str
    split: str
    window: tuple[float, float]
    lambda_nm: float
    squares: list[SimSquare] = field(default_factory=list)


def ctf_resolution(t, window, r_best, contaminated, crystalline, rng: np.random.Generator) -> np.ndarray:
    """The documented CTF model (module docstring): resolution in Å of exposing holes.

    Parameters
    ----------
    t : array_like
        Hole ice thickness, nm.
    window : (float, float)
        The sample's good-ice window ``(t_lo, t_hi)``, nm.
    r_best : float
        Best resolution of the session, Å.
    contaminated, crystalline : array_like of bool
        Hole defects (+3 Å, +2 Å).
    rng : numpy.random.Generator
    """
    t = np.asarray(t, dtype=np.float64)
    lo, hi = window
    ctf = r_best + np.clip(t - hi, 0, None) / 10 + np.clip(lo - t, 0, None) / 5
    ctf = ctf + 3.0 * np.asarray(contaminated) + 2.0 * np.asarray(crystalline)
    ctf = ctf * np.exp(0.08 * rng.standard_normal(t.shape))
    no_ice = t < 5
    ctf[no_ice] = rng.uniform(12, 30, size=int(no_ice.sum()))
    return ctf


def draw_window(scenario: str, split: str, rng: np.random.Generator) -> tuple[float, float]:
    """The sample's good-ice window for a scenario (ranges of :data:`RANGES`)."""
    rg = RANGES[split]
    return float(rng.uniform(*rg[f"{scenario}_lo"])), float(rng.uniform(*rg[f"{scenario}_hi"]))


def _window_score(t_est: np.ndarray, centre: float = 40.0, width: float = 25.0) -> np.ndarray:
    return np.exp(-0.5 * ((t_est - centre) / width) ** 2)


def make_session(seed: int, scenario: str = "usual", split: str = "test") -> SimSession:
    """Draw one simulated grid session (hidden truth + observables), deterministic in ``seed``."""
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario must be one of {SCENARIOS}")
    rg = RANGES[split]
    rng = np.random.default_rng([seed, SCENARIOS.index(scenario), 0 if split == "train" else 1])
    lam = rng.uniform(*rg["lambda"])
    k_i0 = rng.uniform(*rg["i0_factor"])
    lo, hi = draw_window(scenario, split, rng)
    r_best = rng.uniform(2.8, 3.6)
    n_sq = int(rng.integers(*rg["n_squares"]))
    i0_atlas = rng.uniform(2000, 8000)
    # Grid-wide ice: a gradient across the grid plus square-to-square scatter (lognormal).
    pos = rng.uniform(-1, 1, size=(n_sq, 2))
    grad = rng.normal(0, 0.35, size=2)
    t_sq = np.exp(np.log(60.0) + pos @ grad + rng.normal(0, 0.45, n_sq))
    defects = rng.choice(["none", "broken", "contaminated", "cracked", "crystalline"], size=n_sq,
                         p=[0.72, 0.08, 0.08, 0.07, 0.05])
    session = SimSession(seed, scenario, split, (float(lo), float(hi)), float(lam))
    for s in range(n_sq):
        d = str(defects[s])
        t = float(t_sq[s])
        n_h = int(rng.integers(25, 60))
        t_h = np.clip(t * (1 + 0.18 * rng.standard_normal(n_h)), 0, None)
        empty = rng.random(n_h) < (0.35 if d == "broken" else 0.03)
        t_h[empty] = 0.0
        contaminated = rng.random(n_h) < (0.4 if d == "contaminated" else 0.03)
        crystalline = np.full(n_h, d == "crystalline")
        cracked = rng.random(n_h) < (0.3 if d == "cracked" else 0.0)
        t_h[cracked] = 0.0  # torn film over the hole: no ice
        # Observables at medium mag: hole intensity, finder's (biased) I0 and prior.
        i0_mm = rng.uniform(100, 400)
        inten = i0_mm * np.exp(-t_h / lam) * (1 + 0.02 * rng.standard_normal(n_h))
        inten[contaminated] *= 0.75
        i0_used = i0_mm * k_i0
        t_est = LAMBDA_NM["ice"] * np.log(i0_used / inten)
        h_prior = np.clip(_window_score(t_est) * np.where(contaminated, 0.6, 1.0)
                          + 0.1 * rng.standard_normal(n_h), 0, 1)
        # Hidden outcome of exposing each hole (CTF model of the module docstring).
        ctf = ctf_resolution(t_h, (lo, hi), r_best, contaminated, crystalline, rng)
        ice_meas = np.clip(t_h + rng.normal(0, 5, n_h), 0, None)
        # Observables at low mag: square brightness through ice (+ broken film patches), roughness.
        frac_open = float(np.mean(t_h < 5))
        bright = i0_atlas * ((1 - frac_open) * np.exp(-t / lam) + frac_open)
        bright *= 1 + 0.03 * rng.standard_normal()
        rough = {"none": 0.0, "broken": 0.6, "contaminated": 0.4, "cracked": 0.5, "crystalline": 0.2}[d]
        std = bright * (0.03 + rough * rng.uniform(0.05, 0.15) + 0.01 * abs(rng.standard_normal()))
        area = rng.uniform(0.6, 1.0) * 10000.0
        rel = float(np.log(i0_atlas * k_i0 / bright))
        t_est_sq = LAMBDA_NM["ice"] * rel
        prior = float(np.clip(_window_score(np.asarray(t_est_sq)) * (1 - 0.8 * min(std / bright, 0.5))
                              + 0.12 * rng.standard_normal(), 0, 1))
        session.squares.append(SimSquare(
            features=np.array([bright, std, area, rel]), prior=prior, thickness=t, defect=d,
            hole_intensity=inten, hole_i0=float(i0_used), hole_prior=h_prior, hole_ctf=ctf,
            hole_ice=ice_meas))
    return session


# -------------------------------------------------------------------- policies
class Policy:
    """Base: ranks squares at each reorder and picks holes in each square image."""

    name = "base"

    def __init__(self, session: SimSession, rng: np.random.Generator, settings: AdaptiveSettings) -> None:
        self.session = session
        self.rng = rng
        self.settings = settings
        self.prior = np.array([s.prior for s in session.squares])

    def first_order(self) -> np.ndarray:
        # current_lm_state: Leginon orders by prior score.
        return np.argsort(-self.prior, kind="stable")

    def reorder(self, unvisited: np.ndarray) -> np.ndarray:
        return unvisited[np.argsort(-self.prior[unvisited], kind="stable")]

    def pick_holes(self, s: int, k: int) -> np.ndarray:
        return np.argsort(-self.session.squares[s].hole_prior, kind="stable")[:k]

    def feedback(self, s: int, holes: np.ndarray) -> None:
        pass


class RandomPolicy(Policy):
    name = "random"

    def first_order(self) -> np.ndarray:
        return self.rng.permutation(len(self.prior))

    def reorder(self, unvisited: np.ndarray) -> np.ndarray:
        return self.rng.permutation(unvisited)

    def pick_holes(self, s: int, k: int) -> np.ndarray:
        return self.rng.permutation(len(self.session.squares[s].hole_prior))[:k]


class PriorPolicy(Policy):
    name = "prior"


class ReferenceGPPolicy(Policy):
    """The reference server's square GP as documented (fixed hyper-parameters).

    Features: crop mean, max, variance and pixel count; target: count of good
    holes per visited square; constant mean 20, output scale 500, ARD
    length-scales = per-feature 25th percentile over squares with prior > 0.2,
    noise 15; score = predictive mean + 2 sd. Holes by prior (Leginon ignores
    the reference's hole GP).
    """

    name = "reference-gp"

    def __init__(self, session, rng, settings) -> None:
        super().__init__(session, rng, settings)
        f = np.array([s.features for s in session.squares])
        bright, std, area = f[:, 0], f[:, 1], f[:, 2]
        self.x = np.column_stack([bright, bright + 3 * std, std**2, area])
        sel = self.x[self.prior > 0.2] if np.any(self.prior > 0.2) else self.x
        self.ls = np.maximum(np.percentile(sel, 25, axis=0), 1e-6)
        self.y: dict[int, float] = {}

    def feedback(self, s: int, holes: np.ndarray) -> None:
        ctf = self.session.squares[s].hole_ctf[holes]
        self.y[s] = self.y.get(s, 0.0) + float(np.sum(ctf < self.settings.ctf_good_A))

    def reorder(self, unvisited: np.ndarray) -> np.ndarray:
        if not self.y:
            return unvisited  # GP_probs = 1/N: Leginon keeps the current order
        tr = np.array(list(self.y))
        y = np.array([self.y[i] for i in tr]) - 20.0

        def k(a, b):
            d = (a[:, None, :] - b[None, :, :]) / self.ls
            return 500.0 * np.exp(-0.5 * np.sum(d * d, axis=-1))

        kt = k(self.x[tr], self.x[tr]) + 15.0 * np.eye(len(tr))
        ks = k(self.x[unvisited], self.x[tr])
        mean = 20.0 + ks @ np.linalg.solve(kt, y)
        var = 500.0 + 15.0 - np.einsum("ij,ji->i", ks, np.linalg.solve(kt, ks.T))
        score = mean + 2 * np.sqrt(np.clip(var, 0, None))
        return unvisited[np.argsort(-score, kind="stable")]


class OursPolicy(Policy):
    """Our :class:`SessionRanker`, fed exactly as ``ptolemy serve`` feeds it."""

    name = "ours"

    def __init__(self, session, rng, settings) -> None:
        super().__init__(session, rng, settings)
        self.ranker = SessionRanker(settings)
        self.ranker.add_squares(np.arange(len(session.squares)),
                                np.array([s.features for s in session.squares]), self.prior)
        self.hole_base: dict[int, int] = {}
        self.next_hole = 0

    def reorder(self, unvisited: np.ndarray) -> np.ndarray:
        sc = self.ranker.square_scores(unvisited)
        return unvisited[np.argsort(-sc.ucb, kind="stable")]

    def pick_holes(self, s: int, k: int) -> np.ndarray:
        sq = self.session.squares[s]
        n = len(sq.hole_prior)
        ids = np.arange(self.next_hole, self.next_hole + n)
        self.hole_base[s] = self.next_hole
        self.next_hole += n
        self.ranker.add_holes(ids, square_ids=s, intensity=sq.hole_intensity, i0=sq.hole_i0,
                              prior=sq.hole_prior)
        sc = self.ranker.hole_scores(ids)
        return np.argsort(-sc.ucb, kind="stable")[:k]

    def feedback(self, s: int, holes: np.ndarray) -> None:
        sq = self.session.squares[s]
        # looplearn reports one exposure per visit_holes call.
        for h in holes:
            self.ranker.record_visits([self.hole_base[s] + int(h)], [sq.hole_ctf[h]], [sq.hole_ice[h]])


POLICY_CLASSES = {c.name: c for c in (RandomPolicy, PriorPolicy, ReferenceGPPolicy, OursPolicy)}


@dataclass
class PlayResult:
    policy: str
    good: int
    exposures: int
    squares: int
    cumulative: np.ndarray  # good exposures after each exposure


def play(session: SimSession, policy: str, *, budget: int = 100, per_square: int = 5,
         interval: int = 1, settings: AdaptiveSettings | None = None) -> PlayResult:
    """Play one session with one policy in Leginon's call order.

    Squares are visited in the current order; after more than ``interval``
    distinct squares have reported exposures the remaining squares are
    reordered (``looplearn --interval``); each square image yields
    ``per_square`` exposures on the policy's best holes, until ``budget``.
    """
    settings = settings or AdaptiveSettings()
    rng = np.random.default_rng([session.seed, POLICIES.index(policy), 7])
    pol = POLICY_CLASSES[policy](session, rng, settings)
    order = list(pol.first_order())
    visited = np.zeros(len(session.squares), bool)
    good, exposures, squares, since = 0, 0, 0, 0
    cumulative = []
    while exposures < budget and order:
        s = int(order.pop(0))
        if visited[s]:
            continue
        visited[s] = True
        holes = pol.pick_holes(s, min(per_square, budget - exposures))
        ctf = session.squares[s].hole_ctf[holes]
        for c in ctf:
            good += int(c < settings.ctf_good_A)
            cumulative.append(good)
        exposures += len(holes)
        squares += 1
        pol.feedback(s, holes)
        since += 1
        if since > interval:
            order = list(pol.reorder(np.flatnonzero(~visited)))
            since = 0
    return PlayResult(policy, good, exposures, squares, np.asarray(cumulative))


def run_benchmark(seeds, *, scenarios=SCENARIOS, policies=POLICIES, split: str = "test",
                  budget: int = 100, per_square: int = 5, interval: int = 1,
                  settings: AdaptiveSettings | None = None) -> dict:
    """Good exposures per (scenario, policy) over seeded sessions.

    Returns
    -------
    dict
        ``{"good": {scenario: {policy: [per-session counts]}}, "curves": {scenario:
        {policy: mean cumulative curve}}, "oracle": {scenario: [best possible counts]}}``.
    """
    settings = settings or AdaptiveSettings()
    out: dict = {"good": {}, "curves": {}, "oracle": {}}
    for sc in scenarios:
        out["good"][sc] = {p: [] for p in policies}
        curves = {p: [] for p in policies}
        out["oracle"][sc] = []
        for seed in seeds:
            session = make_session(int(seed), sc, split)
            all_ctf = np.concatenate([s.hole_ctf for s in session.squares])
            out["oracle"][sc].append(int(min(budget, np.sum(all_ctf < settings.ctf_good_A))))
            for p in policies:
                r = play(session, p, budget=budget, per_square=per_square, interval=interval,
                         settings=settings)
                out["good"][sc][p].append(r.good)
                curves[p].append(np.pad(r.cumulative, (0, budget - len(r.cumulative)), mode="edge")
                                 if len(r.cumulative) else np.zeros(budget))
        out["curves"][sc] = {p: np.mean(curves[p], axis=0) for p in policies}
    return out
