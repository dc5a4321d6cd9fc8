"""The square-image simulator: determinism, Beer–Lambert, geometry of the truth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ptolemy_core.synth.physics import LAMBDA_NM
from ptolemy_core.synth.square_image import simulate_square_image


def test_deterministic_from_seed():
    a = simulate_square_image(11, shape=(256, 320))
    b = simulate_square_image(11, shape=(256, 320))
    c = simulate_square_image(12, shape=(256, 320))
    assert np.array_equal(a.data, b.data)
    assert a.truth == b.truth
    assert not np.array_equal(a.data.astype(float)[:200, :200], c.data.astype(float)[:200, :200])


def test_truth_fields_and_types():
    s = simulate_square_image(3, shape=(300, 400), film="carbon", contrast="inverted", lattice="hex",
                              bar=True)
    t = s.truth
    assert t["kind"] == "square" and t["shape"] == [300, 400]
    assert t["film"] == "carbon" and t["contrast"] == "inverted" and t["lattice"]["kind"] == "hex"
    assert set(t["lattice"]) >= {"kind", "basis", "origin", "tilt_deg"}
    assert t["bar"] is not None and t["i0"] > 0
    assert s.data.dtype in (np.int16, np.uint16, np.float32)
    for h in t["holes"]:
        assert set(h) >= {"id", "center", "radius", "ellipse", "visible_fraction", "ice_thickness_nm",
                          "good", "defect", "why"}
        assert 0 < h["visible_fraction"] <= 1
        assert h["defect"] in {"none", "empty", "broken", "thick", "crystalline", "cracked", "contaminated",
                               "cut"}
        if h["good"]:
            assert h["defect"] == "none" and 20 <= h["ice_thickness_nm"] <= 100


def _clean(seed, **kw):
    kw = dict(dict(defect_rate=0.0, film_blobs_per_cell=0.0, bar=False, jitter_px=0.0, gain_sigma=0.0,
                   dtype="float32", meniscus_nm=0.0, rim_od=0.0), **kw)
    return simulate_square_image(seed, **kw)


def test_beer_lambert_inside_holes():
    s = _clean(5, shape=(512, 640), film="carbon", contrast="normal", hole_px=40, dose=80.0)
    d = s.data.astype(float)
    i0 = s.truth["i0"]
    checked = 0
    for h in s.truth["holes"]:
        if h["visible_fraction"] < 1:
            continue
        x, y = h["center"]
        r = 0.5 * h["ellipse"]["b"]
        yy, xx = np.mgrid[0:d.shape[0], 0:d.shape[1]]
        m = (yy - y) ** 2 + (xx - x) ** 2 <= r * r
        expected = i0 * math.exp(-h["ice_thickness_nm"] / LAMBDA_NM["ice"]) * h["illumination"]
        sd = math.sqrt(expected / m.sum())
        assert abs(d[m].mean() - expected) < 5 * sd + 0.01 * expected
        checked += 1
    assert checked >= 10


def test_hole_centres_and_radii_match_rendering():
    s = _clean(7, shape=(400, 400), film="gold", hole_px=50, dose=200.0, psf_sigma_px=0.5)
    d = s.data.astype(float)
    thr = 0.5 * np.percentile(d, 99)
    for h in [h for h in s.truth["holes"] if h["visible_fraction"] == 1][:8]:
        x, y = h["center"]
        a = h["ellipse"]["a"]
        r0, r1 = int(y - a - 3), int(y + a + 4)
        c0, c1 = int(x - a - 3), int(x + a + 4)
        win = d[r0:r1, c0:c1] > thr
        yy, xx = np.nonzero(win)
        assert abs(yy.mean() + r0 - y) < 0.5 and abs(xx.mean() + c0 - x) < 0.5
        assert abs(math.sqrt(win.sum() / math.pi) - h["radius"]) < 1.0


def test_lattice_basis_matches_hole_positions():
    s = _clean(9, shape=(500, 600), lattice="oblique", tilt_deg=40.0)
    lat = s.truth["lattice"]
    basis = np.array(lat["basis"])
    origin = np.array(lat["origin"])
    centres = np.array([h["center"] for h in s.truth["holes"]])
    frac = np.linalg.solve(basis.T, (centres - origin).T).T
    assert np.abs(frac - np.rint(frac)).max() < 1e-6
    lengths = sorted(np.linalg.norm(basis, axis=1))
    assert lengths[0] < lengths[1] * 0.99 or abs(lengths[0] - lengths[1]) < 1e-6
    a_ax = [h["ellipse"] for h in s.truth["holes"]][0]
    assert a_ax["b"] == pytest.approx(a_ax["a"] * math.cos(math.radians(40.0)), rel=1e-6)


def test_bad_overrides():
    with pytest.raises(ValueError, match="unknown simulate_square_image override"):
        simulate_square_image(1, shape=(64, 64), nonsense=3)
    with pytest.raises(ValueError, match="film must be"):
        simulate_square_image(1, shape=(64, 64), film="silver")
