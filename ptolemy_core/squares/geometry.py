"""Segments → aligned rectangles: one grid angle per atlas (Brent), boxes, lattice split/merge.

Rotation convention: the grid axis ``a = (sin θ, cos θ)`` in ``(row, col)``, its normal
``b = (cos θ, -sin θ)``; a pixel projects to ``u = p·a``, ``v = p·b`` and back with the
same (symmetric, orthogonal) matrix. θ is reported in ``[0, 90)`` degrees.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.spatial import ConvexHull, QhullError


def _project(rows: np.ndarray, cols: np.ndarray, theta: float) -> tuple[np.ndarray, np.ndarray]:
    s, c = np.sin(theta), np.cos(theta)
    return rows * s + cols * c, rows * c - cols * s


def _sorted_pixels(labels: np.ndarray, boundary_only: bool = True):
    """Pixel coordinates grouped by label: (rows, cols, starts, label_ids)."""
    mask = labels > 0
    if boundary_only:
        # Interior pixels never define a bounding box; keep the outline only (a pixel whose
        # 4 neighbours carry its label is interior; image-border pixels are outline).
        edge = np.zeros_like(mask)
        edge[0, :] = edge[-1, :] = True
        edge[:, 0] = edge[:, -1] = True
        edge[1:, :] |= labels[1:, :] != labels[:-1, :]
        edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
        edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
        edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
        mask &= edge
    r, c = np.nonzero(mask)
    lab = labels[r, c]
    order = np.argsort(lab, kind="stable")
    r, c, lab = r[order], c[order], lab[order]
    ids, starts = np.unique(lab, return_index=True)
    return r.astype(np.float64), c.astype(np.float64), starts, ids


def hulls(labels: np.ndarray, max_regions: int = 400) -> list[np.ndarray]:
    """Convex hull vertices (row, col) of up to ``max_regions`` largest segments."""
    r, c, starts, ids = _sorted_pixels(labels)
    ends = np.append(starts[1:], len(r))
    sizes = ends - starts
    pick = np.argsort(-sizes, kind="stable")[:max_regions]
    out = []
    for k in sorted(pick):
        pts = np.stack([r[starts[k]: ends[k]], c[starts[k]: ends[k]]], axis=1)
        if len(pts) < 3:
            continue
        try:
            out.append(pts[ConvexHull(pts).vertices])
        except QhullError:  # collinear pixels: the points themselves bound the region
            out.append(pts)
    return out


def _box_area_sum(hull_list: list[np.ndarray], theta: float) -> float:
    pts = np.concatenate(hull_list)
    lens = np.array([len(h) for h in hull_list])
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    u, v = _project(pts[:, 0], pts[:, 1], theta)
    du = np.maximum.reduceat(u, starts) - np.minimum.reduceat(u, starts)
    dv = np.maximum.reduceat(v, starts) - np.minimum.reduceat(v, starts)
    return float(np.sum((du + 1) * (dv + 1)))


def grid_angle(hull_list: list[np.ndarray], guess_deg: float | None = None) -> float:
    """The one grid angle (degrees, 0..90) minimising the summed aligned-box areas (Brent).

    With a guess (from the autocorrelation) Brent searches ±12° around it, which also
    handles grids near 0°/90° where the bounded 0..90 search of the paper sits on its
    bounds; without one, a 5° scan picks the bracket first.
    """
    if not hull_list:
        return 0.0 if guess_deg is None else float(guess_deg) % 90.0
    if guess_deg is None:
        scan = np.radians(np.arange(0.0, 90.0, 5.0))
        vals = [_box_area_sum(hull_list, t) for t in scan]
        guess = float(scan[int(np.argmin(vals))])
    else:
        guess = float(np.radians(guess_deg))
    half = np.radians(12.0)
    res = minimize_scalar(lambda t: _box_area_sum(hull_list, t), bounds=(guess - half, guess + half),
                          method="bounded", options={"xatol": 1e-4})
    return float(np.degrees(res.x)) % 90.0


@dataclass
class Boxes:
    """Aligned rectangles of the segments in working-scale pixels."""

    ids: np.ndarray  # label per box
    u0: np.ndarray
    u1: np.ndarray
    v0: np.ndarray
    v1: np.ndarray
    theta: float  # radians

    @property
    def center_uv(self) -> tuple[np.ndarray, np.ndarray]:
        return 0.5 * (self.u0 + self.u1), 0.5 * (self.v0 + self.v1)

    def corners(self) -> np.ndarray:
        """(n, 4, 2) corners (row, col), around the rectangle."""
        s, c = np.sin(self.theta), np.cos(self.theta)
        us = np.stack([self.u0, self.u1, self.u1, self.u0], axis=1)
        vs = np.stack([self.v0, self.v0, self.v1, self.v1], axis=1)
        return np.stack([us * s + vs * c, us * c - vs * s], axis=2)


def aligned_boxes(labels: np.ndarray, theta_deg: float) -> Boxes:
    """Bounding rectangles aligned with the grid, extended to the estimated true edges.

    The half-level threshold keeps pixels whose centre lies inside the window edge. Along
    an edge of ``n`` pixels at angle θ to the pixel axes the kept centres have ``n``
    different sub-pixel offsets, so the outermost one falls short of the edge by about
    ``0.5 / (1 + n·|tan θ|)`` px (half a pixel for axis-aligned grids, ~0 for rotated ones).
    """
    theta = np.radians(theta_deg)
    r, c, starts, ids = _sorted_pixels(labels)
    if len(ids) == 0:
        e = np.zeros(0)
        return Boxes(np.zeros(0, int), e, e, e, e, theta)
    u, v = _project(r, c, theta)
    u0, u1 = np.minimum.reduceat(u, starts), np.maximum.reduceat(u, starts)
    v0, v1 = np.minimum.reduceat(v, starts), np.maximum.reduceat(v, starts)
    folded = min(theta % (np.pi / 2), np.pi / 2 - theta % (np.pi / 2))
    n = 0.5 * ((u1 - u0) + (v1 - v0)) + 1
    margin = 0.5 / (1.0 + n * np.tan(folded))
    return Boxes(ids, u0 - margin, u1 + margin, v0 - margin, v1 + margin, theta)


def lattice_phase(u: np.ndarray, v: np.ndarray, pitch: float) -> tuple[float, float]:
    """Circular mean of the window centres modulo the pitch (a window centre's u, v)."""
    def circ(x):
        ang = 2 * np.pi * x / pitch
        return float(np.angle(np.mean(np.exp(1j * ang))) * pitch / (2 * np.pi))

    return circ(u), circ(v)


def split_merge(labels: np.ndarray, boxes: Boxes, pitch: float) -> tuple[np.ndarray, bool]:
    """Split segments spanning several lattice cells and merge fragments of one cell.

    Cells are bounded by the bar centre lines (window centre ± pitch/2) of the lattice
    fitted to the normally sized segments. Returns new labels and whether anything changed.
    """
    du, dv = boxes.u1 - boxes.u0, boxes.v1 - boxes.v0
    if len(du) < 3:
        return labels, False
    big = (du > 1.35 * pitch) | (dv > 1.35 * pitch)
    cu, cv = boxes.center_uv
    typical = np.median(np.maximum(du, dv)[~big]) if (~big).any() else 0.0
    normal = ~big & (np.maximum(du, dv) > 0.7 * typical)
    if normal.sum() < 2:
        return labels, False
    pu, pv = lattice_phase(cu[normal], cv[normal], pitch)
    cell_u = np.floor((cu - pu) / pitch + 0.5).astype(np.int64)
    cell_v = np.floor((cv - pv) / pitch + 0.5).astype(np.int64)
    # Fragments: several small segments whose centres fall in one cell.
    key = (cell_u - cell_u.min()) * (cell_v.max() - cell_v.min() + 1) + (cell_v - cell_v.min())
    uniq, inv, counts = np.unique(key, return_inverse=True, return_counts=True)
    merge = (counts[inv] > 1) & ~big
    if not big.any() and not merge.any():
        return labels, False
    n_old = int(labels.max())
    lut = np.arange(n_old + 1, dtype=np.int64)
    # Merge: map every fragment to the first label of its cell.
    if merge.any():
        first = {}
        for lab, k, m in zip(boxes.ids, key, merge, strict=True):
            if m:
                lut[lab] = first.setdefault(int(k), int(lab))
    labels = lut[labels].astype(np.int32)
    if big.any():
        # Split: pixels of oversized segments get their own cell's label.
        big_ids = np.zeros(n_old + 1, bool)
        big_ids[boxes.ids[big]] = True
        sel = big_ids[labels]
        r, c = np.nonzero(sel)
        u, v = _project(r.astype(float), c.astype(float), boxes.theta)
        iu = np.floor((u - pu) / pitch + 0.5).astype(np.int64)
        iv = np.floor((v - pv) / pitch + 0.5).astype(np.int64)
        lab = labels[r, c].astype(np.int64)
        combo = (lab * 100003 + (iu - iu.min())) * 100003 + (iv - iv.min())
        _, new = np.unique(combo, return_inverse=True)
        labels = labels.copy()
        labels[r, c] = (n_old + 1 + new).astype(np.int32)
    # Compact the label numbers (bincount: linear, no sort of all pixels).
    present = np.bincount(labels.ravel()) > 0
    present[0] = False
    remap = np.zeros(len(present), np.int32)
    remap[present] = np.arange(1, int(present.sum()) + 1, dtype=np.int32)
    return remap[labels], True
