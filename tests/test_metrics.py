import numpy as np
import pytest

from ptolemy_core.metrics import (
    average_precision,
    points_in_ellipses,
    points_in_polygons,
    polygon_iou,
    roc_auc,
    score_detections,
)

SQUARE = np.array([[0, 0], [0, 10], [10, 10], [10, 0]], float)


def test_points_in_polygon_and_ellipse():
    inside = points_in_polygons([SQUARE], np.array([[5, 5], [11, 5], [-1, -1], [9.9, 0.1]]))
    assert inside.tolist() == [[True, False, False, True]]
    ell = points_in_ellipses(np.array([[0, 0]]), np.array([[4, 2]]), np.array([0.0]),
                             np.array([[3.9, 0], [0, 3], [0, 1.9]]))
    assert ell.tolist() == [[True, False, True]]


def test_ptolemy_matching_rules():
    # objects: 0 found once, 1 found twice (crowded), 2 missed, 3 optional with one detection
    inside = np.array([
        [1, 0, 0, 0, 0],
        [0, 1, 1, 0, 0],
        [0, 0, 0, 0, 0],
        [0, 0, 0, 1, 0],
    ], bool)  # detection 4 lies nowhere
    s = score_detections(inside, optional=np.array([0, 0, 0, 1], bool))
    assert (s.tp, s.fp, s.fn) == (1, 3, 2)
    assert s.precision == pytest.approx(0.25)
    assert s.recall == pytest.approx(1 / 3)


def test_auc_and_ap():
    assert roc_auc([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0]) == 1.0
    assert roc_auc([0.1, 0.2, 0.9, 0.8], [1, 1, 0, 0]) == 0.0
    assert roc_auc([0.5, 0.5], [1, 0]) == 0.5
    assert np.isnan(roc_auc([0.5, 0.4], [1, 1]))
    assert average_precision([0.9, 0.8, 0.7], [1, 0, 1]) == pytest.approx((1 + 2 / 3) / 2)


def test_polygon_iou():
    assert polygon_iou(SQUARE, SQUARE) == pytest.approx(1.0)
    shifted = SQUARE + [0, 5]
    assert polygon_iou(SQUARE, shifted) == pytest.approx(50 / 150)
    assert polygon_iou(SQUARE, SQUARE + [20, 20]) == 0.0
    # rotated 45° diamond inside the square, vertices on the edge midpoints: area 50
    diamond = np.array([[0, 5], [5, 10], [10, 5], [5, 0]], float)
    assert polygon_iou(SQUARE, diamond) == pytest.approx(0.5)
    assert polygon_iou(SQUARE[::-1], diamond) == pytest.approx(0.5)


def test_truth_hole_regions_converts_the_ellipse_angle():
    from ptolemy_core.metrics import truth_hole_regions

    # an ellipse elongated along +x (columns): a=10 at angle 0 from +x
    truth = {"holes": [
        {"center": [50, 20], "ellipse": {"a": 10, "b": 2, "angle_deg": 0.0}, "visible_fraction": 1.0},
        {"center": [0, 0], "radius": 3, "visible_fraction": 0.4, "in_image": True},
    ]}
    c, ax, ang, opt = truth_hole_regions(truth)
    assert c.tolist() == [[20, 50], [0, 0]] and opt.tolist() == [False, True]
    inside = points_in_ellipses(c, ax, ang, np.array([[20, 58], [28, 50]]))
    assert inside[0].tolist() == [True, False]  # 8 px along x is inside, 8 px along y is not
