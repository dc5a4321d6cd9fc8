"""The session-adaptive ranker: update direction, ice calibration, simulated sessions."""

from __future__ import annotations

import numpy as np
import pytest

from ptolemy_core.adaptive import AdaptiveSettings, SessionRanker, fit_ice_calibration
from ptolemy_core.adaptive.simulate import make_session, play
from ptolemy_core.errors import PtolemyInputError

pytest.importorskip("sklearn")


#: The feedback model on its own (no evidence test): always trust the feedback.
ALWAYS_ADAPT = AdaptiveSettings(prior_wrong_log_odds=-np.inf)


def two_group_ranker(seed=0, settings=ALWAYS_ADAPT):
    """20 squares in two clusters of feature space (A: 0-9, B: 10-19), equal priors."""
    rng = np.random.default_rng(seed)
    a = rng.normal([0.0, 0.0], 0.1, size=(10, 2))
    b = rng.normal([5.0, 5.0], 0.1, size=(10, 2))
    r = SessionRanker(settings)
    r.add_squares(range(20), np.vstack([a, b]), np.full(20, 0.5))
    return r


def visit_square(r, square_id, ctfs, first_hole_id):
    n = len(ctfs)
    ids = list(range(first_hole_id, first_hole_id + n))
    r.add_holes(ids, square_ids=square_id, intensity=np.full(n, 500.0), i0=1000.0, prior=np.full(n, 0.5))
    r.record_visits(ids, ctfs, np.full(n, 100.0))
    return first_hole_id + n


def test_no_feedback_keeps_prior_order():
    r = SessionRanker()
    prior = np.array([0.2, 0.9, 0.5, 0.7])
    r.add_squares(range(4), np.arange(8.0).reshape(4, 2), prior)
    s = r.square_scores()
    assert list(np.argsort(-s.ucb)) == [1, 3, 2, 0]
    np.testing.assert_allclose(s.mean, prior)


@pytest.mark.parametrize("ctf, direction", [(8.0, -1), (3.0, +1)])
def test_square_update_direction(ctf, direction):
    r = two_group_ranker()
    before = r.square_scores()
    nxt = 0
    for sq in (0, 1, 2):  # three squares of group A report 8 exposures each
        nxt = visit_square(r, sq, [ctf] * 8, nxt)
    after = r.square_scores()
    change_a = after.mean[3:10] - before.mean[3:10]
    change_b = after.mean[10:] - before.mean[10:]
    # Unvisited look-alikes of the visited squares move in the feedback's direction ...
    assert np.all(direction * change_a > 0.15)
    # ... the squares that look different move less (only the session-wide part of
    # the residual, the constant kernel term, reaches them), in the same direction.
    assert np.all(direction * change_b >= 0)
    assert np.all(np.abs(change_b) < 0.7 * np.abs(change_a).min())
    # Posterior sd shrinks near the data (exploration goes elsewhere).
    assert after.sd[3:10].max() < after.sd[10:].min()


def test_ucb_beta_trades_exploitation_for_exploration():
    r = two_group_ranker()
    nxt = 0
    for sq in (0, 1):
        nxt = visit_square(r, sq, [3.0] * 5 + [8.0] * 3, nxt)  # group A: 5/8 good
    s = r.square_scores()
    assert s.sd[15] > s.sd[5]
    greedy = SessionRanker(AdaptiveSettings(ucb_beta=0.0, prior_wrong_log_odds=-np.inf))
    explore = SessionRanker(AdaptiveSettings(ucb_beta=3.0, prior_wrong_log_odds=-np.inf))
    for rk in (greedy, explore):
        rk.add_squares(range(20), np.asarray(r._sq_feat), np.full(20, 0.5))
        nxt = 0
        for sq in (0, 1):
            nxt = visit_square(rk, sq, [3.0] * 5 + [8.0] * 3, nxt)
    g, e = greedy.square_scores(), explore.square_scores()
    assert np.argmax(g.ucb) < 10  # exploit the known-good cluster
    assert np.argmax(e.ucb) >= 10  # explore the unknown one


def _ranked_session(ctf_of_visited):
    """30 squares, prior falling with a feature; the top three report 6 exposures each."""
    rng = np.random.default_rng(5)
    feats = rng.normal(0, 1, size=(30, 3))
    prior = np.clip(0.6 + 0.15 * feats[:, 0] + 0.02 * rng.normal(size=30), 0.05, 0.95)
    r = SessionRanker(AdaptiveSettings(prior_wrong_log_odds=0.0))  # even odds
    r.add_squares(range(30), feats, prior)
    top = np.argsort(-prior)[:3]
    nxt = 0
    for sq in top:
        nxt = visit_square(r, int(sq), [ctf_of_visited] * 6, nxt)
    rest = np.setdiff1d(np.arange(30), top)
    return r, prior, rest


def test_evidence_test_keeps_prior_order_when_feedback_agrees():
    # Better than promised (all good): nothing to gain by leaving the prior's order.
    r, prior, rest = _ranked_session(3.0)
    s = r.square_scores(rest)
    assert s.weight == 0.0  # the test has not fired: exactly the prior's order, no exploration
    assert list(np.argsort(-s.ucb, kind="stable")) == list(np.argsort(-prior[rest], kind="stable"))
    # Worse than promised (all bad): the feedback model takes over and the
    # look-alikes of the failed squares (high feature 0) drop.
    r, prior, rest = _ranked_session(9.0)
    s = r.square_scores(rest)
    assert s.weight > 0.6  # = P(wrong) - P(right) at even prior odds
    assert list(np.argsort(-s.ucb, kind="stable")) != list(np.argsort(-prior[rest], kind="stable"))
    assert np.all(s.mean < prior[rest] + 1e-9)
    # The gate's two limits.
    for odds, expect in ((np.inf, 0.0), (-np.inf, 1.0)):
        g = SessionRanker(AdaptiveSettings(prior_wrong_log_odds=odds))
        g.add_squares(range(30), np.asarray(r._sq_feat), prior)
        visit_square(g, 0, [9.0] * 6, 0)
        assert g.square_scores().weight == pytest.approx(expect)


def test_gate_is_zero_until_the_evidence_beats_the_margin():
    """w = 0 (prior order) while log BF <= margin, then rises continuously from 0."""
    r, prior, rest = _ranked_session(9.0)
    gp, _, _, _ = r._square_model()
    y = np.zeros(3)
    top = np.argsort(-prior)[:3]
    var = np.full(3, r._rate() * (1 - r._rate()) / 6)
    from ptolemy_core.adaptive.gp import prior_kept_evidence

    log_bf = gp.log_evidence - prior_kept_evidence(y, prior[top], var)
    assert log_bf > 1.0
    assert r._prior_wrong_weight(gp, y, prior[top], var, tau=log_bf + 1e-9) == 0.0
    assert r._prior_wrong_weight(gp, y, prior[top], var, tau=log_bf + 5.0) == 0.0
    assert 0.0 < r._prior_wrong_weight(gp, y, prior[top], var, tau=log_bf - 0.01) < 0.01
    assert r._prior_wrong_weight(gp, y, prior[top], var, tau=log_bf - 1.0) == pytest.approx(np.tanh(0.5))


def test_hole_gate_closed_keeps_the_hole_prior_order_exactly():
    """Hole feedback that the test does not call 'prior wrong' leaves the hole order alone."""
    lam, i0 = 350.0, 1000.0
    rng = np.random.default_rng(2)
    t = rng.uniform(10, 160, 60)
    prior = np.exp(-0.5 * ((t - 40) / 25) ** 2)
    r = SessionRanker(AdaptiveSettings(hole_prior_wrong_log_odds=np.inf))
    r.add_holes(range(60), square_ids=0, intensity=i0 * np.exp(-t / lam), i0=i0, prior=prior)
    r.record_visits(range(20), np.where(t[:20] > 80, 3.5, 9.0), t[:20])
    s = r.hole_scores(range(20, 60))
    assert s.weight == 0.0
    assert list(np.argsort(-s.ucb, kind="stable")) == list(np.argsort(-prior[20:], kind="stable"))


def _squares_of_holes(settings, seed, ctf_of, bad_square=None):
    """8 squares x 5 exposed holes in the usual ice (prior prefers ~40 nm); returns the hole weight."""
    rng = np.random.default_rng(seed)
    lam, i0 = 350.0, 1000.0
    r = SessionRanker(settings)
    for s in range(8):
        t = rng.uniform(15, 70) * (1 + 0.15 * rng.standard_normal(5))
        ids = list(range(5 * s, 5 * s + 5))
        r.add_holes(ids, square_ids=s, intensity=i0 * np.exp(-t / lam), i0=i0,
                    prior=np.exp(-0.5 * ((t - 40) / 25) ** 2))
        r.record_visits(ids, np.full(5, 5.6) if s == bad_square else ctf_of(t), t)
    return r.hole_scores().weight


def test_hole_evidence_ignores_one_uniformly_bad_square():
    """A square-level defect (all of one square's holes bad, e.g. crystalline ice) is no
    evidence that the hole-thickness prior is wrong: the square offsets absorb it."""
    good_everywhere = lambda t: np.full(len(t), 3.4)  # noqa: E731
    with_offset = AdaptiveSettings(hole_prior_wrong_log_odds=0.0, hole_square_offset=True)
    without = AdaptiveSettings(hole_prior_wrong_log_odds=0.0)
    fired_without = 0
    for seed in range(6):
        assert _squares_of_holes(with_offset, seed, good_everywhere, bad_square=3) == 0.0
        fired_without += _squares_of_holes(without, seed, good_everywhere, bad_square=3) > 0.0
    assert fired_without >= 1  # the plain test reads that square as a thickness effect
    # A real thickness effect (only ice < 32 nm is good: a thin-ice sample) still fires
    # at the default margin, across and within squares.
    thin_sample = lambda t: np.where(t < 32, 3.4, 5.8)  # noqa: E731
    weights = [_squares_of_holes(AdaptiveSettings(hole_square_offset=True), seed, thin_sample)
               for seed in range(6)]
    assert sum(w > 0.9 for w in weights) >= 5


def test_grouped_evidence_reduces_to_the_plain_tests_without_offsets():
    from ptolemy_core.adaptive import gp as gpmod

    rng = np.random.default_rng(4)
    y = (rng.random(30) < 0.6).astype(float)
    p, var, groups = rng.random(30), np.full(30, 0.24), np.repeat(np.arange(6), 5)
    plain = gpmod.prior_kept_evidence(y, p, var)
    assert gpmod.prior_kept_evidence_grouped(y, p, var, groups) >= plain - 1e-9
    x = rng.uniform(0, 100, (30, 1))
    g = gpmod.residual_gp(x, y - p, var, amplitude=0.2, length_scale=30.0, length_bounds=(5.0, 1000.0),
                          fit=False, offset=0.0)
    # Direct evidence with the best square-offset variance of the grid = the Woodbury form.
    z = np.eye(6)[groups]
    k = g.latent_kernel(x) + np.diag(var + g.noise)
    direct = []
    for v in gpmod.GROUP_VAR_GRID:
        c = k + v * z @ z.T
        sign, logdet = np.linalg.slogdet(c)
        r = y - p
        direct.append(-0.5 * (r @ np.linalg.solve(c, r) + logdet + 30 * np.log(2 * np.pi)))
    assert gpmod.group_offset_evidence(g, groups) == pytest.approx(max(direct), abs=1e-8)
    assert direct[0] == pytest.approx(g.log_evidence, abs=1e-8)
    # One group per target of size one and v = 0 only: the grouped null is the plain null.
    grid = gpmod.GROUP_VAR_GRID
    try:
        gpmod.GROUP_VAR_GRID = np.array([0.0])
        assert gpmod.prior_kept_evidence_grouped(y, p, var, groups) == pytest.approx(plain, abs=1e-9)
    finally:
        gpmod.GROUP_VAR_GRID = grid


@pytest.mark.parametrize("scenario", ["usual", "thin"])
def test_closed_gates_reduce_ours_to_prior_only(scenario):
    """With both evidence tests closed, ours plays exactly the prior-only session."""
    closed = AdaptiveSettings(prior_wrong_log_odds=np.inf, hole_prior_wrong_log_odds=np.inf)
    for seed in (3, 4):
        session = make_session(seed, scenario, "train")
        ours = play(session, "ours", budget=40, settings=closed)
        prior = play(session, "prior", budget=40, settings=closed)
        assert np.array_equal(ours.cumulative, prior.cumulative) and ours.squares == prior.squares


def test_ice_calibration_recovers_lambda_and_i0_factor():
    rng = np.random.default_rng(3)
    t = rng.uniform(10, 150, 40)
    i0_true = 200.0
    intensity = i0_true * np.exp(-t / 300.0)
    i0_finder = i0_true / 1.2  # the finder's I0 is 1.2x too low
    measured = t + rng.normal(0, 2.0, t.size)
    cal = fit_ice_calibration(intensity, np.full(t.size, i0_finder), measured)
    assert cal.fitted_lambda and cal.n_pairs >= 38
    assert cal.lambda_nm == pytest.approx(300.0, rel=0.03)
    assert cal.i0_factor == pytest.approx(1.2, rel=0.03)
    assert cal.rmse_nm < 3.0
    np.testing.assert_allclose(cal.thickness(intensity, i0_finder), t, atol=6.0)
    # Two pairs only: λ stays at the default, the I0 factor is still fitted.
    few = fit_ice_calibration(intensity[:2], [i0_finder] * 2, t[:2])
    assert not few.fitted_lambda and few.lambda_nm == AdaptiveSettings().lambda_nm
    assert few.thickness(intensity[:2], i0_finder) == pytest.approx(t[:2], abs=10.0)
    # An outlier (a failed ice measurement) does not move the fit.
    bad = measured.copy()
    bad[0] = 900.0
    robust = fit_ice_calibration(intensity, [i0_finder] * t.size, bad)
    assert robust.lambda_nm == pytest.approx(300.0, rel=0.03)


def test_holes_rerank_to_the_learned_ice_window():
    """Prior favours thin ice; feedback says thick ice is good -> thick holes move up."""
    lam, i0 = 350.0, 1000.0
    r = SessionRanker()
    rng = np.random.default_rng(1)
    t = rng.uniform(10, 160, 60)
    prior = np.exp(-0.5 * ((t - 40) / 25) ** 2)  # the usual ~40 nm preference
    r.add_holes(range(60), square_ids=0, intensity=i0 * np.exp(-t / lam), i0=i0, prior=prior)
    ctf = np.where((t > 80) & (t < 140), 3.5, 9.0)
    r.record_visits(range(40), ctf[:40], t[:40])
    s = r.hole_scores(range(40, 60))
    tt = t[40:]
    good = (tt > 85) & (tt < 135)
    thin = tt < 60
    assert good.any() and thin.any()
    assert s.mean[good].min() > s.mean[thin].max()
    lo, hi = r.ice_window()
    assert 70 <= lo <= 95 and 125 <= hi <= 150
    np.testing.assert_allclose(r.hole_thickness(range(60)), t, atol=1.0)


def test_settings_from_dict_rejects_unknown_keys():
    assert AdaptiveSettings.from_dict({"ucb_beta": "2"}).ucb_beta == 2.0
    with pytest.raises(PtolemyInputError, match="^unknown adaptive setting\\(s\\): beta$"):
        AdaptiveSettings.from_dict({"beta": 1})
    r = SessionRanker()
    r.add_squares([4], [[1.0]], [0.5])
    with pytest.raises(PtolemyInputError, match="^square id 4 already registered$"):
        r.add_squares([4], [[1.0]], [0.5])
    assert r.record_visits([99], [3.0], [50.0]) == [99]


def test_simulated_session_end_to_end():
    """Whole sessions in Leginon's call order; ours beats prior-only where the prior is wrong."""
    goods = {"prior": [], "ours": []}
    for seed in (11, 12, 13):
        session = make_session(seed, "thick", "test")
        for policy in goods:
            res = play(session, policy, budget=100, per_square=5)
            assert res.exposures == 100 and res.squares == 20
            assert np.all(np.diff(res.cumulative) >= 0) and res.cumulative[-1] == res.good
            goods[policy].append(res.good)
    assert sum(goods["ours"]) > sum(goods["prior"])


def test_simulate_session_cli(tmp_path, capsys):
    from ptolemy_core.cli.main import main

    png = tmp_path / "curves.png"
    rc = main(["simulate-session", "--sessions", "1", "--budget", "20", "--scenarios", "usual",
               "--policies", "random,prior,reference-gp", "--plot", str(png)])
    out = capsys.readouterr().out
    assert rc == 0
    assert ("| scenario | sessions | random | prior | reference-gp | ours vs prior | ours < prior "
            "| worst ours - prior |") in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["simulate-session", "--scenarios", "odd"]) == 2


def test_simulate_session_checks_output_paths_before_simulating(tmp_path, capsys):
    from ptolemy_core.cli.main import main

    missing = tmp_path / "no" / "such" / "curves.png"
    assert main(["simulate-session", "--sessions", "50", "--plot", str(missing)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"ptolemy simulate-session: error: --plot folder {missing.parent} does not exist"]
    assert main(["simulate-session", "--json", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"ptolemy simulate-session: error: --json {tmp_path} is a directory"


@pytest.mark.parametrize("argv, message", [
    (["--tune-evidence", "--tune-grid", ","], "--tune-grid: ',' is not a comma-separated list of numbers"),
    (["--tune-hole-evidence", "--tune-grid", "1,nan"],
     "--tune-grid: '1,nan' is not a comma-separated list of numbers"),
    (["--prior-wrong-log-odds", "nan"], "--prior-wrong-log-odds must be a number, inf or -inf, not nan"),
    (["--hole-prior-wrong-log-odds", "NaN"],
     "--hole-prior-wrong-log-odds must be a number, inf or -inf, not nan"),
])
def test_simulate_session_rejects_empty_or_nan_margins(capsys, argv, message):
    from ptolemy_core.cli.main import main

    assert main(["simulate-session", "--sessions", "50", *argv]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"ptolemy simulate-session: error: {message}"]
