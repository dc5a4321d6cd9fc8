"""Per-hole localisation on the working image, given an approximate lattice.

- :func:`lattice_average` folds the image onto one lattice cell (every pixel
  goes to the bin of its fractional lattice coordinates). The mean cell has a
  very high signal-to-noise ratio even when single holes are invisible; it
  gives the contrast sign, the hole position in the cell (the lattice origin),
  the hole ellipse, and the matched-filter template.
- :class:`CorrelationMap` correlates the whole image with that template once
  (tiled FFTs); every node is refined to the best peak near it (sub-pixel parabola).
- :func:`visible_fraction` decides which nodes are real, visible holes: the
  image edge cuts them analytically; opaque grid bars are masked as large
  dark regions (carbon), or holes must look like holes (gold, where the film
  itself is nearly as dark as a bar).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi


@dataclass
class CellModel:
    """What the folded lattice cell says about the holes (working pixels)."""

    sign: float  # +1 holes brighter than film, -1 darker (inverted)
    origin: np.ndarray  # a node (row, col), working px
    a: float  # ellipse semi-axes (px) and angle of ``a`` from +col towards +row (deg)
    b: float
    angle_deg: float
    hole_level: float  # mean raw intensity in the hole centre (working image)
    film_level: float  # mean raw intensity of the film between holes
    template: np.ndarray  # zero-mean template, (2R+1)²
    contrast_snr: float  # |hole - film| / noise of the folded cell


def _fold(img: np.ndarray, kmat: np.ndarray, m: int, mask: np.ndarray | None, max_px: int = 300_000):
    """Mean of ``img`` per fractional-coordinate bin (M × M), from a strided subsample."""
    h, w = img.shape
    st = max(1, int(math.ceil(math.sqrt(h * w / max_px))))
    rows = np.arange(0, h, st, dtype=np.float32)[:, None]
    cols = np.arange(0, w, st, dtype=np.float32)[None, :]
    sub = img[::st, ::st]
    u = kmat[0, 0] * rows + kmat[0, 1] * cols
    v = kmat[1, 0] * rows + kmat[1, 1] * cols
    iu = (np.floor((u - np.floor(u)) * m).astype(np.int64)) % m
    iv = (np.floor((v - np.floor(v)) * m).astype(np.int64)) % m
    idx = (iu * m + iv).ravel()
    vals = sub.ravel().astype(np.float64)
    keep = None if mask is None else ~mask[::st, ::st].ravel()
    if keep is not None:
        idx, vals = idx[keep], vals[keep]
    s = np.bincount(idx, vals, minlength=m * m)
    s2 = np.bincount(idx, vals * vals, minlength=m * m)
    n = np.bincount(idx, minlength=m * m)
    mean = s / np.maximum(n, 1)
    var = s2 / np.maximum(n, 1) - mean * mean
    return mean.reshape(m, m), var.reshape(m, m), n.reshape(m, m)


def lattice_average(raw: np.ndarray, flat: np.ndarray, basis: np.ndarray, dark: np.ndarray | None,
                    m: int = 32) -> CellModel | None:
    """Fold the image on the lattice cell and model the mean hole.

    Parameters
    ----------
    raw : working image (raw intensities)
    flat : flattened working image (zero mean, clipped)
    basis : (2, 2) rows = lattice vectors (working px)
    dark : mask of opaque pixels to leave out, or None
    """
    kmat = np.linalg.inv(basis.T)
    cell, var, cnt = _fold(flat, kmat, m, dark)
    if (cnt == 0).any():
        cell = np.where(cnt == 0, np.median(cell[cnt > 0]) if (cnt > 0).any() else 0.0, cell)
    sm = ndi.gaussian_filter(cell, m * 0.06, mode="wrap")
    med = float(np.median(sm))
    dev = sm - med
    k = int(np.argmax(np.abs(dev)))
    pr, pc = divmod(k, m)
    sign = 1.0 if dev[pr, pc] > 0 else -1.0
    fine = ndi.gaussian_filter(cell, 0.7, mode="wrap")
    # centre the hole in the cell to avoid wrap-around, then threshold at half contrast
    rolled = np.roll(np.roll(fine, m // 2 - pr, 0), m // 2 - pc, 1)
    peak = sign * (rolled[m // 2, m // 2] - med)
    if peak <= 0:
        return None
    over_half = sign * (rolled - med) > 0.5 * peak
    lab, _ = ndi.label(over_half)
    hole = lab == lab[m // 2, m // 2]
    if _percolates(over_half, m):
        # holes are isolated islands in a connected film: a half-contrast region that joins its
        # own periodic copies is the film (faint holes with a dark rim leave the film between
        # them as the cell's extreme). Take the other sign when its region is a bounded island.
        alt = _island(fine, dev, med, -sign, m)
        if alt is not None:
            sign, pr, pc, rolled, peak, hole = alt
    if hole.sum() < 3 or hole.sum() > 0.8 * m * m:
        return None
    br, bc = np.nonzero(hole)
    cr, cc = br.mean(), bc.mean()
    u0 = np.array([(pr + cr - m // 2 + 0.5) / m, (pc + cc - m // 2 + 0.5) / m])
    du = np.column_stack([(br - cr) / m, (bc - cc) / m])
    d = du @ basis  # real-space displacements (row, col)
    cov = d.T @ d / len(d) + np.eye(2) * (1.0 / 12.0) * (np.linalg.norm(basis, axis=1).mean() / m) ** 2
    evals, evecs = np.linalg.eigh(cov)
    a, b = 2 * math.sqrt(max(evals[1], 1e-6)), 2 * math.sqrt(max(evals[0], 1e-6))
    va = evecs[:, 1]
    angle = math.degrees(math.atan2(va[0], va[1])) % 180.0
    raw_cell, _, _ = _fold(raw, kmat, m, dark)
    if a > MAX_ASPECT * b:
        # holes are round (an oblique view compresses the lattice, not one hole more than
        # the cell): a strongly one-sided blob is a defocus fringe, so model the hole by symmetry
        sym = _symmetric_model(cell, raw_cell, basis, kmat, u0, m, sign, a)
        if sym is not None:
            u0, rad_w, hole_level, film_level = sym
            return _model_at(cell, basis, kmat, u0, m, sign, rad_w, rad_w, 0.0, hole_level, film_level,
                             var, cnt)
    # raw levels: hole centre vs film (outside 1.4× the hole)
    raw_rolled = np.roll(np.roll(raw_cell, m // 2 - pr, 0), m // 2 - pc, 1)
    far = ~ndi.binary_dilation(hole, iterations=max(1, int(0.2 * math.sqrt(hole.sum()))))
    inner = ndi.binary_erosion(hole, iterations=max(1, int(0.25 * math.sqrt(hole.sum() / math.pi))))
    if not inner.any():
        inner = hole
    hole_level = float(raw_rolled[inner].mean())
    film_level = float(np.median(raw_rolled[far])) if far.any() else float(np.median(raw_rolled))
    noise = math.sqrt(float(np.median(var)) / max(float(np.median(cnt)), 1.0))
    film_c = float(np.median(rolled[far] if far.any() else rolled))
    snr = abs(float(rolled[inner].mean()) - film_c) / max(noise, 1e-9)
    return _model_at(cell, basis, kmat, u0, m, sign, a, b, angle, hole_level, film_level, var, cnt, snr)


def _percolates(mask: np.ndarray, m: int) -> bool:
    """Whether the region of ``mask`` at the cell centre joins one of its periodic copies."""
    lab, _ = ndi.label(np.tile(mask, (3, 3)))
    c = m // 2
    own = lab[m + c, m + c]
    return bool(own) and own in (lab[c, m + c], lab[m + c, c], lab[c, c], lab[c, 2 * m + c])


def _island(fine: np.ndarray, dev: np.ndarray, med: float, sign: float, m: int):
    """The hole of contrast ``sign`` as a bounded island of the folded cell, or None.

    Its half-contrast region must not percolate and, once its holes are filled (a dark rim
    around a faint hole is a ring), cover less than half of the cell (holes are the minority
    phase). Returns (sign, pr, pc, rolled, peak, hole) re-centred on the island's centroid.
    """
    k = int(np.argmax(sign * dev))
    pr, pc = divmod(k, m)
    rolled = np.roll(np.roll(fine, m // 2 - pr, 0), m // 2 - pc, 1)
    c = m // 2
    peak = sign * (rolled[c, c] - med)
    if peak <= 0:
        return None
    mask = sign * (rolled - med) > 0.5 * peak
    if _percolates(mask, m):
        return None
    lab, _ = ndi.label(np.tile(mask, (3, 3)))
    blob = ndi.binary_fill_holes(lab == lab[m + c, m + c])
    if blob.sum() >= 0.5 * m * m:
        return None
    br, bc = np.nonzero(blob)
    sr, sc = int(round(br.mean())) - (m + c), int(round(bc.mean())) - (m + c)
    hole = blob[m + sr:2 * m + sr, m + sc:2 * m + sc]
    rolled = np.roll(np.roll(rolled, -sr, 0), -sc, 1)
    return sign, (pr + sr) % m, (pc + sc) % m, rolled, peak, hole


MAX_ASPECT = 1.6  # a folded hole more elongated than this is not a (tilted) round hole


def _model_at(cell, basis, kmat, u0, m, sign, a, b, angle, hole_level, film_level, var, cnt, snr=None):
    """The :class:`CellModel` for a hole at fractional position ``u0`` of the folded cell."""
    origin = basis.T @ u0
    if snr is None:
        noise = math.sqrt(float(np.median(var)) / max(float(np.median(cnt)), 1.0))
        snr = _cell_snr(cell, kmat, u0, m, a, noise)
    # template: the mean cell resampled in real space around the hole centre
    rad = int(math.ceil(1.35 * a)) + 1
    yy, xx = np.mgrid[-rad:rad + 1, -rad:rad + 1].astype(np.float64)
    fr = kmat @ np.vstack([yy.ravel(), xx.ravel()])
    fr = fr + u0[:, None]
    tpl = ndi.map_coordinates(cell, [fr[0] * m - 0.5, fr[1] * m - 0.5], order=1, mode="grid-wrap")
    tpl = tpl.reshape(yy.shape)
    disk = (yy ** 2 + xx ** 2) <= (1.35 * a) ** 2
    tpl = np.where(disk, tpl - tpl[disk].mean(), 0.0).astype(np.float32)
    return CellModel(sign, origin, a, b, angle, hole_level, film_level, tpl, snr)


def _real_samples(cell: np.ndarray, kmat: np.ndarray, u0: np.ndarray, m: int, rad: int):
    """The folded cell resampled on a real-space (row, col) grid of ±rad px around ``u0``."""
    yy, xx = np.mgrid[-rad:rad + 1, -rad:rad + 1].astype(np.float64)
    fr = kmat @ np.vstack([yy.ravel(), xx.ravel()]) + u0[:, None]
    v = ndi.map_coordinates(cell, [fr[0] * m - 0.5, fr[1] * m - 0.5], order=1, mode="grid-wrap")
    return v.reshape(yy.shape), np.hypot(yy, xx)


def _cell_snr(cell, kmat, u0, m, rad_w, noise) -> float:
    v, rr = _real_samples(cell, kmat, u0, m, int(math.ceil(1.8 * rad_w)) + 1)
    inner, ring = v[rr <= 0.6 * rad_w], v[(rr >= 1.3 * rad_w) & (rr <= 1.8 * rad_w)]
    if len(inner) == 0 or len(ring) == 0:
        return 0.0
    return abs(float(inner.mean()) - float(np.median(ring))) / max(noise, 1e-9)


def _symmetric_model(cell, raw_cell, basis, kmat, u0, m, sign, a_blob):
    """A round hole fitted to the folded cell's rim (a circular Hough transform of the cell).

    The folded cell is resampled in real space (half-pixel steps) around the blob's
    centre. A ring scores by its edge strength (gradient magnitude, or contrast of the
    blob's sign for a thin Fresnel line), averaged over its weaker half of 8 sectors:
    a one-sided fringe covers only part of any ring, while the faint rest of the rim
    completes the true circle. Returns (u0, radius_px, hole_level, film_level) or None.
    """
    pitch = float(np.linalg.norm(basis, axis=1).min())
    step = 0.5
    half = int(math.ceil(pitch / step))
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float64) * step
    fr = kmat @ np.vstack([yy.ravel(), xx.ravel()]) + u0[:, None]
    real = ndi.map_coordinates(cell, [fr[0] * m - 0.5, fr[1] * m - 0.5], order=1, mode="grid-wrap")
    real = ndi.gaussian_filter(real.reshape(yy.shape), 1.0)
    contrast = sign * (real - float(np.median(real)))
    grad = np.hypot(ndi.sobel(real, 0), ndi.sobel(real, 1)) / 8.0
    # a ring is an edge (step: gradient) or a thin Fresnel line (the blob's sign)
    grad = np.maximum(contrast, grad - float(np.median(grad)))
    # a fringe hugs the rim, so its long semi-axis is about the hole radius
    radii = np.arange(max(2.0, 0.8 * a_blob), min(0.45 * pitch, 1.6 * a_blob), 0.5)
    ang = np.linspace(0, 2 * math.pi, 72, endpoint=False)
    off = np.arange(-0.4 * pitch, 0.4 * pitch + 1e-9, step)
    cy, cx = np.meshgrid(off, off, indexing="ij")
    best, best_v = None, -np.inf
    for rad in radii:
        py = (cy.ravel()[:, None] + rad * np.sin(ang)[None]) / step + half
        px = (cx.ravel()[:, None] + rad * np.cos(ang)[None]) / step + half
        g = ndi.map_coordinates(grad, [py, px], order=1, mode="nearest").reshape(len(py), 8, -1)
        # a circle must be supported all round: the weaker sectors decide (not the fringe)
        v = np.sort(g.mean(axis=2), axis=1)[:, :4].mean(axis=1)
        k = int(np.argmax(v))
        if v[k] > best_v:
            best_v, best = v[k], (cy.ravel()[k], cx.ravel()[k], float(rad))
    if best is None or best_v <= 0:
        return None
    dr, dc, rad_w = best
    u = u0 + kmat @ np.array([dr, dc])
    rmax = int(math.ceil(0.48 * pitch))
    raw_v, rr2 = _real_samples(raw_cell, kmat, u, m, rmax)
    inner = raw_v[rr2 <= 0.6 * rad_w]
    far = raw_v[(rr2 >= 1.4 * rad_w) & (rr2 <= rmax)]
    if len(inner) == 0 or len(far) == 0:
        return None
    return u, rad_w, float(inner.mean()), float(np.median(far))


def _parabola(win: np.ndarray, ky: np.ndarray, kx: np.ndarray, axis: int) -> np.ndarray:
    n = np.arange(len(ky))
    lim = win.shape[1 + axis] - 1
    if axis == 0:
        km, kp = np.clip(ky - 1, 0, lim), np.clip(ky + 1, 0, lim)
        m1, z, p1 = win[n, km, kx], win[n, ky, kx], win[n, kp, kx]
        edge = (ky == 0) | (ky == lim)
    else:
        km, kp = np.clip(kx - 1, 0, lim), np.clip(kx + 1, 0, lim)
        m1, z, p1 = win[n, ky, km], win[n, ky, kx], win[n, ky, kp]
        edge = (kx == 0) | (kx == lim)
    den = m1 - 2 * z + p1
    out = np.where(den < 0, 0.5 * (m1 - p1) / np.where(den < 0, den, -1), 0.0)
    return np.where(edge, 0.0, np.clip(out, -0.5, 0.5))


def disk_samples(n_ring: int = 6) -> np.ndarray:
    """Points uniform in area in the unit disk, (K, 2)."""
    pts = []
    for k in range(1, n_ring + 1):
        rad = (k - 0.5) / n_ring
        cnt = 6 * k
        ang = np.arange(cnt) * 2 * math.pi / cnt + k * 0.37
        pts.append(np.column_stack([rad * np.sin(ang), rad * np.cos(ang)]))
    return np.concatenate(pts)


def ellipse_points(centres: np.ndarray, a: float, b: float, angle_deg: float,
                   scale: float = 1.0) -> np.ndarray:
    """Sample points inside each ellipse: (N, K, 2) (row, col)."""
    th = math.radians(angle_deg)
    ua = np.array([math.sin(th), math.cos(th)])  # a axis (row, col)
    ub = np.array([ua[1], -ua[0]])
    unit = disk_samples()
    local = (unit[:, 1:2] * a * ua + unit[:, 0:1] * b * ub) * scale
    return centres[:, None, :] + local[None]


def dark_mask(raw_smooth: np.ndarray, level: float, min_area: float) -> np.ndarray:
    """Opaque regions: darker than ``level`` and larger than ``min_area`` px (bars, not contamination)."""
    dark = raw_smooth < level
    lab, n = ndi.label(dark)
    if n == 0:
        return dark
    areas = np.bincount(lab.ravel())
    big = areas >= min_area
    big[0] = False
    return big[lab]


def sample(img: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-pixel values at points (…, 2); returns values and an in-image mask."""
    h, w = img.shape
    r = np.rint(pts[..., 0]).astype(np.int64)
    c = np.rint(pts[..., 1]).astype(np.int64)
    ok = (r >= 0) & (r < h) & (c >= 0) & (c < w)
    vals = img[np.clip(r, 0, h - 1), np.clip(c, 0, w - 1)]
    return vals, ok


class CorrelationMap:
    """Template cross-correlation of the whole working image, computed once, tile by tile.

    Memory is one working-size float32 map (tiles of ``tile²`` with a margin go
    through ``scipy.signal.fftconvolve``). Every refinement of the lattice then
    only gathers small windows from it.
    """

    def __init__(self, img: np.ndarray, template: np.ndarray, tile: int = 1024):
        from scipy.signal import fftconvolve

        h, w = img.shape
        rad = template.shape[0] // 2
        self.rad = rad
        self.corr = np.zeros((h, w), np.float32)
        kern = template[::-1, ::-1].astype(np.float32)
        tnorm = float(np.sqrt((template ** 2).sum())) * math.sqrt(float((template != 0).sum())) + 1e-12
        box = 2 * rad + 1
        m = rad + 1
        for r0 in range(0, h, tile):
            for c0 in range(0, w, tile):
                r1, c1 = min(h, r0 + tile), min(w, c0 + tile)
                ra, rb, ca, cb = max(0, r0 - m), min(h, r1 + m), max(0, c0 - m), min(w, c1 + m)
                sub = img[ra:rb, ca:cb].astype(np.float32)
                cor = fftconvolve(sub, kern, mode="same")
                # normalise by the local standard deviation (a correlation coefficient-like score)
                mu = ndi.uniform_filter(sub, box, mode="nearest")
                # local std · |template| (in place: the same float32 operations, fewer temporaries)
                den = ndi.uniform_filter(np.multiply(sub, sub, out=sub), box, mode="nearest")
                np.multiply(mu, mu, out=mu)
                np.subtract(den, mu, out=den)
                np.maximum(den, 1e-12, out=den)
                np.sqrt(den, out=den)
                den *= tnorm
                cor /= den
                self.corr[r0:r1, c0:c1] = cor[r0 - ra:r0 - ra + (r1 - r0), c0 - ca:c0 - ca + (c1 - c0)]

    def refine(self, nodes: np.ndarray, search: int) -> tuple[np.ndarray, np.ndarray]:
        """Best correlation within ``±search`` px of each node.

        Returns sub-pixel centres (N, 2) and peak scores (N,), 0 where the footprint leaves the image.
        """
        h, w = self.corr.shape
        n = len(nodes)
        centres = np.array(nodes, float)
        score = np.zeros(n, np.float32)
        base = np.rint(nodes).astype(np.int64)
        # the template footprint must lie inside the image: near the border the zero-padded
        # correlation is biased (holes cut by the edge keep their lattice node instead)
        e = search + self.rad
        inside = (base[:, 0] >= e) & (base[:, 0] < h - e) & (base[:, 1] >= e) & (base[:, 1] < w - e)
        idx = np.nonzero(inside)[0]
        if len(idx) == 0:
            return centres, score
        off = np.arange(-search, search + 1)
        for s0 in range(0, len(idx), 8192):
            sel = idx[s0:s0 + 8192]
            rr = base[sel, 0][:, None, None] + off[None, :, None]
            cc = base[sel, 1][:, None, None] + off[None, None, :]
            win = self.corr[rr, cc]
            flat = win.reshape(len(sel), -1)
            k = np.argmax(flat, axis=1)
            ky, kx = np.divmod(k, win.shape[2])
            score[sel] = flat[np.arange(len(sel)), k]
            centres[sel, 0] = base[sel, 0] + ky - search + _parabola(win, ky, kx, axis=0)
            centres[sel, 1] = base[sel, 1] + kx - search + _parabola(win, ky, kx, axis=1)
        return centres, score


def sample_scaled(arr: np.ndarray, pts: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Nearest values of a map binned by ``factor`` at working-pixel points (…, 2)."""
    h, w = arr.shape
    r = np.floor((pts[..., 0] + 0.5) / factor).astype(np.int64)
    c = np.floor((pts[..., 1] + 0.5) / factor).astype(np.int64)
    ok = (r >= 0) & (r < h) & (c >= 0) & (c < w)
    return arr[np.clip(r, 0, h - 1), np.clip(c, 0, w - 1)], ok
