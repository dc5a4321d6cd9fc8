"""Hole measurements and the interpretable hole score: physics features and monotonicity."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ptolemy_core.holes import find_holes, locate, measure, score
from ptolemy_core.synth.square_image import simulate_square_image
from ptolemy_core.train.holes_interpretable import labelled_rows, target_features

CLEAN = dict(defect_rate=0.0, film_blobs_per_cell=0.0, bar=False)


def _model(a=12.0):
    return locate.CellModel(sign=1.0, origin=np.zeros(2), a=a, b=a, angle_deg=0.0, hole_level=100.0,
                            film_level=50.0, template=np.zeros((3, 3), np.float32), contrast_snr=10.0)


def _grid_centres(n=6, pitch=48.0, off=30.0):
    r, c = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return np.column_stack([r.ravel(), c.ravel()]).astype(float) * pitch + off


def _scores_vs_thickness(t_nm):
    """Scores of otherwise ideal, wholly visible holes of thickness ``t_nm`` (I0 known)."""
    n = len(t_nm)
    feats = {"rel_brightness": np.ones(n), "noise_excess": np.ones(n), "dark_od": np.zeros(n),
             "ring_dark_fraction": np.zeros(n), "visible_fraction": np.ones(n),
             "edge_clearance": np.full(n, 5.0)}
    return score.interpretable_scores(feats, list(t_nm))


def test_shipped_weights_match_features_and_manifest():
    w = json.loads(score.WEIGHTS_PATH.read_text())
    assert w["features"] == list(score.FEATURES)
    assert score.load_weights()["coef"] == w["coef"]  # not the built-in defaults
    from ptolemy_core.models.registry import sha256_file

    manifest = json.loads((score.WEIGHTS_PATH.parent / "manifest.json").read_text())
    assert manifest["models"]["hole_interpretable"]["sha256"] == sha256_file(score.WEIGHTS_PATH)


def test_score_falls_with_thicker_ice_and_vacuum_is_bad():
    thick = _scores_vs_thickness(np.arange(80.0, 400.0, 10.0))
    # thicker ice (beyond the window) always scores lower, until the score underflows to ~0
    assert np.all(np.diff(thick) <= 0) and np.all(np.diff(thick)[thick[1:] > 1e-9] < 0)
    assert thick[0] > 0.8 and thick[-1] < 1e-3
    thin = _scores_vs_thickness(np.array([0.0, 5.0, 40.0, 60.0]))
    assert thin[0] < 0.2 and thin[0] < thin[1] < thin[2]  # vacuum is bad, ice in the window good
    assert thin[3] > 0.8


def test_relative_thickness_branch_when_i0_unknown():
    """Without I0 the score peaks at the typical hole and falls both ways (empty / thick)."""
    rel = np.exp(-np.array([-100.0, -40.0, 0.0, 40.0, 100.0, 200.0]) / 350.0)  # Δt in nm
    n = len(rel)
    feats = {"rel_brightness": rel, "noise_excess": np.ones(n), "dark_od": np.zeros(n),
             "ring_dark_fraction": np.zeros(n), "visible_fraction": np.ones(n),
             "edge_clearance": np.full(n, 5.0)}
    s = score.interpretable_scores(feats, [None] * n)
    k = int(np.argmax(s))
    assert k == 2 and np.all(np.diff(s[:3]) > 0) and np.all(np.diff(s[2:]) < 0)


def test_noise_excess_is_one_for_shot_noise_and_large_for_speckle():
    rng = np.random.default_rng(0)
    centres = _grid_centres()
    lam = np.full((300, 300), 40.0, np.float32)
    raw = rng.poisson(lam).astype(np.float32)
    m = _model()
    vis = np.ones(len(centres))
    f = measure.measure_holes(raw, centres, m, vis)
    assert np.median(f["noise_excess"]) == pytest.approx(1.0, abs=0.05)
    # crystalline-like speckle (correlated over ~1.5 px) inside one hole: excess variance
    from scipy import ndimage as ndi

    speck = ndi.gaussian_filter(rng.standard_normal((300, 300)), 1.2)
    speck /= speck.std()
    rr, cc = np.mgrid[0:300, 0:300]
    inside = (rr - centres[7, 0]) ** 2 + (cc - centres[7, 1]) ** 2 < 12.0 ** 2
    lam2 = np.where(inside, lam * (1 + 0.12 * speck), lam)
    raw2 = rng.poisson(lam2).astype(np.float32)
    f2 = measure.measure_holes(raw2, centres, m, vis)
    others = np.delete(f2["noise_excess"], 7)
    assert f2["noise_excess"][7] > 1.5 > others.max()


def test_dark_blob_raises_dark_od():
    rng = np.random.default_rng(1)
    centres = _grid_centres()
    rr, cc = np.mgrid[0:300, 0:300]
    blob = (rr - centres[9, 0] - 2) ** 2 + (cc - centres[9, 1] + 1) ** 2 < 4.0 ** 2
    lam = np.where(blob, 40.0 * np.exp(-2.0), 40.0)
    raw = rng.poisson(lam).astype(np.float32)
    f = measure.measure_holes(raw, centres, _model(), np.ones(len(centres)))
    assert f["dark_od"][9] > 0.8
    assert np.delete(f["dark_od"], 9).max() < 0.15


def test_edge_clearance_in_radii():
    m = _model(a=5.0)
    c = np.array([[10.0, 50.0], [50.0, 3.0], [50.0, 20.0]])
    clr = measure.measure_holes(np.full((100, 100), 10.0, np.float32), c, m, np.ones(3))["edge_clearance"]
    np.testing.assert_allclose(clr, [10.5 / 5, 3.5 / 5, 20.5 / 5])


def test_i0_estimate_from_empty_holes():
    s = simulate_square_image(52, shape=(768, 1024), film="carbon", contrast="normal", hole_px=40.0,
                              dose=60.0, defect_rate=0.3, film_blobs_per_cell=0.0, bar=False, falloff=0.0)
    res = find_holes(s.data)
    assert res.i0 == pytest.approx(s.truth["i0"], rel=0.03)


@pytest.mark.parametrize("seed,film", [(61, "gold"), (62, "carbon")])
def test_defective_holes_rank_below_good_ones(seed, film):
    """Contaminated, thick, empty and crystalline holes score below intact holes of good ice."""
    s = simulate_square_image(seed, shape=(768, 1024), film=film, contrast="normal", hole_px=45.0,
                              dose=50.0, defect_rate=0.35, bar=False)
    res = find_holes(s.data)
    idx, good = labelled_rows(s.truth, res.targets)
    sc = np.array([res.targets[i].score for i in idx])
    from ptolemy_core.metrics import points_in_ellipses, roc_auc, truth_hole_regions

    assert roc_auc(sc, good) > 0.9
    c, ax, ang, _ = truth_hole_regions(s.truth)
    det = np.array([res.targets[i].center for i in idx])
    owner = points_in_ellipses(c, ax, ang, det).argmax(axis=0)
    defect = np.array([s.truth["holes"][k]["defect"] for k in owner])
    for kind in ("contaminated", "thick", "empty"):
        sel = defect == kind
        if sel.sum():
            assert np.median(sc[sel]) < np.median(sc[good]) - 0.3, kind


def test_thicker_session_scores_lower_with_i0():
    """The same session simulated with thicker ice (130 vs 60 nm) scores lower, hole for hole."""
    kw = dict(shape=(512, 768), film="gold", hole_px=40.0, dose=60.0, gradient_nm=0.0, **CLEAN)
    lo = simulate_square_image(71, ice_nm=60.0, **kw)
    hi = simulate_square_image(71, ice_nm=130.0, **kw)
    s_lo = np.median([t.score for t in find_holes(lo.data, i0=lo.truth["i0"]).targets
                      if t.features["visible_fraction"] >= 0.999])
    s_hi = np.median([t.score for t in find_holes(hi.data, i0=hi.truth["i0"]).targets
                      if t.features["visible_fraction"] >= 0.999])
    assert s_hi < s_lo - 0.3


def test_target_features_carry_the_score_inputs():
    s = simulate_square_image(81, shape=(512, 640), film="gold", hole_px=40.0, dose=60.0, **CLEAN)
    res = find_holes(s.data)
    feats = target_features(res.targets)
    th = [t.features["ice_thickness_nm"] for t in res.targets]
    # (Target.features rounds visible_fraction to 3 decimals)
    np.testing.assert_allclose(score.interpretable_scores(feats, th), [t.score for t in res.targets],
                               atol=1e-3)


def test_score_barely_depends_on_the_other_holes_in_the_image():
    """Same holes scored in the whole image and in a crop (same I0): only per-image normalisation
    (the median noise ratio and gain) differs, so scores agree closely for holes away from the crop edge."""
    s = simulate_square_image(91, shape=(768, 1024), film="gold", hole_px=40.0, dose=50.0, defect_rate=0.2,
                              bar=False)
    full = find_holes(s.data, i0=s.truth["i0"])
    crop = find_holes(s.data[100:600, 150:800], i0=s.truth["i0"])
    fc = np.array([t.center for t in full.targets])
    diffs = []
    for t in crop.targets:
        if t.features["edge_clearance"] < 2:
            continue
        k = int(np.argmin(np.linalg.norm(fc - (np.array(t.center) + (100, 150)), axis=1)))
        diffs.append(abs(full.targets[k].score - t.score))
    assert len(diffs) > 40
    assert np.median(diffs) < 0.02 and np.percentile(diffs, 90) < 0.06
