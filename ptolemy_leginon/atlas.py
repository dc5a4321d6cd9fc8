"""Squares found tile by tile on an atlas -> one list of squares on the mosaic.

Leginon acquires an atlas as overlapping tiles and the square finder runs on
each tile. A square in an overlap is seen twice (often once cut by a tile
edge). Here the per-tile squares are placed on the unscaled mosaic, merged,
and each merged square is mapped back to the tile Leginon will target it on.
Plain functions, no Leginon.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ptolemy_core.targets import Target

from .convert import TilePlacement, mosaic_to_tile, tile_delta, tile_to_mosaic

RowCol = tuple[float, float]


@dataclass
class MosaicSquare:
    """A square on the unscaled atlas mosaic.

    Attributes
    ----------
    center : (row, col)
        Mosaic pixels.
    vertices : list of (row, col)
        Outline on the mosaic (the convex hull of every view's vertices).
    area : float
        px² at tile resolution (the unit of Leginon's ``Size`` filter).
    brightness : float
        Mean intensity (Leginon's ``mean``).
    score : float
    features : dict
        The finder's features of the most complete view, plus ``n_views``.
    views : list of (tile key, index)
        Which per-tile detections were merged into this square.
    tile_key, tile_center, delta
        Filled by :func:`assign_tiles`: the tile the target is published on,
        the centre on that tile ``(row, col)`` and ``(delta row, delta col)``.
    """

    center: RowCol
    vertices: list[RowCol]
    area: float
    brightness: float
    score: float
    features: dict[str, Any] = field(default_factory=dict)
    views: list[tuple[Any, int]] = field(default_factory=list)
    tile_key: Any = None
    tile_center: RowCol | None = None
    delta: RowCol | None = None

    @property
    def complete(self) -> bool:
        """True when at least one view was not cut by a tile edge."""
        return not bool(self.features.get("touches_edge", False))

    def to_target(self) -> Target:
        """As a :class:`Target` in mosaic pixels (for ranking / the screening policy)."""
        verts = tuple(tuple(v) for v in self.vertices)
        return Target(
            "square",
            tuple(self.center),
            verts,
            float(self.area),
            float(self.score),
            float(self.brightness),
            dict(self.features),
        )


def convex_hull(points: Sequence[RowCol]) -> list[RowCol]:
    """Convex hull (monotone chain), counter-clockwise, no repeated points."""
    pts = sorted({(float(p[0]), float(p[1])) for p in points})
    if len(pts) <= 2:
        return pts

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[RowCol] = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list[RowCol] = []
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return lower[:-1] + upper[:-1]


def polygon_area(poly: Sequence[RowCol]) -> float:
    """Shoelace area of a simple polygon."""
    if len(poly) < 3:
        return 0.0
    p = np.asarray(poly, dtype=float)
    return float(abs(np.dot(p[:, 0], np.roll(p[:, 1], -1)) - np.dot(p[:, 1], np.roll(p[:, 0], -1))) / 2.0)


def polygon_centroid(poly: Sequence[RowCol]) -> RowCol:
    """Area centroid of a simple polygon (vertex mean when degenerate)."""
    p = np.asarray(poly, dtype=float)
    x, y = p[:, 0], p[:, 1]
    x1, y1 = np.roll(x, -1), np.roll(y, -1)
    cross = x * y1 - x1 * y
    a = cross.sum() / 2.0
    if abs(a) < 1e-12:
        return (float(x.mean()), float(y.mean()))
    return (float(((x + x1) * cross).sum() / (6 * a)), float(((y + y1) * cross).sum() / (6 * a)))


def point_in_polygon(point: RowCol, poly: Sequence[RowCol]) -> bool:
    """Even-odd rule; points on the outline count as inside."""
    if len(poly) < 3:
        return False
    r, c = float(point[0]), float(point[1])
    p = np.asarray(poly, dtype=float)
    r0, c0 = p[:, 0], p[:, 1]
    r1, c1 = np.roll(r0, -1), np.roll(c0, -1)
    # on an edge?
    cross = (r1 - r0) * (c - c0) - (c1 - c0) * (r - r0)
    within = (
        (np.minimum(r0, r1) - 1e-9 <= r)
        & (r <= np.maximum(r0, r1) + 1e-9)
        & (np.minimum(c0, c1) - 1e-9 <= c)
        & (c <= np.maximum(c0, c1) + 1e-9)
    )
    if np.any(within & (np.abs(cross) <= 1e-9 * (1 + np.hypot(r1 - r0, c1 - c0)))):
        return True
    straddle = (r0 > r) != (r1 > r)
    with np.errstate(divide="ignore", invalid="ignore"):
        c_at = c0 + (r - r0) * (c1 - c0) / (r1 - r0)
    return bool(np.count_nonzero(straddle & (c < c_at)) % 2)


def convex_intersection_area(p: Sequence[RowCol], q: Sequence[RowCol]) -> float:
    """Area of the intersection of two convex polygons (Sutherland-Hodgman clipping)."""
    subject = convex_hull(p)
    clip = convex_hull(q)
    if len(subject) < 3 or len(clip) < 3:
        return 0.0

    def inside(pt, a, b):
        return (b[0] - a[0]) * (pt[1] - a[1]) - (b[1] - a[1]) * (pt[0] - a[0]) >= 0

    def cut(p1, p2, a, b):
        dx, dy = p2[0] - p1[0], p2[1] - p1[1]
        ex, ey = b[0] - a[0], b[1] - a[1]
        den = ex * dy - ey * dx
        if den == 0:
            return p2
        t = (ey * (p1[0] - a[0]) - ex * (p1[1] - a[1])) / den
        return (p1[0] + t * dx, p1[1] + t * dy)

    out = subject
    for i in range(len(clip)):
        a, b = clip[i], clip[(i + 1) % len(clip)]
        src, out = out, []
        for j in range(len(src)):
            cur, prev = src[j], src[j - 1]
            if inside(cur, a, b):
                if not inside(prev, a, b):
                    out.append(cut(prev, cur, a, b))
                out.append(cur)
            elif inside(prev, a, b):
                out.append(cut(prev, cur, a, b))
        if not out:
            return 0.0
    return polygon_area(out)


def same_square(a: MosaicSquare, b: MosaicSquare, min_overlap: float = 0.3) -> bool:
    """Two views (from different tiles) show the same square.

    True when the centre of one lies inside the other's outline, or when their
    outlines overlap by at least ``min_overlap`` of the smaller one (a square cut
    on both tiles). Neighbouring squares are separated by a grid bar, so their
    outlines do not overlap.
    """
    if point_in_polygon(a.center, b.vertices) or point_in_polygon(b.center, a.vertices):
        return True
    if len(a.vertices) < 3 or len(b.vertices) < 3:
        return False
    smaller = min(polygon_area(convex_hull(a.vertices)), polygon_area(convex_hull(b.vertices)))
    return smaller > 0 and convex_intersection_area(a.vertices, b.vertices) >= min_overlap * smaller


def place_tile_squares(
    tile_targets: Mapping[Any, Sequence[Target]], tiles: Sequence[TilePlacement]
) -> list[MosaicSquare]:
    """Per-tile square targets (tile pixels) -> unmerged squares on the mosaic.

    Parameters
    ----------
    tile_targets : mapping
        ``tile key -> targets found on that tile`` (``(row, col)`` tile pixels).
    tiles : sequence of TilePlacement
        Where each tile sits on the mosaic.
    """
    by_key = {t.key: t for t in tiles}
    out = []
    for key, targets in tile_targets.items():
        tile = by_key[key]
        for i, t in enumerate(targets):
            verts = [tile_to_mosaic(v, tile) for v in t.vertices] or [tile_to_mosaic(t.center, tile)]
            features = dict(t.features)
            if features.get("expected_vertices"):  # the full window, for the union's visibility
                features["expected_vertices"] = [tile_to_mosaic(v, tile)
                                                 for v in features["expected_vertices"]]
            out.append(
                MosaicSquare(
                    center=tile_to_mosaic(t.center, tile),
                    vertices=verts,
                    area=float(t.area),
                    brightness=float(t.brightness),
                    score=float(t.score),
                    features=features,
                    views=[(key, i)],
                )
            )
    return out


def _union_visible(members: Sequence[MosaicSquare], hull: list[RowCol]) -> tuple[float, float] | None:
    """``(visible fraction, area)`` of the union of cut views inside their expected window, or None."""
    windows = [m.features.get("expected_vertices") for m in members]
    windows = [w for w in windows if w and len(w) >= 3]
    if not windows or len(hull) < 3:
        return None
    expected = convex_hull(windows[0])
    full = polygon_area(expected)
    if full <= 0:
        return None
    inside = convex_intersection_area(hull, expected)
    return min(inside / full, 1.0), inside


def merge_squares(squares: Sequence[MosaicSquare], rescore: Callable[..., float] | None = None
                  ) -> list[MosaicSquare]:
    """Merge views of the same square seen on overlapping tiles.

    Two views from different tiles are the same square when :func:`same_square`
    says so (centre of one inside the other's outline, or outlines overlapping by
    30 % of the smaller). Groups are closed transitively. The merged square gets:

    * vertices: convex hull of the union of all views' vertices;
    * centre: area-weighted centre of the complete views (those not touching a
      tile edge); when every view is cut, the centroid of the union outline;
    * area: largest complete view, else the area of the union outline;
    * brightness: area-weighted mean; score: the maximum;
    * features: those of the largest complete view, plus ``n_views``.

    When every view is cut by a tile edge, each was scored as a cut square; the union of
    the views may show much more of it. Then ``visible_fraction`` becomes the union's share
    of the expected window (the finder's ``expected_vertices``) and, given ``rescore``
    (``(score, old_visible, new_visible, area_ratio) -> score``, e.g.
    :func:`ptolemy_core.squares.score.rescore_visibility` for the interpretable model),
    the most visible view's score is moved to that visibility.

    Views from the same tile are never merged with each other.
    """
    n = len(squares)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if n:
        centers = np.array([s.center for s in squares], dtype=float)
        # Only pairs closer than the larger outline's diagonal can overlap: a cheap pre-filter.
        radius = np.array(
            [
                max(np.ptp(np.asarray(s.vertices, float)[:, 0]), np.ptp(np.asarray(s.vertices, float)[:, 1]))
                if len(s.vertices) > 1
                else 0.0
                for s in squares
            ]
        )
        tile_of = [s.views[0][0] for s in squares]
        order = np.argsort(centers[:, 0], kind="stable")
        for a_pos, a in enumerate(order):
            for b in order[a_pos + 1 :]:
                if centers[b, 0] - centers[a, 0] > max(radius[a], radius[b]):
                    break
                if tile_of[a] == tile_of[b]:
                    continue
                if abs(centers[b, 1] - centers[a, 1]) > max(radius[a], radius[b]):
                    continue
                if same_square(squares[a], squares[b]):
                    ra, rb = find(int(a)), find(int(b))
                    if ra != rb:
                        parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    merged = []
    for root in sorted(groups):
        members = [squares[i] for i in groups[root]]
        if len(members) == 1:
            s = members[0]
            merged.append(
                MosaicSquare(
                    s.center,
                    list(s.vertices),
                    s.area,
                    s.brightness,
                    s.score,
                    dict(s.features, n_views=1),
                    list(s.views),
                )
            )
            continue
        complete = [m for m in members if m.complete] or members
        hull = convex_hull([v for m in members for v in m.vertices])
        if any(m.complete for m in members) or polygon_area(hull) <= 0:
            w = np.array([max(m.area, 1e-9) for m in complete])
            c = np.array([m.center for m in complete], dtype=float)
            center = tuple((c * w[:, None]).sum(axis=0) / w.sum())
        else:
            # every view is cut: the union outline is the best estimate of the whole square
            center = polygon_centroid(hull)
        best = max(complete, key=lambda m: m.area)
        area = best.area if any(m.complete for m in members) else polygon_area(hull)
        wa = np.array([max(m.area, 1e-9) for m in members])
        bright = np.array([m.brightness for m in members], dtype=float)
        ok = np.isfinite(bright)
        brightness = float((bright[ok] * wa[ok]).sum() / wa[ok].sum()) if ok.any() else float("nan")
        features = dict(best.features, n_views=len(members))
        features["touches_edge"] = not any(m.complete for m in members)
        score = max(m.score for m in members)
        union = None if any(m.complete for m in members) else _union_visible(members, hull)
        if union is not None:
            most = max(members, key=lambda m: float(m.features.get("visible_fraction", 0.0)))
            old = float(most.features.get("visible_fraction", 0.0))
            if union[0] > old:
                features = dict(most.features, n_views=len(members), visible_fraction=union[0],
                                touches_edge=union[0] < 0.99)
                if rescore is not None:
                    score = max(score, rescore(most.score, old, union[0], union[1] / max(most.area, 1e-9)))
        merged.append(
            MosaicSquare(
                (float(center[0]), float(center[1])),
                hull,
                float(area),
                brightness,
                score,
                features,
                [v for m in members for v in m.views],
            )
        )
    return merged


def assign_tiles(squares: Sequence[MosaicSquare], tiles: Sequence[TilePlacement]) -> None:
    """Map each square to the tile Leginon publishes it on (nearest tile centre), in place."""
    for s in squares:
        tile, rc = mosaic_to_tile(s.center, tiles)
        s.tile_key = tile.key
        s.tile_center = rc
        s.delta = tile_delta(rc, tile)


def squares_from_tiles(
    tile_targets: Mapping[Any, Sequence[Target]],
    tiles: Sequence[TilePlacement],
    rescore: Callable[..., float] | None = None,
) -> list[MosaicSquare]:
    """Place, merge and assign: per-tile targets -> ranked squares on the mosaic (highest score first).

    ``rescore``: see :func:`merge_squares` (None keeps the per-view scores, e.g. for the CNN).
    """
    merged = merge_squares(place_tile_squares(tile_targets, tiles), rescore)
    assign_tiles(merged, tiles)
    merged.sort(key=lambda s: (-s.score, s.center[0], s.center[1]))
    for rank, s in enumerate(merged, start=1):
        s.features["rank"] = rank
    return merged
