"""Ground truth of the atlas simulator checked against the rendered pixels."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ptolemy_core.metrics import points_in_polygons
from ptolemy_core.synth.atlas import DEFECTS, GOOD_ICE_NM, simulate_atlas
from ptolemy_core.synth.physics import LAMBDA_NM


def _rc(poly_xy):
    return np.asarray(poly_xy, float)[:, ::-1]


def _square_mask(shape, sq, shrink=1.0):
    """Pixels inside the square's rectangle scaled by ``shrink`` about its centre."""
    verts = _rc(sq["vertices"])
    ctr = verts.mean(axis=0)
    verts = ctr + shrink * (verts - ctr)
    r0, c0 = np.floor(verts.min(axis=0)).astype(int)
    r1, c1 = np.ceil(verts.max(axis=0)).astype(int)
    r0, c0 = max(r0, 0), max(c0, 0)
    r1, c1 = min(r1, shape[0] - 1), min(c1, shape[1] - 1)
    rr, cc = np.mgrid[r0:r1 + 1, c0:c1 + 1]
    pts = np.stack([rr.ravel(), cc.ravel()], axis=1)
    inside = points_in_polygons([verts], pts)[0]
    return rr.ravel()[inside], cc.ravel()[inside]


def test_deterministic_from_seed():
    a = simulate_atlas(11, shape=(256, 320))
    b = simulate_atlas(11, shape=(256, 320))
    c = simulate_atlas(12, shape=(256, 320))
    assert a.data.dtype == b.data.dtype
    assert np.array_equal(a.data, b.data)
    assert json.dumps(a.truth, sort_keys=True) == json.dumps(b.truth, sort_keys=True)
    assert not (a.data.shape == c.data.shape and np.array_equal(a.data, c.data))


def test_truth_fields_and_types():
    s = simulate_atlas(3, shape=(300, 500), montage=True)
    t = json.loads(json.dumps(s.truth))  # JSON-ready
    assert t["kind"] == "atlas" and t["shape"] == [300, 500]
    assert s.data.shape == (300, 500)
    assert isinstance(t["pixel_size_nm"], float) and 200 <= t["pixel_size_nm"] <= 600
    assert isinstance(t["seed"], int) and isinstance(t["params"], dict) and t["i0"] > 0
    assert set(t["grid"]) >= {"angle_deg", "pitch_px", "bar_fraction"}
    assert 0.25 <= t["grid"]["bar_fraction"] <= 0.45
    assert t["squares"]
    for k, sq in enumerate(t["squares"]):
        assert sq["id"] == k
        assert len(sq["center"]) == 2 and all(isinstance(v, float) for v in sq["center"])
        assert len(sq["vertices"]) == 4 and all(len(v) == 2 for v in sq["vertices"])
        assert 0 < sq["visible_fraction"] <= 1
        assert isinstance(sq["good"], bool) and sq["defect"] in DEFECTS and sq["why"]
        assert sq["ice_thickness_nm"] >= 0
        if sq["good"]:
            assert sq["defect"] == "none" and GOOD_ICE_NM[0] <= sq["ice_thickness_nm"] <= GOOD_ICE_NM[1]
        # Rectangle area equals the recorded area; centre is the mean of the vertices.
        v = np.asarray(sq["vertices"])
        side1, side2 = np.linalg.norm(v[1] - v[0]), np.linalg.norm(v[2] - v[1])
        assert side1 * side2 == pytest.approx(sq["area"], rel=1e-6)
        assert np.allclose(v.mean(axis=0), sq["center"])
    # Some squares are cut by the edge of a 300x500 image.
    assert any(sq["visible_fraction"] < 1 for sq in t["squares"])


def test_beer_lambert_inside_squares():
    # Flat illumination, no offset, high dose: a window's central mean is I0·T(t).
    s = simulate_atlas(5, shape=(768, 768), montage=False, falloff=0.0, offset=0.0, read_noise=0.0,
                       dose=3000.0, dtype="float32", rim=0.0, glow=0.0, meniscus_nm=0.0,
                       hole_pitch_um=2.0, pixel_size_nm=600.0, mesh=300)
    data = s.data.astype(np.float64)
    checked = 0
    for sq in s.truth["squares"]:
        if sq["visible_fraction"] < 1 or sq["defect"] not in ("none", "thick", "thin", "opaque", "empty"):
            continue
        rr, cc = _square_mask(data.shape, sq, shrink=0.6)
        measured = data[rr, cc].mean()
        expected = s.truth["i0"] * sq["transmission"]
        assert measured == pytest.approx(expected, rel=0.04, abs=15.0), sq
        checked += 1
    assert checked >= 5
    # And the recorded thickness follows from the recorded transmission (Beer–Lambert).
    p = s.truth["params"]
    film = p["hole_fraction"] + (1 - p["hole_fraction"]) * math.exp(-p["film_nm"] / 250.0)
    for sq in s.truth["squares"]:
        if sq["defect"] in ("none", "thick", "thin", "opaque"):
            assert sq["transmission"] == pytest.approx(
                film * math.exp(-sq["ice_thickness_nm"] / LAMBDA_NM["ice"]), rel=1e-4)


def test_vertices_enclose_bright_region_and_bars_dark():
    s = simulate_atlas(8, shape=(640, 640), montage=False, offset=0.0, dtype="float32",
                       defect_rates={k: 0.0 for k in ("broken", "empty", "thick", "opaque", "cracked",
                                                      "contaminated")}, glow=0.0)
    data = s.data.astype(np.float64)
    inside = np.zeros(data.shape, bool)
    for sq in s.truth["squares"]:
        rr, cc = _square_mask(data.shape, sq, shrink=1.0)
        inside[rr, cc] = True
    # Bright pixels lie inside the rectangles (the PSF spills at most a couple of pixels).
    from scipy import ndimage as ndi

    grown = ndi.binary_dilation(inside, iterations=3)
    bright = data > 0.3 * s.truth["i0"]
    assert bright.sum() > 0.2 * data.size
    assert np.count_nonzero(bright & ~grown) < 1e-3 * bright.sum()
    # Bars (far from every window) are dark: opaque, only noise remains.
    bars = ~ndi.binary_dilation(inside, iterations=6)
    assert bars.sum() > 0.05 * data.size
    assert data[bars].mean() < 0.02 * s.truth["i0"]
    # Window interiors are much brighter than bars.
    core = ndi.binary_erosion(inside, iterations=4)
    assert data[core].mean() > 0.3 * s.truth["i0"]


def test_montage_and_aspect_ratio():
    s = simulate_atlas(21, shape=(400, 900), montage=True, tiles=[3, 5], tile_brightness_sd=0.08)
    assert s.data.shape == (400, 900)
    assert s.truth["params"]["montage"] is True and s.truth["params"]["tiles"] == [3, 5]
    assert s.data.dtype in (np.int16, np.uint16, np.float32)


def test_unknown_override_is_rejected():
    with pytest.raises(ValueError, match="unknown atlas parameter"):
        simulate_atlas(0, shape=(128, 128), not_a_param=1)
