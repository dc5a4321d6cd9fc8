"""PtolemySquareFinder / PtolemyHoleFinder on contract fakes of Leginon (no Leginon installed).

End to end: a simulated atlas split into overlapping tiles -> ranked square
targets whose tile + delta row/col map back to the simulated squares; square
images of 2048² and 4096² -> hole targets whose full-resolution positions are
the finder's (and the truth's). The fakes are in ``_leginon_fakes.py``.
"""

import logging
import math
import sys
import types

import _leginon_fakes as fk
import numpy as np
import pytest

from ptolemy_core.targets import Target
from ptolemy_leginon import convert as cv
from ptolemy_leginon.register import make_node_classes, register


@pytest.fixture
def mods():
    return fk.modules()


@pytest.fixture
def classes(mods):
    return make_node_classes(mods)


def test_import_without_leginon_and_register(mods):
    import ptolemy_leginon  # noqa: F401

    assert "leginon" not in sys.modules
    registered = {}
    reg = types.SimpleNamespace(registerNodeClass=lambda cls, kind: registered.setdefault(cls.__name__, kind))
    classes = register(reg, mods)
    assert registered == {"PtolemySquareFinder": "Pipeline", "PtolemyHoleFinder": "Pipeline"}
    sq, hole = classes["PtolemySquareFinder"], classes["PtolemyHoleFinder"]
    assert issubclass(sq, fk.MosaicScoreTargetFinder) and issubclass(hole, fk.ScoreTargetFinder)
    # settings classes: registered in leginondata (sinedon looks them up there), extra keys in the typemap
    ld = mods["leginondata"]
    assert sq.settingsclass is ld.PtolemySquareFinderSettingsData
    assert sq.settingsclass.__module__ == ld.__name__
    keys = dict(sq.settingsclass.typemap())
    assert keys["ptolemy scorer"] is str and keys["filter-key"] is str
    assert dict(hole.settingsclass.typemap())["ptolemy auto i0"] is bool
    # Leginon-style defaults kept, ours added
    assert hole.defaultsettings["lattice zero thickness"] == 1000.0
    assert hole.defaultsettings["ptolemy auto i0"] is True
    assert sq.defaultsettings["target grouping"]["randomize blobs"] is False
    assert set(sq.defaultsettings) >= set(fk.MosaicScoreTargetFinder.defaultsettings)


# ------------------------------------------------------------------ squares
def atlas_truth(seed=5, shape=(1024, 1024)):
    from ptolemy_core.synth import simulate_atlas

    sim = simulate_atlas(seed, shape=shape, montage=False)
    squares = []
    for s in sim.truth["squares"]:
        squares.append(
            {
                "center": (s["center"][1], s["center"][0]),
                "vertices": [(v[1], v[0]) for v in s["vertices"]],
                "area": s["area"],
                "score": 0.2 + 0.7 * ((s["id"] * 37) % 100) / 100,
                "ice": s["ice_thickness_nm"],
            }
        )
    return sim, squares


def split_tiles(shape, tile, overlap):
    step = tile - overlap
    corners = []
    for r in range(0, shape[0] - overlap, step):
        for c in range(0, shape[1] - overlap, step):
            corners.append((min(r, shape[0] - tile), min(c, shape[1] - tile)))
    return sorted(set(corners))


def truth_finder(squares):
    """A perfect square finder on a tile: complete squares exactly, cut ones as their visible box."""

    def find(image, pixel_size_nm, scorer, corner=None):
        lo = np.array(find.corners[id(image)], float)
        hi = lo + np.array(image.shape) - 1
        out = []
        for s in squares:
            p = np.asarray(s["vertices"])
            if np.all((p >= lo) & (p <= hi)):
                out.append(
                    Target(
                        "square",
                        tuple(np.asarray(s["center"]) - lo),
                        tuple(map(tuple, p - lo)),
                        s["area"],
                        s["score"],
                        1000.0,
                        {"touches_edge": False, "ice_thickness_nm": s["ice"]},
                    )
                )
                continue
            r0, c0 = np.maximum(p.min(axis=0), lo)
            r1, c1 = np.minimum(p.max(axis=0), hi)
            if r1 - r0 < 10 or c1 - c0 < 10:
                continue
            box = np.array([(r0, c0), (r0, c1), (r1, c1), (r1, c0)]) - lo
            out.append(
                Target(
                    "square",
                    tuple(box.mean(axis=0)),
                    tuple(map(tuple, box)),
                    (r1 - r0) * (c1 - c0),
                    s["score"] * 0.5,
                    900.0,
                    {"touches_edge": True, "ice_thickness_nm": s["ice"]},
                )
            )
        return out

    find.corners = {}
    return find


def run_atlas(cls, mods, image, corners, tile, finder=None, settings=None):
    node = cls(settings=settings)
    if finder is not None:
        node.ptolemy_finder = finder
    for k, (r, c) in enumerate(corners):
        data = np.ascontiguousarray(image[r : r + tile, c : c + tile])
        if finder is not None and hasattr(finder, "corners"):
            finder.corners[id(data)] = (r, c)
        node._addTile(
            fk.imagedata(mods["leginondata"], data, dbid=100 + k, corner=(r, c), filename=f"tile{k}")
        )
    node.createMosaicImage(True)
    node.autoTargetFinder()
    return node


def published_positions(node):
    """Full-atlas (row, col) of every published target: tile corner + shape/2 + delta."""
    node.submitTargets()
    out = []
    for t in node.published:
        img = t["image"]
        out.append(
            (
                img["corner"][0] + img["image"].shape[0] / 2 + t["delta row"],
                img["corner"][1] + img["image"].shape[1] / 2 + t["delta column"],
            )
        )
    return out


def test_atlas_tiles_to_ranked_targets_round_trip_to_truth(classes, mods):
    sim, squares = atlas_truth()
    image = sim.data.astype(np.float32)
    corners = split_tiles(image.shape, 576, 128)
    assert len(corners) == 4
    finder = truth_finder(squares)
    node = run_atlas(
        classes["PtolemySquareFinder"],
        mods,
        image,
        corners,
        576,
        finder,
        settings={
            "filter-key": "Score",
            "filter-min": 0.0,
            "filter-max": 1.0,
            "target grouping": {"total targets": 8, "classes": 1},
        },
    )
    blobs = node.finder_blobs
    inside = [
        s
        for s in squares
        if np.asarray(s["vertices"]).min() >= 0
        and np.asarray(s["vertices"]).max(axis=0).tolist() <= [image.shape[0] - 1, image.shape[1] - 1]
    ]
    assert len(blobs) >= len(inside)  # every complete square found once (merged across tiles)
    stats = blobs[0].stats
    assert {"center", "n", "size", "mean", "score", "signal", "ice_thickness_nm", "rank"} <= set(stats)
    assert stats["signal"] == pytest.approx(stats["size"] * stats["mean"])
    positions = published_positions(node)
    assert len(positions) == 8
    truth_c = np.array([s["center"] for s in squares])
    scores = []
    for pos in positions:
        d = np.hypot(*(truth_c - np.array(pos)).T)
        k = int(np.argmin(d))
        assert d[k] < 1.0, (pos, squares[k]["center"])
        scores.append(squares[k]["score"])
    # highest score first, and exactly the 8 best complete squares off the atlas edge
    assert scores == sorted(scores, reverse=True)
    good = [b for b in blobs if b.stats.get("good")]
    assert sorted(scores, reverse=True) == sorted((b.stats["score"] for b in good), reverse=True)[:8]
    # SquareStatsData stored with the real 'good' flag
    stored = [d for d in fk.Data.inserted if type(d).__name__ == "SquareStatsData"]
    assert any(d["good"] for d in stored) and not all(d["good"] for d in stored)


@pytest.mark.parametrize(
    "key,lo,hi", [("Size", 5000, 1e9), ("Signal", 1.0, 1e12), ("Mean", 950, 2000), ("Score", 0.5, 1.0)]
)
def test_every_filter_key_works(classes, mods, key, lo, hi):
    sim, squares = atlas_truth()
    image = sim.data.astype(np.float32)
    node = run_atlas(
        classes["PtolemySquareFinder"],
        mods,
        image,
        split_tiles(image.shape, 576, 128),
        576,
        truth_finder(squares),
        settings={
            "filter-key": key,
            "filter-min": lo,
            "filter-max": hi,
            "target grouping": {"total targets": 50, "classes": 1},
        },
    )
    targets = node.targets["acquisition"]
    assert targets, key
    skey = {"Size": "size", "Signal": "signal", "Mean": "mean", "Score": "score"}[key]
    good = [b for b in node.finder_blobs if b.stats.get("good")]
    assert good and all(lo <= b.stats[skey] <= hi for b in good)
    assert len(targets) == min(50, len(good))


def test_grouping_classes_spread_and_fill_total(classes, mods):
    sim, squares = atlas_truth()
    image = sim.data.astype(np.float32)
    node = run_atlas(
        classes["PtolemySquareFinder"],
        mods,
        image,
        split_tiles(image.shape, 576, 128),
        576,
        truth_finder(squares),
        settings={
            "filter-key": "Score",
            "filter-min": 0.0,
            "filter-max": 1.0,
            "target grouping": {
                "total targets": 6,
                "classes": 3,
                "group method": "target count",
                "randomize blobs": True,
            },
        },
    )
    picked = node.targets["acquisition"]
    assert len(picked) == 6
    again = run_atlas(
        classes["PtolemySquareFinder"],
        mods,
        image,
        split_tiles(image.shape, 576, 128),
        576,
        truth_finder(squares),
        settings={
            "filter-key": "Score",
            "filter-min": 0.0,
            "filter-max": 1.0,
            "target grouping": {
                "total targets": 6,
                "classes": 3,
                "group method": "target count",
                "randomize blobs": True,
            },
        },
    )
    assert again.targets["acquisition"] == picked  # deterministic despite 'randomize blobs'


def test_square_finder_exception_gives_empty_list_and_log(classes, mods, caplog):
    def broken(image, pixel_size_nm, scorer):
        raise RuntimeError("model file corrupt")

    image = np.ones((600, 600), np.float32)
    with caplog.at_level(logging.ERROR):
        node = run_atlas(classes["PtolemySquareFinder"], mods, image, [(0, 0), (0, 88)], 512, broken)
    assert node.targets["acquisition"] == []
    msgs = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("model file corrupt" in m and "tile 100" in m and "tile0" in m for m in msgs), msgs

    def explode(self):
        raise ValueError("mosaic broke")

    node.findSquareBlobs = types.MethodType(explode, node)
    with caplog.at_level(logging.ERROR):
        node.autoTargetFinder()  # must not raise
    assert node.targets["acquisition"] == []
    assert any("mosaic broke" in r.getMessage() and "grid1" in r.getMessage() for r in caplog.records)


def test_example_click_uses_example_blobs_without_crashing(classes, mods):
    node = classes["PtolemySquareFinder"](settings={"filter-key": "Signal"})
    blobs = [
        fk.StatsBlob(
            {
                "center": (1, 1),
                "vertices": [],
                "area": a,
                "brightness": 2.0,
                "score": 0.5,
                "tile_image": None,
            },
            i,
        )
        for i, a in enumerate((100.0, 300.0))
    ]
    for b in blobs:
        b.stats["signal"] = b.stats["size"] * b.stats["mean"]
    node.setFilterSettings(blobs)
    assert (node.settings["filter-min"], node.settings["filter-max"]) == (200.0, 600.0)


@pytest.mark.slow
def test_atlas_with_real_square_finder(classes, mods):
    pytest.importorskip("ptolemy_core.squares")
    from ptolemy_core.squares import find_squares  # noqa: F401

    sim, squares = atlas_truth(seed=5)
    image = sim.data.astype(np.float32)
    corners = split_tiles(image.shape, 576, 128)
    node = run_atlas(
        classes["PtolemySquareFinder"],
        mods,
        image,
        corners,
        576,
        None,
        settings={
            "filter-key": "Score",
            "filter-min": 0.0,
            "filter-max": 1.0,
            "target grouping": {"total targets": 6, "classes": 1},
        },
    )
    positions = published_positions(node)
    assert len(positions) == 6
    # the published position is exactly the merged square's mosaic centre ...
    by_center = {tuple(np.round(b.ptolemy_square.center, 6)) for b in node.finder_blobs}
    truth_c = np.array([s["center"] for s in squares])
    pitch = sim.truth["grid"]["pitch_px"]
    for pos in positions:
        assert tuple(np.round(pos, 6)) in by_center
        # ... and lies on a simulated square (finder localisation, not the conversion, sets this error)
        assert np.min(np.hypot(*(truth_c - np.array(pos)).T)) < 0.1 * pitch


# ------------------------------------------------------------------ holes
class HoleResult:
    def __init__(self, targets, basis=None, i0=None):
        self.targets = targets
        self.lattice = (
            types.SimpleNamespace(kind="oblique", basis=np.asarray(basis), origin=(0, 0))
            if basis is not None
            else None
        )
        self.i0 = i0
        self.working_scale = 1.0
        self.notes = ()


def hole_image(shape, centres, radius, i0=1000.0, t=0.1):
    img = np.full(shape, 0.3 * i0, np.float32)
    k = int(math.ceil(radius)) + 1
    for r, c in centres:
        r0, c0 = max(0, int(r) - k), max(0, int(c) - k)
        rr, cc = np.ogrid[r0 : min(shape[0], int(r) + k + 1), c0 : min(shape[1], int(c) + k + 1)]
        win = img[r0 : r0 + rr.shape[0], c0 : c0 + cc.shape[1]]
        win[(rr - r) ** 2 + (cc - c) ** 2 <= radius**2] = i0 * math.exp(-t)
    return img


def lattice_centres(shape, a, origin=(150.3, 170.7), tilt=12.0):
    v1 = a * np.array([math.sin(math.radians(tilt)), math.cos(math.radians(tilt))])
    v2 = a * np.array([math.cos(math.radians(60 + tilt)), -math.sin(math.radians(60 + tilt))])
    v2 = np.array([abs(v2[0]), v2[1]])
    pts = []
    for i in range(-40, 40):
        for j in range(-40, 40):
            p = np.array(origin) + i * v1 + j * v2
            if 0 <= p[0] < shape[0] and 0 <= p[1] < shape[1]:
                pts.append(tuple(p))
    return pts, np.array([v1, v2])


@pytest.mark.parametrize("shape", [(2048, 2048), (4096, 4096), (4102, 4097)])
def test_hole_targets_land_on_full_resolution_centres(classes, mods, shape):
    radius = 0.012 * shape[0]
    centres, basis = lattice_centres(shape, 0.07 * shape[0])
    img = hole_image(shape, centres, radius)
    targets = [
        Target("hole", c, (), 4 * radius**2, 0.9 - 0.001 * k, 905.0, {"radius": radius})
        for k, c in enumerate(centres)
    ]
    calls = []

    def finder(image, pixel_size_nm, i0, method, scorer):
        calls.append((image.shape, i0, method))
        return HoleResult(targets, basis, i0=1000.0)

    node = classes["PtolemyHoleFinder"](settings={"ice min mean": 0.05, "ice max mean": 0.2})
    node.ptolemy_finder = finder
    imd = fk.imagedata(mods["leginondata"], img, dbid=7, filename="sq_00001hl")
    node.findTargets(imd, targetlist=None)
    assert calls == [(shape, None, "lattice")]  # full-resolution image, automatic I0
    assert node.shrink_factor == cv.shrink_factor(shape) and node.shrink_offset == cv.shrink_offset(shape)
    assert node.user_waits == 0
    node.publishTargets(imd, "acquisition", None)
    pub = np.array(
        [(t["delta row"] + shape[0] / 2, t["delta column"] + shape[1] / 2) for t in node.published]
    )
    kept = [
        c
        for c in centres
        if radius * 2 < c[0] < shape[0] - radius * 2 and radius * 2 < c[1] < shape[1] - radius * 2
    ]
    assert len(pub) >= len(kept) > 20
    truth = np.array(centres)
    for p in pub:
        assert np.min(np.hypot(*(truth - p).T)) < 1e-6
    # thickness from our I0 (1000) puts every hole at t = 0.1: all good
    holes = node.hf["holes"]
    assert all(h.stats["thickness-mean"] == pytest.approx(0.1, abs=0.01) for h in holes)
    assert holes[0].stats["score"] >= holes[-1].stats["score"]
    # rank (1 = best) rides along in the stats Leginon's ice() copies into the GUI display
    ranks = [h.stats["rank"] for h in holes]
    assert ranks == sorted(set(ranks)) and ranks[0] >= 1  # holes Leginon drops leave gaps
    assert node._getStatsKeys() == [node.settings["score key"], "rank"]
    # lattice matrix for centerCarbon: columns = lattice vectors in shrunk pixels
    assert node.hf.lattice_matrix == pytest.approx(basis.T / cv.shrink_factor(shape))


def test_hole_threshold_score_key_and_fixed_i0(classes, mods):
    shape = (1024, 1440)
    centres, basis = lattice_centres(shape, 120)
    img = hole_image(shape, centres, 15, i0=1000.0)
    targets = [
        Target("hole", c, (), 900.0, k / len(centres), 905.0, {"radius": 15.0}) for k, c in enumerate(centres)
    ]
    node = classes["PtolemyHoleFinder"](
        settings={
            "score key": "probability",
            "score threshold": 0.5,
            "ptolemy auto i0": False,
            "lattice zero thickness": 2000.0,
            "ice min mean": 0.0,
            "ice max mean": 10.0,
        }
    )
    seen = {}

    def finder(image, pixel_size_nm, i0, method, scorer):
        seen["i0"] = i0
        return HoleResult(targets, basis, i0=1000.0)

    node.ptolemy_finder = finder
    node.findTargets(fk.imagedata(mods["leginondata"], img, dbid=1), None)
    assert seen["i0"] == 2000.0
    holes = node.hf["holes"]
    assert holes and all(h.stats["probability"] >= 0.5 for h in holes)
    assert all(h.stats["thickness-mean"] == pytest.approx(math.log(2000 / 905.0), abs=0.02) for h in holes)
    assert len(node.targets["acquisition"]) == len(node.hf["holes2"]) > 5

    # the screening policy's holes per square: the best-scoring good holes only
    node.settings["ptolemy max targets"] = 5
    node.findTargets(fk.imagedata(mods["leginondata"], img, dbid=2), None)
    acq = node.targets["acquisition"]
    assert len(acq) == 5
    best = sorted((h.stats["probability"] for h in node.hf["holes"] if h.stats.get("good")), reverse=True)[:5]
    assert sorted((a["stats"]["probability"] for a in acq), reverse=True) == best


def test_hole_finder_exception_gives_empty_targets_no_user_wait(classes, mods, caplog):
    def broken(*a):
        raise MemoryError("no memory for the U-Net") if False else RuntimeError("lattice fit diverged")

    node = classes["PtolemyHoleFinder"]()
    node.ptolemy_finder = broken
    with caplog.at_level(logging.ERROR):
        node.findTargets(
            fk.imagedata(mods["leginondata"], np.ones((3000, 3000), np.float32), filename="x_hl"), None
        )
    assert node.targets.get("acquisition") == [] and node.targets.get("Hole") == []
    assert node.user_waits == 0 and node.status[-1] == "idle"
    assert any(
        "lattice fit diverged" in r.getMessage() and "x_hl (3000x3000)" in r.getMessage()
        for r in caplog.records
    )

    # an exception after the finder (in Leginon's ice step) is caught too
    node2 = classes["PtolemyHoleFinder"]()
    node2.ptolemy_finder = lambda *a: HoleResult(
        [Target("hole", (50.0, 50.0), (), 1.0, 0.9, 1.0, {"radius": 5.0})]
    )

    def bad_ice(self):
        raise TypeError("unsupported operand type(s) for *: 'range' and 'int'")

    node2.ice = types.MethodType(bad_ice, node2)
    with caplog.at_level(logging.ERROR):
        node2.findTargets(fk.imagedata(mods["leginondata"], np.ones((200, 200), np.float32)), None)
    assert node2.targets["acquisition"] == [] and node2.user_waits == 0


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(2048, 2048), (4096, 4096)])
def test_hole_node_with_real_finder_matches_truth(classes, mods, shape):
    holes_mod = pytest.importorskip("ptolemy_core.holes")
    if not hasattr(holes_mod, "find_holes"):
        pytest.skip("hole finder not installed")
    from ptolemy_core.synth import simulate_square_image

    sim = simulate_square_image(21, shape=shape, film="gold", contrast="normal", lattice="square")
    node = classes["PtolemyHoleFinder"](
        settings={"ice min mean": 0.0, "ice max mean": 5.0, "ice max std": 5.0}
    )
    imd = fk.imagedata(mods["leginondata"], sim.data.astype(np.float32), dbid=3)
    node.findTargets(imd, None)
    node.publishTargets(imd, "acquisition", None)
    pub = np.array(
        [(t["delta row"] + shape[0] / 2, t["delta column"] + shape[1] / 2) for t in node.published]
    )
    truth = np.array([(h["center"][1], h["center"][0]) for h in sim.truth["holes"]])
    radius = np.median([h["radius"] for h in sim.truth["holes"]])
    assert len(pub) > 10
    err = [np.min(np.hypot(*(truth - p).T)) for p in pub]
    assert np.median(err) < 0.2 * radius


def test_pixel_size_lookup_without_calibration_clients():
    """Leginon's hole finders have no calibration clients: the node must treat that as unknown."""
    from ptolemy_leginon.settings import calibrated_pixel_size_nm

    assert calibrated_pixel_size_nm({"ptolemy pixel size nm": 0.0}, None, {}) is None
    assert calibrated_pixel_size_nm({"ptolemy pixel size nm": 12.5}, None, {}) == 12.5

    class Shift:
        def getImagePixelSize(self, imagedata):
            return {"x": 2.0e-9, "y": 2.0e-9}

    assert calibrated_pixel_size_nm({}, {"image shift": Shift()}, {}) == pytest.approx(2.0)
