"""Evaluation metrics (Ptolemy's definitions), used by tests and ``benchmarks/``.

- A ground-truth object is *found* when exactly one detection lies in it.
- A detection is a *false positive* when it lies in no object, or in an
  object that another detection also lies in.
- Objects less than half visible are *optional*: finding them is not
  required, and detections inside them count neither way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DetectionScores:
    """Counts and rates for one image/session."""

    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def __add__(self, other: DetectionScores) -> DetectionScores:
        return DetectionScores(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)


def points_in_polygons(polygons: list[np.ndarray], points: np.ndarray) -> np.ndarray:
    """``inside[m, n]``: point ``n`` lies in convex-or-not polygon ``m`` (even-odd rule).

    Parameters
    ----------
    polygons : list of (K, 2) arrays
        Vertices in order, ``(row, col)``.
    points : (N, 2) array
        ``(row, col)``.
    """
    points = np.asarray(points, dtype=float).reshape(-1, 2)
    inside = np.zeros((len(polygons), len(points)), dtype=bool)
    py, px = points[:, 0], points[:, 1]
    for m, poly in enumerate(polygons):
        poly = np.asarray(poly, dtype=float)
        vy, vx = poly[:, 0], poly[:, 1]
        vy2, vx2 = np.roll(vy, -1), np.roll(vx, -1)
        crosses = ((vy[:, None] > py) != (vy2[:, None] > py)) & (
            px < (vx2 - vx)[:, None] * (py - vy[:, None]) / np.where(vy2 == vy, 1e-12, vy2 - vy)[:, None]
            + vx[:, None]
        )
        inside[m] = np.count_nonzero(crosses, axis=0) % 2 == 1
    return inside


def points_in_ellipses(
    centers: np.ndarray, semi_axes: np.ndarray, angles: np.ndarray | None, points: np.ndarray
) -> np.ndarray:
    """``inside[m, n]``: point ``n`` in ellipse ``m``.

    ``semi_axes[m] = (a, b)`` along the ellipse's own axes; ``angles[m]`` (rad)
    rotates axis ``a`` from the row axis towards the column axis. Circles: a = b.
    """
    centers = np.asarray(centers, dtype=float).reshape(-1, 2)
    semi_axes = np.asarray(semi_axes, dtype=float).reshape(-1, 2)
    angles = np.zeros(len(centers)) if angles is None else np.asarray(angles, dtype=float)
    points = np.asarray(points, dtype=float).reshape(-1, 2)
    d = points[None, :, :] - centers[:, None, :]
    c, s = np.cos(angles)[:, None], np.sin(angles)[:, None]
    u = d[..., 0] * c + d[..., 1] * s
    v = -d[..., 0] * s + d[..., 1] * c
    return (u / semi_axes[:, :1]) ** 2 + (v / semi_axes[:, 1:]) ** 2 <= 1.0


def score_detections(inside: np.ndarray, optional: np.ndarray | None = None) -> DetectionScores:
    """Ptolemy's TP/FP/FN from a containment matrix ``inside[object, detection]``."""
    inside = np.asarray(inside, dtype=bool)
    n_obj, n_det = inside.shape
    optional = np.zeros(n_obj, bool) if optional is None else np.asarray(optional, dtype=bool)
    per_object = inside.sum(axis=1)
    required = ~optional
    tp = int(np.count_nonzero(required & (per_object == 1)))
    fn = int(np.count_nonzero(required & (per_object != 1)))
    crowded = per_object > 1
    in_required = inside[required].any(axis=0) if n_obj else np.zeros(n_det, bool)
    in_crowded_required = inside[required & crowded].any(axis=0) if n_obj else np.zeros(n_det, bool)
    in_optional_only = inside[optional].any(axis=0) & ~in_required if n_obj else np.zeros(n_det, bool)
    fp = int(np.count_nonzero((~in_required & ~in_optional_only) | in_crowded_required))
    return DetectionScores(tp, fp, fn)


def mean_scores(scores: list[DetectionScores]) -> dict[str, float]:
    """Per-session precision/recall/F1, then the mean over sessions (Ptolemy's averaging)."""
    if not scores:
        return {"precision": float("nan"), "recall": float("nan"), "f1": float("nan")}
    return {
        "precision": float(np.mean([s.precision for s in scores])),
        "recall": float(np.mean([s.recall for s in scores])),
        "f1": float(np.mean([s.f1 for s in scores])),
    }


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve (Mann–Whitney U with tie correction); NaN if one class is absent."""
    scores = np.asarray(scores, dtype=float)
    labels = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(scores, labels) -> float:
    """Average precision (area under the step precision–recall curve); NaN without positives."""
    scores = np.asarray(scores, dtype=float)
    labels = np.asarray(labels, dtype=bool)
    if not labels.any():
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    hits = labels[order]
    precision_at_k = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision_at_k[hits].sum() / hits.sum())


def _clip_polygon(subject: np.ndarray, clip: np.ndarray) -> np.ndarray:
    """Sutherland–Hodgman: part of ``subject`` inside convex ``clip`` (both CCW or both CW)."""
    def side(p, a, b):
        return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])

    # side() treats (row, col) as (x, y), the mirror of _signed_area's convention.
    orient = -np.sign(_signed_area(clip)) or 1.0
    output = [tuple(p) for p in subject]
    for i in range(len(clip)):
        a, b = clip[i], clip[(i + 1) % len(clip)]
        inputs, output = output, []
        if not inputs:
            break
        prev = inputs[-1]
        for cur in inputs:
            cur_in = orient * side(cur, a, b) >= 0
            prev_in = orient * side(prev, a, b) >= 0
            if cur_in != prev_in:
                d1, d2 = side(prev, a, b), side(cur, a, b)
                t = d1 / (d1 - d2)
                output.append((prev[0] + t * (cur[0] - prev[0]), prev[1] + t * (cur[1] - prev[1])))
            if cur_in:
                output.append(tuple(cur))
            prev = cur
    return np.asarray(output, dtype=float).reshape(-1, 2)


def _signed_area(poly: np.ndarray) -> float:
    poly = np.asarray(poly, dtype=float)
    y, x = poly[:, 0], poly[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def polygon_iou(a, b) -> float:
    """Intersection over union of two convex polygons (e.g. rotated square boxes)."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    area_a, area_b = abs(_signed_area(a)), abs(_signed_area(b))
    inter_poly = _clip_polygon(a, b)
    inter = abs(_signed_area(inter_poly)) if len(inter_poly) >= 3 else 0.0
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def truth_hole_regions(truth: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Holes of a simulator truth JSON as arguments for :func:`points_in_ellipses`.

    Returns ``centers`` (row, col), ``semi_axes``, ``angles`` (converted from the truth's
    convention — axis a measured from +x towards +y — to this module's, from the row
    axis) and ``optional`` (less than half visible, or centre outside the image).
    """
    holes = truth.get("holes", [])
    centers = np.array([h["center"][::-1] for h in holes], float).reshape(-1, 2)
    axes, angles = [], []
    for h in holes:
        ell = h.get("ellipse") or {"a": h["radius"], "b": h["radius"], "angle_deg": 90.0}
        axes.append((ell["a"], ell["b"]))
        angles.append(np.deg2rad(90.0 - ell["angle_deg"]))
    optional = np.array([h["visible_fraction"] < 0.5 or not h.get("in_image", True) for h in holes], bool)
    return centers, np.array(axes, float).reshape(-1, 2), np.array(angles, float), optional
