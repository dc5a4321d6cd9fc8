"""Per-tile squares -> merged squares on the mosaic -> tile + delta row/col (plain functions)."""

import numpy as np
import pytest

from ptolemy_core.targets import Target
from ptolemy_leginon import atlas
from ptolemy_leginon import convert as cv


def grid_truth(n=7, pitch=64.0, size=48.0, origin=(20.0, 24.0), angle_deg=8.0):
    """Square centres (row, col) and outlines on a rotated grid in mosaic pixels."""
    a = np.deg2rad(angle_deg)
    u = np.array([np.cos(a), np.sin(a)])
    v = np.array([-np.sin(a), np.cos(a)])
    squares = []
    for i in range(n):
        for j in range(n):
            c = np.array(origin) + pitch * (i + 0.5) * u + pitch * (j + 0.5) * v
            h = size / 2
            verts = [tuple(c + h * (su * u + sv * v)) for su, sv in ((-1, -1), (-1, 1), (1, 1), (1, -1))]
            squares.append(
                {
                    "center": tuple(c),
                    "vertices": verts,
                    "score": round(0.1 + 0.8 * ((i * 7 + j * 3) % 11) / 10, 3),
                    "brightness": 100.0 + i + j,
                }
            )
    return squares


def clip_rect(verts, lo, hi):
    """Axis-aligned clip of a square's outline to the tile (returns the visible box's corners)."""
    p = np.asarray(verts)
    r0, c0 = np.maximum(p.min(axis=0), lo)
    r1, c1 = np.minimum(p.max(axis=0), hi)
    if r1 <= r0 or c1 <= c0:
        return None
    return [(r0, c0), (r0, c1), (r1, c1), (r1, c0)]


def tile_views(truth, tiles):
    """What a perfect finder sees on every tile: complete squares, and cut ones at tile edges."""
    out = {}
    for t in tiles:
        lo = np.array(t.corner)
        hi = lo + np.array(t.shape) - 1
        found = []
        for s in truth:
            p = np.asarray(s["vertices"])
            inside = np.all((p >= lo) & (p <= hi))
            if inside:
                verts = [tuple(v - lo) for v in p]
                center = tuple(np.asarray(s["center"]) - lo)
                area, edge = 48.0 * 48.0, False
            else:
                box = clip_rect(s["vertices"], lo, hi)
                if box is None:
                    continue
                b = np.asarray(box) - lo
                area = float(np.prod(b.max(axis=0) - b.min(axis=0)))
                if area < 200:
                    continue
                verts = [tuple(x) for x in b]
                center = tuple(b.mean(axis=0))
                edge = True
            found.append(
                Target(
                    "square",
                    center,
                    tuple(verts),
                    area,
                    s["score"] * (0.8 if edge else 1.0),
                    s["brightness"],
                    {"touches_edge": edge, "ice_thickness_nm": 30.0},
                )
            )
        out[t.key] = found
    return out


TILES = [
    cv.TilePlacement(k, corner, (256, 256))
    for k, corner in enumerate([(0.0, 0.0), (0.0, 224.0), (224.0, 0.0), (224.0, 224.0)])
]


def test_merged_squares_match_truth_and_map_back_through_tiles():
    truth = [
        s
        for s in grid_truth()
        if np.asarray(s["vertices"]).max() < 479 and np.asarray(s["vertices"]).min() >= 0
    ]
    views = tile_views(truth, TILES)
    n_views = sum(len(v) for v in views.values())
    merged = atlas.squares_from_tiles(views, TILES)
    assert n_views > len(truth)  # overlaps really produced duplicates
    assert len(merged) == len(truth)
    centres = np.array([s["center"] for s in truth])
    cut_only = []
    for sq in merged:
        d = np.hypot(*(centres - np.array(sq.center)).T)
        k = int(np.argmin(d))
        if sq.complete:
            assert d[k] < 1e-6, sq  # the complete view's centre wins
            assert sq.area == pytest.approx(48.0 * 48.0)
            assert sq.score == pytest.approx(truth[k]["score"])  # max over views
        else:
            cut_only.append(sq)
            assert d[k] < 1.0, sq  # centroid of the union of cut views
            # the test's cut views are axis-aligned boxes of a square turned by 8 degrees
            box = 48.0 * (np.cos(np.deg2rad(8)) + np.sin(np.deg2rad(8)))
            assert 0.9 * 48.0**2 <= sq.area <= 1.01 * box**2
        # the outline is the union of all views' vertices: contains every truth corner
        for corner in truth[k]["vertices"]:
            assert atlas.point_in_polygon(corner, sq.vertices)
        # tile + delta round trip back to the mosaic position
        tile = next(t for t in TILES if t.key == sq.tile_key)
        on_tile = cv.delta_to_full(sq.delta, tile.shape)
        assert cv.tile_to_mosaic(on_tile, tile) == pytest.approx(sq.center)
        assert tile is cv.nearest_tile(sq.center, TILES)
    assert 0 < len(cut_only) < len(merged) / 4
    ranks = [sq.features["rank"] for sq in merged]
    assert ranks == list(range(1, len(merged) + 1))
    assert [sq.score for sq in merged] == sorted((sq.score for sq in merged), reverse=True)


def test_same_tile_squares_never_merge_and_neighbours_stay_apart():
    t = Target(
        "square", (50.0, 50.0), ((30.0, 30.0), (30.0, 70.0), (70.0, 70.0), (70.0, 30.0)), 1600.0, 0.5, 1.0, {}
    )
    inner = Target(
        "square", (52.0, 52.0), ((45.0, 45.0), (45.0, 59.0), (59.0, 59.0), (59.0, 45.0)), 196.0, 0.9, 1.0, {}
    )
    tiles = [cv.TilePlacement("a", (0.0, 0.0), (100, 100)), cv.TilePlacement("b", (0.0, 60.0), (100, 100))]
    # the same tile: two detections stay two
    assert len(atlas.merge_squares(atlas.place_tile_squares({"a": [t, inner]}, tiles))) == 2
    # a neighbour one pitch away on the other tile: centre outside the outline -> not merged
    neigh = Target(
        "square", (50.0, 30.0), ((30.0, 10.0), (30.0, 50.0), (70.0, 50.0), (70.0, 10.0)), 1600.0, 0.2, 1.0, {}
    )  # mosaic centre (50, 90)
    assert len(atlas.merge_squares(atlas.place_tile_squares({"a": [t], "b": [neigh]}, tiles))) == 2


def test_cut_only_views_use_union_outline():
    # a square straddling two tiles, cut in both: area from the union, centre area-weighted
    left = Target(
        "square",
        (50.0, 90.0),
        ((30.0, 80.0), (30.0, 99.0), (70.0, 99.0), (70.0, 80.0)),
        760.0,
        0.3,
        2.0,
        {"touches_edge": True},
    )
    right = Target(
        "square",
        (50.0, 10.0),
        ((30.0, 0.0), (30.0, 20.0), (70.0, 20.0), (70.0, 0.0)),
        800.0,
        0.6,
        4.0,
        {"touches_edge": True},
    )
    tiles = [cv.TilePlacement("a", (0.0, 0.0), (100, 100)), cv.TilePlacement("b", (0.0, 90.0), (100, 100))]
    merged = atlas.merge_squares(atlas.place_tile_squares({"a": [left], "b": [right]}, tiles))
    assert len(merged) == 1
    m = merged[0]
    assert m.score == 0.6 and m.features["n_views"] == 2 and m.features["touches_edge"] is True
    assert m.area == pytest.approx(40 * 30)  # hull of cols 80..110, rows 30..70
    assert m.center == pytest.approx((50.0, 95.0))  # centroid of the union outline
    assert m.brightness == pytest.approx((2.0 * 760 + 4.0 * 800) / 1560)


def test_geometry_helpers():
    sq = [(0, 0), (0, 10), (10, 10), (10, 0)]
    assert atlas.polygon_area(sq) == 100
    assert atlas.point_in_polygon((5, 5), sq) and atlas.point_in_polygon((0, 5), sq)
    assert not atlas.point_in_polygon((11, 5), sq)
    hull = atlas.convex_hull(sq + [(5, 5), (0, 0)])
    assert sorted(hull) == sorted((float(a), float(b)) for a, b in sq)


def test_cut_views_rescored_on_their_union_visibility():
    # one 40x40 window at mosaic rows 30..70, cols 80..120, straddling three tiles' edges:
    # each tile sees less than half of it, together they see 30/40 of its width
    def view(cols, corner_col, score, vis):
        c0, c1 = cols
        return Target(
            "square",
            (50.0, (c0 + c1) / 2),
            ((30.0, c0), (30.0, c1), (70.0, c1), (70.0, c0)),
            40.0 * (c1 - c0),
            score,
            2.0,
            {
                "touches_edge": True,
                "visible_fraction": vis,
                "expected_vertices": tuple(
                    (r, c - corner_col) for r, c in ((30.0, 80.0), (30.0, 120.0), (70.0, 120.0), (70.0, 80.0))
                ),
            },
        )

    left = view((80.0, 99.0), 0.0, 0.2, 19 / 40)
    right = view((0.0, 20.0), 90.0, 0.25, 20 / 40 - 1e-3)  # mosaic cols 90..110
    tiles = [cv.TilePlacement("a", (0.0, 0.0), (100, 100)), cv.TilePlacement("b", (0.0, 90.0), (100, 100))]
    placed = atlas.place_tile_squares({"a": [left], "b": [right]}, tiles)
    # the expected window travels to mosaic pixels with the view
    assert placed[1].features["expected_vertices"][0] == pytest.approx((30.0, 80.0))
    calls = []

    def rescore(score, old, new, area_ratio):
        calls.append((score, old, new, area_ratio))
        return 0.9

    (m,) = atlas.merge_squares(placed, rescore)
    score, old, new, ratio = calls[0]
    assert score == 0.25 and old == pytest.approx(0.5 - 1e-3)  # the most visible view
    assert new == pytest.approx(30 / 40) and ratio == pytest.approx(1200 / 800)
    assert m.score == 0.9 and m.features["visible_fraction"] == pytest.approx(0.75)
    assert m.features["touches_edge"] is True  # a quarter is still missing
    # without a re-scorer (e.g. the CNN) the views' best score stands, visibility is still corrected
    (m2,) = atlas.merge_squares(atlas.place_tile_squares({"a": [left], "b": [right]}, tiles))
    assert m2.score == 0.25 and m2.features["visible_fraction"] == pytest.approx(0.75)
