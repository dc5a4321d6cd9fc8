"""Image preparation shared by training and inference (so both see exactly the same inputs).

All coordinates are ``(row, col)`` in pixels of the full-resolution image unless a
name says ``work`` (pixels of the working-scale image, ``full = work * scale``).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .classifiers import HOLE_MIN_SIZE, SQUARE_SIZE

#: Square crops cover the aligned rectangle enlarged by this factor (the rim shows bars/edges).
SQUARE_RIM = 1.25
#: Supersampling factor of square crops (anti-aliasing).
SQUARE_SUPER = 4
#: Hole crops cover the hole disk enlarged by this factor (half-side = HOLE_RIM * radius).
HOLE_RIM = 1.3


def to_working(data: np.ndarray, scale: float) -> np.ndarray:
    """Reduce an image by ``scale`` (input px per working px) with area averaging.

    Integer part by block means (cheap, exact area average), the remaining
    factor by bilinear interpolation. ``scale <= 1`` returns a float32 copy.
    """
    data = np.asarray(data, dtype=np.float32)
    scale = float(scale)
    if scale <= 1.0 + 1e-6:
        return data.copy()
    k = max(1, int(np.floor(scale + 1e-6)))
    if k > 1:
        h, w = (data.shape[0] // k) * k, (data.shape[1] // k) * k
        data = data[:h, :w].reshape(h // k, k, w // k, k).mean(axis=(1, 3), dtype=np.float32)
    rest = scale / k
    if rest > 1.0 + 1e-3:
        out_shape = (max(1, int(round(data.shape[0] / rest))), max(1, int(round(data.shape[1] / rest))))
        rows = (np.arange(out_shape[0], dtype=np.float32) + 0.5) * rest - 0.5
        cols = (np.arange(out_shape[1], dtype=np.float32) + 0.5) * rest - 0.5
        data = ndi.map_coordinates(
            data, np.meshgrid(rows, cols, indexing="ij"), order=1, mode="nearest"
        ).astype(np.float32)
    return data


def full_to_work(points_rc: np.ndarray, scale: float) -> np.ndarray:
    """Full-resolution ``(row, col)`` -> working-scale pixel coordinates (pixel centres kept)."""
    return (np.asarray(points_rc, dtype=np.float64) + 0.5) / float(scale) - 0.5


def work_to_full(points_rc: np.ndarray, scale: float) -> np.ndarray:
    """Inverse of :func:`full_to_work`."""
    return (np.asarray(points_rc, dtype=np.float64) + 0.5) * float(scale) - 0.5


def square_crops(data: np.ndarray, vertices: list[np.ndarray] | np.ndarray) -> np.ndarray:
    """Resample each square's aligned rectangle (with rim) to ``SQUARE_SIZE``².

    Parameters
    ----------
    data : (H, W) array
        The atlas.
    vertices : sequence of (4, 2) arrays
        Rectangle corners ``(row, col)`` in order around the rectangle.

    Returns
    -------
    (N, SQUARE_SIZE, SQUARE_SIZE) float32
        Raw intensities (normalise with :func:`square_normalisation`). The crop
        axes follow the rectangle's edges (grid-aligned), so 90° rotations are
        the natural augmentation.
    """
    data = np.asarray(data, dtype=np.float32)
    n = len(vertices)
    out = np.zeros((n, SQUARE_SIZE, SQUARE_SIZE), np.float32)
    if n == 0:
        return out
    v = np.asarray(vertices, dtype=np.float64).reshape(n, 4, 2)
    centre = v.mean(axis=1)
    e1 = (v[:, 1] - v[:, 0])  # one edge
    e2 = (v[:, 3] - v[:, 0])  # the adjacent edge
    # Anti-aliasing by supersampling (SQUARE_SUPER² samples averaged per output pixel):
    # depends on each square alone, never on the other squares passed.
    k = SQUARE_SUPER
    m = SQUARE_SIZE * k
    t = (np.arange(m) + 0.5) / m - 0.5  # -0.5..0.5
    a, b = np.meshgrid(t, t, indexing="ij")
    for s in range(0, n, 64):  # bounded memory
        sl = slice(s, min(n, s + 64))
        offsets = a[None, :, :, None] * e2[sl, None, None, :] + b[None, :, :, None] * e1[sl, None, None, :]
        pts = centre[sl, None, None, :] + SQUARE_RIM * offsets
        vals = ndi.map_coordinates(data, [pts[..., 0].ravel(), pts[..., 1].ravel()], order=1, mode="nearest")
        out[sl] = vals.reshape(-1, SQUARE_SIZE, k, SQUARE_SIZE, k).mean(axis=(2, 4))
    return out


def square_normalisation(crops: np.ndarray) -> tuple[float, float]:
    """Mean and std over all squares' crop pixels of one atlas (the paper's dose normalisation)."""
    crops = np.asarray(crops, dtype=np.float64)
    if crops.size == 0:
        return 0.0, 1.0
    mean = float(crops.mean())
    std = float(crops.std())
    return mean, (std if std > 0 else 1.0)


def square_log_areas(areas: np.ndarray) -> np.ndarray:
    """``log(area / median area)`` over the atlas's squares (relative size, scale-free)."""
    areas = np.asarray(areas, dtype=np.float64).clip(1.0)
    return np.log(areas / np.median(areas)).astype(np.float32) if areas.size else areas.astype(np.float32)


def hole_reference(work: np.ndarray, i0: float | None = None) -> tuple[float, bool]:
    """Intensity reference of a working image and whether it is the vacuum ``I0``.

    ``I0`` when given (finite, > 0); else the 99.5th percentile of the image
    (thin ice or vacuum), always > 0.
    """
    if i0 is not None and np.isfinite(i0) and i0 > 0:
        return float(i0), True
    ref = float(np.percentile(work, 99.5))
    return (ref if ref > 0 else float(np.abs(work).max() or 1.0)), False


def square_optical_depth(raw_crops: np.ndarray, i0: float | None) -> tuple[np.ndarray, np.ndarray]:
    """``log(I/I0)`` of each square's centre (inner half of the crop) and the I0-known flag."""
    n = len(raw_crops)
    if i0 is None or not np.isfinite(i0) or i0 <= 0 or n == 0:
        return np.zeros(n, np.float32), np.zeros(n, np.float32)
    q = SQUARE_SIZE // 4
    centre = raw_crops[:, q:SQUARE_SIZE - q, q:SQUARE_SIZE - q].mean(axis=(1, 2))
    od = 3.0 * np.log(np.clip(centre, 1e-3 * i0, None) / i0).clip(-2.0, 0.5)
    return od.astype(np.float32), np.ones(n, np.float32)


def hole_crop_half(radius_work: float) -> int:
    """Half-side (working px) of the crop of a hole of radius ``radius_work`` (working px)."""
    return int(max(HOLE_MIN_SIZE // 2, np.ceil(HOLE_RIM * float(radius_work))))


def _sample_crops(work: np.ndarray, centres_work: np.ndarray, half: int) -> tuple[np.ndarray, np.ndarray]:
    """``(crop, z)``: bilinear ``(N, 2h+1, 2h+1)`` crops around sub-pixel centres (edges extended)
    and the same crops z-scored by their own pixels."""
    n, side = len(centres_work), 2 * half + 1
    t = np.arange(-half, half + 1, dtype=np.float64)
    rr = centres_work[:, 0, None, None] + t[None, :, None] + 0 * t[None, None, :]
    cc = centres_work[:, 1, None, None] + 0 * t[None, :, None] + t[None, None, :]
    src = np.asarray(work, np.float32)
    crop = ndi.map_coordinates(src, [rr.ravel(), cc.ravel()], order=1, mode="nearest")
    crop = crop.reshape(n, side, side).astype(np.float32)
    mean = crop.mean(axis=(1, 2), keepdims=True)
    sd = crop.std(axis=(1, 2), keepdims=True)
    return crop, (crop - mean) / np.where(sd > 0, sd, 1.0)


def hole_crops(work: np.ndarray, centres_work: np.ndarray, half: int, ref: float) -> np.ndarray:
    """Two-channel hole crops ``(N, 2, 2h+1, 2h+1)`` around sub-pixel centres (one vectorised lookup).

    Channel 0: the crop z-scored by its own pixels (the paper's per-crop
    normalisation); channel 1: ``3·log(I/ref)`` clipped to [-6, 1.5] (optical
    depth; ``ref`` = I0 or the image's bright reference). Pixels beyond the
    image take the nearest edge value.
    """
    centres_work = np.asarray(centres_work, dtype=np.float64).reshape(-1, 2)
    n = len(centres_work)
    side = 2 * half + 1
    if n == 0:
        return np.zeros((0, 2, side, side), np.float32)
    crop, z = _sample_crops(work, centres_work, half)
    # x3: 100 nm of ice (~0.3 optical depths) becomes ~1 unit, like the z-scored channel.
    od = 3.0 * np.log(np.clip(crop, ref * 1e-3, None) / ref).clip(-2.0, 0.5)
    return np.stack([z, od], axis=1).astype(np.float32)


def hole_crop(work: np.ndarray, centre_work: tuple[float, float], half: int, ref: float) -> np.ndarray:
    """One two-channel hole crop ``(2, 2h+1, 2h+1)`` (see :func:`hole_crops`)."""
    return hole_crops(work, np.asarray([centre_work], float), half, ref)[0]


# ------------------------------------------------------------------------------------------
# Input version 2 (robust, physical): what a network trained with ``arch["inputs"] == 2`` sees.
# Version 1 (above: mean/std of the raw square crops; log(I / 99.5th percentile) for holes)
# is kept for weights trained with it. Version 2 removes what physics says carries no
# information about the sample: a multiplicative dose/gain (log intensity), a detector or
# display offset (the dark level of the opaque bars is subtracted; hole images use an
# affine-invariant channel) and, for squares, a display gamma (log intensity scaled by the
# spread of the atlas's own squares, so ``I**g`` gives the same input).
# ------------------------------------------------------------------------------------------

#: Spread floor (log units ≈ 5 % intensity) of the square population: an atlas whose squares
#: are all alike must not have its noise blown up to unit scale.
SQUARE_LOG_SPREAD_MIN = 0.05
#: Input clip (population-normalised units): opaque bars in the rim sit at the floor.
SQUARE_CLIP = 6.0


def _subsample(data: np.ndarray, target: int = 1 << 20) -> np.ndarray:
    """A strided view with at most ~``target`` pixels (percentiles of 8k² atlases stay cheap)."""
    step = max(1, int(np.ceil(np.sqrt(data.size / float(target)))))
    return data[::step, ::step]


def image_levels(data: np.ndarray) -> tuple[float, float, float]:
    """``(dark, median, bright)`` = 1st, 50th and 99.5th percentiles of an image.

    On an atlas the darkest percent is the opaque grid bars: their level is the
    detector's (or the display's) zero, which must be subtracted before Beer-Lambert
    logs mean anything; the bright level is the thinnest ice or vacuum.
    """
    lo, mid, hi = np.percentile(_subsample(np.asarray(data, np.float32)), [1.0, 50.0, 99.5])
    return float(lo), float(mid), float(hi)


def square_log_crops(raw: np.ndarray, dark: float, bright: float) -> np.ndarray:
    """``log(I - dark)`` of raw square crops, floored at 1 % of ``bright - dark`` (opaque = floor)."""
    span = max(float(bright) - float(dark), 1e-6)
    return np.log(np.clip(np.asarray(raw, np.float32) - dark, 0.01 * span, None)).astype(np.float32)


def square_population(log_crops: np.ndarray) -> tuple[float, float]:
    """Median and robust spread (1.4826·MAD, floored) of the squares' centre log-intensities.

    Each square contributes one value (the median of its inner half), so a few
    broken/opaque squares or a large bar rim cannot move the reference.
    """
    n = len(log_crops)
    if n == 0:
        return 0.0, 1.0
    q = SQUARE_SIZE // 4
    centres = np.median(log_crops[:, q:SQUARE_SIZE - q, q:SQUARE_SIZE - q].reshape(n, -1), axis=1)
    med = float(np.median(centres))
    mad = 1.4826 * float(np.median(np.abs(centres - med)))
    return med, max(mad, SQUARE_LOG_SPREAD_MIN)


def square_optical_depth_v2(raw_crops: np.ndarray, i0: float | None,
                            dark: float) -> tuple[np.ndarray, np.ndarray]:
    """``3·log((I - dark) / (I0 - dark))`` of each square's centre, and the I0-known flag."""
    n = len(raw_crops)
    if i0 is None or not np.isfinite(i0) or i0 <= dark or n == 0:
        return np.zeros(n, np.float32), np.zeros(n, np.float32)
    q = SQUARE_SIZE // 4
    ref = float(i0) - float(dark)
    centre = raw_crops[:, q:SQUARE_SIZE - q, q:SQUARE_SIZE - q].mean(axis=(1, 2)) - dark
    od = 3.0 * np.log(np.clip(centre, 1e-3 * ref, None) / ref).clip(-2.0, 0.5)
    return od.astype(np.float32), np.ones(n, np.float32)


def hole_crops_v2(work: np.ndarray, centres_work: np.ndarray, half: int, i0: float | None,
                  levels: tuple[float, float]) -> np.ndarray:
    """Three-channel hole crops ``(N, 3, 2h+1, 2h+1)`` (input version 2).

    Channel 0: the crop z-scored by its own pixels (per-crop normalisation; any
    affine change of the intensities drops out). Channel 1: optical depth
    ``3·log(I/I0)`` when the vacuum intensity ``I0`` is known, else 0 (no guess
    from the image: a percentile is not I0 once an offset or a display curve is
    applied). Channel 2: ``(I - median) / (bright - median)`` with the image's
    50th and 99.5th percentiles (``levels``): the crop relative to the film and
    the thinnest ice of its own image, unchanged by dose, gain and offset.
    """
    centres_work = np.asarray(centres_work, dtype=np.float64).reshape(-1, 2)
    n = len(centres_work)
    side = 2 * half + 1
    if n == 0:
        return np.zeros((0, 3, side, side), np.float32)
    crop, z = _sample_crops(work, centres_work, half)
    if i0 is not None and np.isfinite(i0) and i0 > 0:
        od = 3.0 * np.log(np.clip(crop, i0 * 1e-3, None) / i0).clip(-2.0, 0.5)
    else:
        od = np.zeros_like(crop)
    mid, bright = float(levels[0]), float(levels[1])
    span = bright - mid
    if abs(span) < 1e-6:
        span = 1e-6
    rel = ((crop - mid) / span).clip(-4.0, 4.0)
    return np.stack([z, od, rel], axis=1).astype(np.float32)
