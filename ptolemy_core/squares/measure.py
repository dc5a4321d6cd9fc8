"""Per-square measurements: brightness, spread, visibility, illumination, ice thickness.

Intensities above the bars are first divided by the frame's fitted illumination fall-off
(vignetting, :func:`illumination`): a corner square of a frame whose corners receive 25 %
less beam would otherwise read ~100 nm thicker than the same ice at the centre.

Ice thickness (Beer–Lambert, ``t = λ · ln(I0 / I)``) with ``λ = LAMBDA_NM["ice"]``
(350 nm, an effective inelastic mean free path at 200–300 kV) and intensities measured
above the local **bar level** (bars are opaque, so their level is the detector's dark
offset). ``I0`` is the brightest vacuum in the atlas — the maximum of the lightly smoothed
image inside any segment — when that is clearly brighter than the typical square (at least
``VACUUM_RATIO`` × the median square level above the bars, i.e. ≥ 40 nm of ice thinner:
broken or empty squares). Otherwise ``I0`` is unknown, ``ice_thickness_nm`` is None and
only ``relative_thickness`` is given: ``λ · ln(Ĩ_med / Ĩ)`` in nm, thickness relative to
the atlas's median square (``Ĩ`` = level of the window's centre above the bar level, i.e.
the segment eroded by ~18 % of the window side, away from the thicker ice of the meniscus;
negative = thinner).
With a holey film the estimate includes the film's attenuation (apparent thickness).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ..synth.physics import LAMBDA_NM

#: Vacuum must be this much brighter than the median square (above bars) to serve as I0.
VACUUM_RATIO = float(np.exp(40.0 / LAMBDA_NM["ice"]))


@dataclass
class Measurements:
    """Arrays over the final segments (index k ↔ label k + 1)."""

    count: np.ndarray  # working pixels
    mean: np.ndarray  # mean raw intensity
    std: np.ndarray
    bar: np.ndarray  # local bar level at the segment
    peak: np.ndarray  # max of the smoothed image in the segment's core
    touches_edge: np.ndarray
    dip: np.ndarray | None = None  # min of the smoothed image in the segment's core
    noise: np.ndarray | None = None  # rms pixel noise (image minus its smoothed copy)
    core: np.ndarray | None = None  # mean raw intensity of the window's centre (no meniscus)
    core_std: np.ndarray | None = None  # intensity spread there


def measure(work: np.ndarray, smooth: np.ndarray, labels: np.ndarray, bar: np.ndarray,
            valid: np.ndarray | None = None) -> Measurements:
    """Label-wise statistics in one pass each (``np.bincount``).

    ``valid`` (working-scale bool mask, optional) marks pixels that carry signal: the
    intensity statistics skip the others (constant-filled gaps between montage tiles);
    ``count`` and the edge flag use every pixel of the segment.
    """
    n = int(labels.max())
    all_labels = labels
    if valid is not None and not valid.all():
        kept = np.where(valid, labels, 0)
        # A segment wholly inside a gap keeps its pixels (no statistics otherwise).
        has = np.bincount(kept.ravel(), minlength=n + 1) > 0
        labels = np.where(valid | ~has[labels], labels, 0)
    count = np.bincount(all_labels.ravel(), minlength=n + 1)[1:].astype(np.float64)
    flat = labels.ravel()
    w = work.ravel().astype(np.float64)
    safe = np.maximum(np.bincount(flat, minlength=n + 1)[1:].astype(np.float64), 1)
    s1 = np.bincount(flat, weights=w, minlength=n + 1)[1:]
    s2 = np.bincount(flat, weights=w * w, minlength=n + 1)[1:]
    mean = s1 / safe
    std = np.sqrt(np.maximum(s2 / safe - mean * mean, 0))
    bar_mean = np.bincount(flat, weights=bar.ravel().astype(np.float64), minlength=n + 1)[1:] / safe
    # Pixel noise of each segment: rms of the image minus its smoothed copy.
    hf = (work - smooth).ravel().astype(np.float64)
    noise = np.sqrt(np.bincount(flat, weights=hf * hf, minlength=n + 1)[1:] / safe)
    # Brightest and darkest smoothed values inside each segment's core (two pixels in from
    # its outline, whose values are only the half level): vacuum patches and cracks raise
    # the peak, contamination lowers the dip.
    core = _erode_labels(_erode_labels(labels))
    index = np.arange(1, n + 1)
    has_core = np.bincount(core.ravel(), minlength=n + 1)[1:] > 0
    # Segments too thin to have a core use all their pixels.
    src = np.where(np.concatenate([[False], has_core])[labels], core, labels)
    peak = np.asarray(ndi.maximum(smooth, src, index), float) if n else np.zeros(0)
    dip = np.asarray(ndi.minimum(smooth, src, index), float) if n else np.zeros(0)
    # Centre of each window: the segment eroded by ~18 % of the typical window side. The
    # ice is thicker next to the bars (meniscus), so the mean of the whole window reads
    # thicker than the ice where one would collect; the centre is also what a vacuum
    # patch or crack changes most in relative terms. Thin segments keep their 2-px core.
    side = float(np.sqrt(np.median(count[count > 0]))) if n else 0.0
    deep = core
    for _ in range(max(0, int(round(0.18 * side)) - 2)):
        deep = _erode_labels(deep)
    c_count = np.bincount(deep.ravel(), minlength=n + 1)[1:].astype(np.float64)
    few = c_count < np.maximum(4.0, 0.05 * safe)
    deep = np.where(np.concatenate([[False], few])[labels], src, deep)
    dflat = deep.ravel()
    c_count = np.maximum(np.bincount(dflat, minlength=n + 1)[1:].astype(np.float64), 1)
    c1 = np.bincount(dflat, weights=w, minlength=n + 1)[1:]
    c2 = np.bincount(dflat, weights=w * w, minlength=n + 1)[1:]
    core_mean = c1 / c_count
    core_std = np.sqrt(np.maximum(c2 / c_count - core_mean * core_mean, 0))
    border = np.zeros(n + 1, bool)
    for edge in (all_labels[0], all_labels[-1], all_labels[:, 0], all_labels[:, -1]):
        border[edge] = True
    return Measurements(count, mean, std, bar_mean, peak, border[1:], dip, noise, core_mean, core_std)


def _erode_labels(labels: np.ndarray) -> np.ndarray:
    """Labels minus their outline (4-neighbour, by shifted comparisons: linear and cheap)."""
    keep = labels > 0
    keep[1:, :] &= labels[1:, :] == labels[:-1, :]
    keep[:-1, :] &= labels[:-1, :] == labels[1:, :]
    keep[:, 1:] &= labels[:, 1:] == labels[:, :-1]
    keep[:, :-1] &= labels[:, :-1] == labels[:, 1:]
    keep[0, :] = keep[-1, :] = False
    keep[:, 0] = keep[:, -1] = False
    return np.where(keep, labels, 0)


#: Fewest uncut squares for an illumination fit (a frame's fall-off is estimated from them).
ILLUM_MIN_SQUARES = 8
#: Largest fall-off corrected at a frame corner (ρ² = 1).
ILLUM_MAX_FALLOFF = 0.4


def illumination(centers: np.ndarray, above: np.ndarray, full: np.ndarray,
                 shape: tuple[int, int]) -> np.ndarray:
    """Relative illumination at each square: the frame's radial fall-off (vignetting).

    The beam is brightest near the optical axis and falls off towards the frame's edges
    and corners, multiplying every transmitted intensity (vacuum included) by the same
    smooth factor. It is fitted, robustly, to the uncut squares' centre levels above the
    bars: ``ln level = a + b ρ² + c₁ r + c₂ q`` with ``(r, q)`` the (row, column) position
    in the frame scaled to [-1, 1] and ``ρ² = (r² + q²) / 2``; the linear terms take up ice
    gradients (and a slightly off-centre beam), squares more than 2.5 robust sigmas off
    the fit (vacuum, thick, defects) are left out (two rounds). Only a clear fall-off is
    corrected (``b`` below -2 standard errors, capped at :data:`ILLUM_MAX_FALLOFF` at the
    corners; returns ``exp(b ρ²)``, 1 at the frame centre); otherwise, or with fewer than
    :data:`ILLUM_MIN_SQUARES` uncut squares, every factor is 1.

    The fit is per frame: a single exposure, or one Leginon atlas tile. A montage's tiles
    each have their own fall-off, which this global fit does not model (the neighbour
    comparison of :mod:`.score` is what copes with them).

    Parameters
    ----------
    centers : (n, 2) array
        Square centres, (row, col) pixels of the frame.
    above : (n,) array
        Centre level above the local bar level (the dark offset) per square.
    full : (n,) bool array
        Squares not cut by the frame edge.
    shape : (rows, cols)
        The frame's shape.

    Returns
    -------
    ndarray
        (n,) factors in (0, 1].
    """
    n = len(above)
    g = np.ones(n)
    use = np.asarray(full, bool) & (np.asarray(above, float) > 0)
    if use.sum() < ILLUM_MIN_SQUARES:
        return g
    c = np.asarray(centers, float).reshape(n, 2)
    r = 2.0 * c[:, 0] / max(shape[0] - 1, 1) - 1.0
    q = 2.0 * c[:, 1] / max(shape[1] - 1, 1) - 1.0
    rho2 = 0.5 * (r * r + q * q)
    a = np.stack([np.ones(n), rho2, r, q], axis=1)
    z = np.log(np.maximum(np.asarray(above, float), 1e-6))
    keep = use.copy()
    coef = None
    for _ in range(3):
        if keep.sum() < ILLUM_MIN_SQUARES:
            break
        coef = np.linalg.lstsq(a[keep], z[keep], rcond=None)[0]
        res = z - a @ coef
        sig = 1.4826 * float(np.median(np.abs(res[keep] - np.median(res[keep])))) + 1e-3
        keep = use & (np.abs(res) < 2.5 * sig)
    if coef is None or not coef[1] < 0:
        return g
    # Only a fall-off the squares clearly show (2 standard errors) and at most
    # :data:`ILLUM_MAX_FALLOFF` at the corners: a few squares on a curved ice field must not
    # pass for vignetting.
    res = (z - a @ coef)[keep]
    dof = max(int(keep.sum()) - 4, 1)
    cov = np.linalg.pinv(a[keep].T @ a[keep]) * float(res @ res) / dof
    if coef[1] > -2.0 * float(np.sqrt(max(cov[1, 1], 0.0))):
        return g
    return np.exp(max(float(coef[1]), np.log(1.0 - ILLUM_MAX_FALLOFF)) * rho2)


def ice_estimates(m: Measurements, full: np.ndarray,
                  illum: np.ndarray | None = None) -> tuple[float | None, np.ndarray, np.ndarray, float]:
    """``(i0, ice_thickness_nm or NaN, relative_thickness_nm, median_level)`` per segment.

    Thickness is read at the window's centre level (``m.core``) when given: the ice next to
    the bars is thicker (meniscus) and not where one collects data.

    ``full`` marks segments usable as the atlas's reference (not cut by the edge).
    ``illum`` (:func:`illumination`, default all 1) divides every level above the bars, so
    ``i0`` is the brightest vacuum's bar level plus its level above the bars *at the frame
    centre* (equal to its raw peak when no fall-off was fitted).
    """
    lam = LAMBDA_NM["ice"]
    g = np.ones(len(m.bar)) if illum is None else np.asarray(illum, float)
    # The window's centre (no meniscus) when measured, else the whole segment's mean.
    above = np.maximum((m.mean if m.core is None else m.core) - m.bar, 1e-6) / g
    ref = above[full] if full.any() else above
    med = float(np.median(ref)) if len(ref) else 1.0
    rel = lam * np.log(med / above)
    i0 = None
    thick = np.full(len(above), np.nan)
    if len(above):
        # The brightest vacuum after dividing by the illumination at its square.
        k = int(np.argmax((m.peak - m.bar) / g))
        vac = float(m.peak[k] - m.bar[k]) / g[k]
        if vac >= VACUUM_RATIO * med:
            i0 = float(m.bar[k] + vac)
            # Per segment: vacuum above its own bar level (offset), same vacuum signal.
            thick = np.maximum(lam * np.log(vac / above), 0.0)
    return i0, thick, rel, med


def fill_lines(data: np.ndarray, stride: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the full-resolution image that hold one constant value.

    Montages assembled from tiles leave gaps filled with zero or a constant; where such a
    line crosses a square it looks like a crack (bright) or a scratch (dark) and must not
    enter the square's statistics. A line is checked on every ``stride``-th pixel first
    (cheap), candidates over their whole length. Returns boolean masks (rows, cols).
    """
    def const(a: np.ndarray, axis: int) -> np.ndarray:
        sub = a[:, ::stride] if axis == 1 else a[::stride, :]
        cand = np.ptp(sub, axis=axis) == 0
        idx = np.flatnonzero(cand)
        if len(idx):
            full = a[idx, :] if axis == 1 else a[:, idx]
            cand[idx] = np.ptp(full, axis=axis) == 0
        return cand

    return const(data, 1), const(data, 0)


def valid_mask(data: np.ndarray, scale: int, shape: tuple[int, int]) -> np.ndarray | None:
    """Working-scale mask of pixels untouched by constant fill lines (± one working pixel,
    the smoothing's reach), or None when the atlas has none."""
    rows, cols = fill_lines(data)
    if not rows.any() and not cols.any():
        return None
    valid = np.ones(shape, bool)
    for axis, lines in ((0, rows), (1, cols)):
        hit = np.unique(np.minimum(np.flatnonzero(lines) // scale, shape[axis] - 1))
        hit = np.unique(np.clip(np.concatenate([hit - 1, hit, hit + 1]), 0, shape[axis] - 1))
        if axis == 0:
            valid[hit, :] = False
        else:
            valid[:, hit] = False
    return valid
