"""Settings of the session-adaptive ranker (every tunable number lives here)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from ..errors import PtolemyInputError
from ..synth.physics import LAMBDA_NM


@dataclass(frozen=True)
class AdaptiveSettings:
    """Parameters of :class:`ptolemy_core.adaptive.SessionRanker`.

    Attributes
    ----------
    ctf_good_A : float
        An exposure is *good* when its CTF resolution is better (smaller) than
        this, in Å (the reference server's ``lm_ctf_good_hole_cutoff``, 5 Å).
    ucb_beta : float
        Exploration weight of the upper-confidence-bound rule: a target's
        ranking score is ``posterior mean + ucb_beta * posterior sd`` (0 = pure
        exploitation). Chosen on the *train* split of the simulated sessions
        (``ptolemy simulate-session --tune --split train --sessions 8 --seed 0``,
        then the best four on 24 more train seeds from 100): 0.5 gave the most
        good exposures pooled over the usual/thick/thin scenarios (the surface
        is flat: 0-2 are within ~1.5 exposures of 100; exploring helps when the
        prior is wrong, costs ~1 exposure when it is right). That grid was run
        with an earlier score map that clipped the posterior mean at 0; the
        current unclipped map was checked with these weights on train seeds
        100-115 only (not re-tuned).
    hole_ucb_beta : float
        The same weight for holes, chosen the same way (0.25; every exposure
        on an exploratory hole is spent, so it is smaller).
    min_fit_points : int
        Below this many training points the GP hyper-parameters are not fitted
        (too few to identify them); the documented data-set values are used.
    lambda_nm : float
        Effective inelastic mean free path of ice assumed before any ice
        feedback (Beer–Lambert, :data:`ptolemy_core.synth.physics.LAMBDA_NM`).
    lambda_bounds_nm : tuple of float
        Plausible range of the session's fitted mean free path (200–300 kV,
        with/without energy filter or objective aperture).
    min_calibration_points : int
        Ice feedback pairs needed before both λ and the I0 factor are fitted
        (with fewer, only the I0 factor is fitted at the default λ).
    refit_growth : float
        Hyper-parameters are re-fitted when the training set has grown by this
        factor since the last fit (in between they are reused: a fit costs
        ~0.1–0.3 s, conditioning a few ms).
    session_bias : bool
        Add a constant kernel term (a session-wide bias of the prior: every
        target does better/worse than its score says). Off by default: on the
        simulated sessions it slowed the move away from a wrong prior (bad news
        lowers all targets alike instead of favouring the unlike ones).
    prior_wrong_log_odds : float
        Evidence test for squares: the feedback model moves the square
        ranking with weight ``w = sigmoid(log BF - prior_wrong_log_odds)``,
        where ``log BF`` = the residual GP's log evidence minus that of the
        best "the prior keeps its promise" model (outcome = an increasing
        straight-line calibration of the prior whose mean is at least the
        mean prior: targets do at least as well as their scores say, in the
        prior's order). Chosen on the *train* split with ``ptolemy
        simulate-session --tune-evidence --split train --seed 0 --sessions 40``
        (100 exposures, the three scenarios; rule: fewest exposures lost
        against prior-only summed over the scenarios, ties to the larger
        margin): margins -inf / 0 / 1 / 2 / 3 / 5 lost 22 / 12 / 7 / 7 / 8 / 11
        exposures in 8 / 5 / 4 / 4 / 4 / 4 of 120 sessions; with 2 the gains
        over prior-only were +11 / +71 / +29 % (usual / thick / thin; -inf:
        +11 / +80 / +28 %). Before the test existed (``-inf``, seeds 0-59) 16
        of 180 sessions were worse than prior-only
        (worst -8). ``w`` scales both the residual and the UCB
        exploration bonus, so while the feedback agrees with the prior the
        prior's order is kept. ``-inf`` = always trust the feedback model (no
        test, the behaviour before it existed); ``inf`` = always the prior order.
    hole_prior_wrong_log_odds : float
        The same test for the hole model; off (``-inf``) by default: with
        0/1 outcomes under a Gaussian likelihood it has little power (15
        exposures perfectly separated by thickness give ``log BF`` ≈ 0), and
        without it the hole re-ranking cost at most 1 exposure in a session on
        the train split (6/60 usual, 0/60 thick, 2/60 thin sessions; squares
        by prior order in that run).
    max_train_points : int
        The hole GP is conditioned on at most this many most recent exposures
        (exact GP cost grows as n³; ~20 ms at 400 points).
    """

    ctf_good_A: float = 5.0
    ucb_beta: float = 0.5
    hole_ucb_beta: float = 0.25
    min_fit_points: int = 5
    lambda_nm: float = LAMBDA_NM["ice"]
    lambda_bounds_nm: tuple[float, float] = (150.0, 800.0)
    min_calibration_points: int = 6
    prior_wrong_log_odds: float = 2.0
    hole_prior_wrong_log_odds: float = float("-inf")
    max_train_points: int = 400
    session_bias: bool = False
    refit_growth: float = 1.5

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> AdaptiveSettings:
        """Build from a (partial) mapping; unknown keys are an input error."""
        if not isinstance(values, dict):
            raise PtolemyInputError("adaptive settings must be a JSON object")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise PtolemyInputError(f"unknown adaptive setting(s): {', '.join(unknown)}")
        clean: dict[str, Any] = {}
        for key, value in values.items():
            default = getattr(cls(), key)
            try:
                if isinstance(default, bool):
                    clean[key] = bool(value)
                elif isinstance(default, tuple):
                    clean[key] = tuple(float(v) for v in value)
                elif isinstance(default, int):
                    clean[key] = int(value)
                else:
                    clean[key] = float(value)
            except (TypeError, ValueError):
                raise PtolemyInputError(f"adaptive setting {key}: {value!r} is not a number") from None
        return cls(**clean)
