"""Every Leginon coordinate conversion, with round trips and Leginon's own formulas as oracle."""

import math

import numpy as np
import pytest

from ptolemy_leginon import convert as cv

SHAPES = [
    (1024, 1024),
    (1024, 1440),
    (2048, 2048),
    (4096, 4096),
    (4092, 5760),
    (4098, 4099),
    (4102, 4097),
    (1441, 1000),
    (11520, 11520 + 3),
]


def leginon_shrink_factor(shape):
    # pyami.imagefun.shrink_factor, as documented in the harness README
    for b in (1, 2, 4, 8):
        if max(shape) // b <= 1440:
            break
    return b


@pytest.mark.parametrize("shape", SHAPES)
def test_shrink_factor_and_offset_match_leginon(shape):
    b = leginon_shrink_factor(shape)
    assert cv.shrink_factor(shape) == b
    if b == 1:
        assert cv.shrink_offset(shape) == (0, 0)
    else:
        assert cv.shrink_offset(shape) == (
            (shape[0] - b * (shape[0] // b)) // 2,
            (shape[1] - b * (shape[1] // b)) // 2,
        )


def test_shrink_factor_values_from_harness():
    # confirmed on Leginon's real code (sample_output.txt, section c)
    assert (cv.shrink_factor((4092, 5760)), cv.shrink_offset((4092, 5760))) == (4, (0, 0))
    assert (cv.shrink_factor((4098, 4099)), cv.shrink_offset((4098, 4099))) == (4, (1, 1))
    assert (cv.shrink_factor((4102, 4097)), cv.shrink_offset((4102, 4097))) == (4, (1, 0))
    assert cv.shrink_factor((2048, 2048)) == 2


@pytest.mark.parametrize("shape", [(64, 80), (3001, 2999), (4102, 4097)])
def test_shrink_image_is_block_mean_in_leginon_frame(shape):
    rng = np.random.default_rng(0)
    img = rng.normal(100, 5, shape).astype(np.float32)
    small, b, off = cv.shrink_image(img)
    assert b == cv.shrink_factor(shape) and off == cv.shrink_offset(shape)
    assert small.shape == (shape[0] // b, shape[1] // b)
    assert small.dtype == np.float32
    i, j = small.shape[0] // 2, small.shape[1] // 3
    block = img[off[0] + i * b : off[0] + (i + 1) * b, off[1] + j * b : off[1] + (j + 1) * b]
    assert small[i, j] == pytest.approx(block.mean(), rel=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
def test_full_shrunk_round_trip_and_leginon_publish_formula(shape):
    rng = np.random.default_rng(1)
    for r, c in rng.uniform(0, 1, (20, 2)) * np.array(shape):
        sr, sc = cv.full_to_shrunk((r, c), shape)
        assert cv.shrunk_to_full((sr, sc), shape) == pytest.approx((r, c), abs=1e-9)
        # what TargetFinder.publishTargets does with panel (x=sc, y=sr)
        b, off = cv.shrink_factor(shape), cv.shrink_offset(shape)
        drow = sr * b + off[0] - shape[0] / 2
        dcol = sc * b + off[1] - shape[1] / 2
        assert cv.panel_to_delta((sc, sr), shape) == pytest.approx((drow, dcol))
        # ... and the delta lands exactly on the full-resolution point
        assert cv.delta_to_full((drow, dcol), shape) == pytest.approx((r, c), abs=1e-9)
        assert cv.full_to_panel((r, c), shape) == pytest.approx((sc, sr))


@pytest.mark.parametrize("shape", SHAPES[:5])
def test_delta_panel_round_trips(shape):
    for d in [(0.0, 0.0), (-100.5, 37.25), (shape[0] / 2 - 1, -shape[1] / 2)]:
        assert cv.panel_to_delta(cv.delta_to_panel(d, shape), shape) == pytest.approx(d, abs=1e-9)
        assert cv.full_to_delta(cv.delta_to_full(d, shape), shape) == pytest.approx(d, abs=1e-9)


def test_harness_confirmed_panel_examples():
    # (4098, 4099): panel (x=100.5, y=40.25) -> drow -1887.0, dcol -1646.5 (sample_output.txt)
    assert cv.panel_to_delta((100.5, 40.25), (4098, 4099)) == pytest.approx((-1887.0, -1646.5))
    assert cv.panel_to_delta((100.5, 40.25), (4102, 4097)) == pytest.approx((-1889.0, -1646.5))
    assert cv.panel_to_delta((720, 511.5), (4092, 5760)) == pytest.approx((0.0, 0.0))


def test_xy_rc_round_trip():
    assert cv.xy_to_rc(cv.rc_to_xy((3.5, 7.25))) == (3.5, 7.25)
    assert cv.rc_to_xy((3.5, 7.25)) == (7.25, 3.5)


def test_lattice_matrix_centercarbon_lands_between_holes_for_hex_lattice():
    # hexagonal lattice, vectors as rows (row, col), full resolution, image 2048^2 (b = 2)
    a = 180.0
    basis = np.array([[0.0, a], [a * math.sin(math.pi / 3), a * 0.5]])
    m = cv.lattice_matrix_for_leginon(basis, (2048, 2048))
    assert m.shape == (2, 2)
    # IceTargetFinder.centerCarbon: c = p + (dot[1], dot[0]) with dot = M.dot((+-0.5, +-0.5)), p = (x, y)
    hole = np.array([500.0, 400.0])  # (row, col) in the shrunk frame
    for s in [(1, 1), (-1, 1), (1, -1), (-1, -1)]:
        d = m.dot((0.5 * s[0], 0.5 * s[1]))
        point = hole + d  # (row, col)
        expect = hole + (0.5 * s[0] * basis[0] + 0.5 * s[1] * basis[1]) / 2
        assert point == pytest.approx(expect)
    assert cv.lattice_matrix_for_leginon(None, (100, 100)) is None


def test_square_lattice_matrix_equals_leginons_symmetric_form():
    v1 = np.array([0.0, -100.0])
    leginon = np.array([v1, [v1[1], -v1[0]]])  # scorefinderback.setLatticeMatrix
    ours = cv.lattice_matrix_for_leginon(leginon, (1024, 1024))
    assert ours == pytest.approx(leginon)


def test_mosaic_tile_round_trip_and_nearest_tile():
    tiles = [
        cv.TilePlacement(k, (r, c), (512, 512))
        for k, (r, c) in enumerate([(0, 0), (0, 480), (480, 0), (480, 480)])
    ]
    assert tiles[3].center_pos == (736, 736)
    for rc in [(10.5, 20.25), (300.0, 700.0), (900.0, 100.0), (990.0, 990.0)]:
        tile, on_tile = cv.mosaic_to_tile(rc, tiles)
        assert cv.tile_to_mosaic(on_tile, tile) == pytest.approx(rc)
        d = cv.tile_delta(on_tile, tile)
        assert cv.delta_to_full(d, tile.shape) == pytest.approx(on_tile)
    assert cv.nearest_tile((600, 600), tiles).key == 3
    assert cv.nearest_tile((100, 900), tiles).key == 1
    for scale in (0.5151, 1.0, 0.0625):
        xy = cv.mosaic_to_display((123.4, 567.8), scale)
        assert cv.display_to_mosaic(xy, scale) == pytest.approx((123.4, 567.8))
