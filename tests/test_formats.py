"""Edge conversions: Target (row, col) <-> Ptolemy JSON [x, y]."""

import json

import numpy as np
import pytest

from ptolemy_core.errors import PtolemyInputError
from ptolemy_core.formats import from_json, target_from_dict, target_to_dict, to_json_line, to_txt
from ptolemy_core.targets import Target, rank


def _square(row=10.0, col=200.0, score=0.5):
    verts = ((row - 5, col - 5), (row - 5, col + 5), (row + 5, col + 5), (row + 5, col - 5))
    return Target("square", (row, col), verts, area=100.0, score=score, brightness=812.5,
                  features={"segment_area": 90.0, "touches_edge": False, "ice_thickness_nm": None})


def test_json_is_x_equals_column():
    rec = target_to_dict(_square(row=10.0, col=200.0))
    assert rec["center"] == [200.0, 10.0]
    assert rec["vertices"][0] == [195.0, 5.0]
    assert list(rec)[:5] == ["center", "vertices", "area", "brightness", "score"]


def test_hole_field_order_matches_ptolemy_medmag():
    hole = Target("hole", (3.0, 4.0), ((0, 0), (0, 8), (8, 8), (8, 0)), area=64.0, score=0.9,
                  brightness=100.0, features={"radius": 3.5, "ellipse": {"a": 3.5, "b": np.float32(3.0)}})
    rec = target_to_dict(hole)
    assert list(rec)[:4] == ["center", "vertices", "area", "score"]
    assert rec["ellipse"] == {"a": 3.5, "b": 3.0}


def test_round_trip_through_json_line():
    targets = [_square(10, 200, 0.2), _square(50.5, 7.25, 0.9)]
    line = to_json_line(targets)
    assert "\n" not in line
    back = from_json(line + "\n")
    for a, b in zip(targets, back, strict=True):
        assert b.center == pytest.approx(a.center)
        assert np.allclose(b.vertices_array(), a.vertices_array())
        assert b.score == a.score and b.brightness == a.brightness and b.kind == "square"
        assert b.features["segment_area"] == 90.0 and b.features["ice_thickness_nm"] is None


def test_nan_becomes_null_and_json_stays_valid():
    t = _square()
    t.brightness = float("nan")
    rec = json.loads(to_json_line([t]))[0]
    assert rec["brightness"] is None


def test_txt_is_x_then_y():
    assert to_txt([_square(10, 200)]) == "x_coord\ty_coord\n200.00\t10.00\n"


def test_rank_highest_first_and_stable():
    ts = [_square(1, 1, 0.5), _square(0, 0, 0.9), _square(0, 5, 0.5)]
    assert [(t.score, t.center) for t in rank(ts)] == [(0.9, (0, 0)), (0.5, (0, 5)), (0.5, (1, 1))]


def test_bad_json_is_one_line_error():
    with pytest.raises(PtolemyInputError, match="targets file is not JSON"):
        from_json("{nope")
    with pytest.raises(PtolemyInputError, match="must be a list"):
        from_json('{"center": [1, 2]}')
    with pytest.raises(PtolemyInputError, match="not a Ptolemy target record"):
        target_from_dict({"vertices": []})
