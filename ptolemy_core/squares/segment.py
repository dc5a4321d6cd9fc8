"""Pixels → square segments at a reduced working scale.

Pieces:

- :func:`block_mean` — integer down-sampling by block averaging (means are preserved, so
  "mean raw intensity" measured at the working scale equals the full-resolution value).
- :func:`estimate_lattice` — grid pitch and angle from the autocorrelation of a coarse
  copy of the atlas (the mesh is periodic); sets the working scale so that a pitch is
  ~:data:`WORK_PITCH_PX` working pixels, whatever the input size (cost ~linear in pixels).
- :func:`fit_mixture` — Ptolemy's two-class intensity mixture, fitted by EM on the
  *histogram* (256 bins, deterministic initialisation at the 10th/90th percentiles), so
  an 8k² atlas costs milliseconds.
- :func:`local_levels` / :func:`segment` — "bars vs not bars": grid bars are opaque, so
  the local bar level (a low percentile per pitch-sized block) is the image's dark
  reference wherever it is; the local open level (a high percentile over larger blocks)
  follows vignetting, tile brightness and seams. Squares are pixels clearly above the bar
  level *relative to that local contrast* (so dark thick squares and very bright broken
  ones are kept), then each segment is re-thresholded at half-way between the local bar
  level and its own mean level (the 50 % crossing of a blurred step is the true edge,
  which also rejects the glow of scattered electrons on the bars).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

#: Target grid pitch in working pixels (windows then span ~15–35 working pixels).
WORK_PITCH_PX = 32.0
#: Largest side of the coarse copy used for the lattice estimate.
COARSE_SIDE = 256


def block_mean(data: np.ndarray, factor: int, *, keep_remainder: bool = False) -> np.ndarray:
    """Average ``factor × factor`` blocks.

    The ragged right/bottom remainder is dropped, or with ``keep_remainder`` averaged into
    one extra (narrower) row/column of blocks so squares cut by those edges stay visible.
    """
    data = np.asarray(data)
    if factor <= 1:
        return np.asarray(data, dtype=np.float32)
    h, w = data.shape[0] // factor, data.shape[1] // factor
    if h == 0 or w == 0:
        return np.asarray(data, dtype=np.float32).mean(dtype=np.float32, keepdims=True).reshape(1, 1)
    # Strided slice additions (2 passes over the data, vectorised inner loops) are several
    # times faster than reducing a 4-D reshaped view along its short axes.
    rows = np.array(data[0: h * factor: factor, : w * factor], dtype=np.float32)
    for i in range(1, factor):
        rows += data[i: h * factor: factor, : w * factor]
    out = np.array(rows[:, 0::factor], dtype=np.float32)
    for j in range(1, factor):
        out += rows[:, j::factor]
    out *= np.float32(1.0 / (factor * factor))
    if not keep_remainder:
        return out
    rr, rc = data.shape[0] - h * factor, data.shape[1] - w * factor
    if rc:
        col = data[: h * factor, w * factor:].reshape(h, factor, rc).mean(axis=(1, 2), dtype=np.float32)
        out = np.concatenate([out, col[:, None]], axis=1)
    if rr:
        tail = data[h * factor:]
        row = tail[:, : w * factor].reshape(rr, w, factor).mean(axis=(0, 2), dtype=np.float32)
        if rc:
            row = np.append(row, np.float32(tail[:, w * factor:].mean(dtype=np.float32)))
        out = np.concatenate([out, row[None, :].astype(np.float32)], axis=0)
    return out


@dataclass
class Lattice:
    """Grid periodicity measured on the image (``None`` fields when not periodic)."""

    pitch_px: float | None  # full-resolution pixels
    angle_deg: float | None  # lattice axis (sin θ, cos θ) in (row, col), 0..90
    strength: float  # autocorrelation peak height / zero-lag value
    min_pitch: float | None = None  # the search was restricted to pitches above this
    texture_px: float | None = None  # a rejected (non-mesh) period: film texture to smooth away


def _acf_peak(img: np.ndarray, expect: np.ndarray | None = None,
              sigma: float = 1.5, min_r: float = 0.0) -> tuple[np.ndarray | None, float]:
    """Nearest strong lattice vector (d_row, d_col) in pixels of ``img``, and its strength.

    With ``expect`` (a vector measured on a coarser copy) the peak is searched at radii
    between 0.25 and 1.25 times its length (so a much finer texture — a resolved holey
    film — cannot be mistaken for the mesh, while a coarse harmonic is corrected).
    """
    h, w = img.shape
    # Light smoothing removes textures finer than ~4 px (holes of the film).
    img = ndi.gaussian_filter(img.astype(np.float32), sigma)
    # Binarise against a broad local mean: tile brightness steps, vignetting and seams of
    # montages then no longer dominate the autocorrelation, the mesh does.
    # (A box mean costs the same whatever its size; a wide Gaussian would not.)
    local = ndi.uniform_filter(img, int(max(9, 0.2 * max(h, w))) | 1, mode="nearest")
    x = (img > local).astype(np.float32)
    # High-pass the binary image too: a whole grid disc in view (bright mesh, dark rim)
    # would otherwise give one broad central lobe that hides the mesh peaks.
    x -= ndi.uniform_filter(x, int(max(9, 0.125 * max(h, w))) | 1, mode="nearest")
    if min(h, w) < 16 or not np.any(x):
        return None, 0.0
    f = np.fft.rfft2(x, s=(2 * h, 2 * w))
    acf = np.fft.irfft2(f * np.conj(f), s=(2 * h, 2 * w))
    acf = np.fft.fftshift(acf)
    cy, cx = h, w
    r_max = int(min(h, w) * 0.45)
    win = acf[cy - r_max: cy + r_max + 1, cx - r_max: cx + r_max + 1]
    zero = win[r_max, r_max]
    if zero <= 0:
        return None, 0.0
    win = win / zero
    yy, xx = np.mgrid[-r_max: r_max + 1, -r_max: r_max + 1]
    rr = np.hypot(yy, xx)
    # Central lobe ends where the radial mean first drops below zero (bars vs squares).
    rbin = rr.astype(int)
    prof = np.bincount(rbin.ravel(), win.ravel()) / np.maximum(np.bincount(rbin.ravel()), 1)
    below = np.nonzero(prof[1: r_max] < 0)[0]
    if len(below) == 0:
        return None, 0.0
    r_min = below[0] + 1
    r_min = max(r_min, min_r)
    ann = (rr > r_min) & (rr < r_max)
    if expect is not None:
        # Between a quarter of the coarse vector (it may have been a harmonic, 2v or √2v)
        # and a bit more than it; textures 15× finer than the mesh stay excluded.
        e = float(np.hypot(*expect))
        ann = (rr > max(r_min, 0.25 * e)) & (rr < min(r_max, 1.25 * e))
        if not ann.any():
            return None, 0.0
    masked = np.where(ann, win, -np.inf)
    best = float(masked.max())
    if best < 0.05:
        return None, best
    # The nearest strong peak is the lattice vector (the diagonal one can be as high).
    peaks = np.argwhere((masked == ndi.maximum_filter(masked, size=5)) & (masked >= 0.6 * best))
    near = peaks[np.argmin(rr[peaks[:, 0], peaks[:, 1]])]
    py, px = int(near[0]), int(near[1])
    strength = float(masked[py, px])
    # A mesh is a square lattice: the perpendicular vector must be a peak too (smoothed
    # noise gives isolated maxima only).
    qy, qx = r_max + (px - r_max), r_max - (py - r_max)
    perp = win[max(qy - 1, 0): qy + 2, max(qx - 1, 0): qx + 2]
    if perp.size == 0 or float(perp.max()) < max(0.5 * strength, 0.05):
        return None, strength
    vec = np.array([py - r_max + _sub(win, py, px)[0], px - r_max + _sub(win, py, px)[1]])
    # Precision: the peaks at 2v, 3v ... locate the same vector k times more finely.
    for k in (2, 3, 4):
        q = vec * k
        if np.hypot(*q) >= r_max - 3:
            break
        qy, qx = int(round(q[0])) + r_max, int(round(q[1])) + r_max
        patch = win[qy - 2: qy + 3, qx - 2: qx + 3]
        oy, ox = np.unravel_index(int(np.argmax(patch)), patch.shape)
        qy, qx = qy - 2 + oy, qx - 2 + ox
        if win[qy, qx] < 0.5 * strength:
            break
        sy, sx = _sub(win, qy, qx)
        vec = np.array([qy - r_max + sy, qx - r_max + sx]) / k
    return vec, strength


def _sub(win: np.ndarray, py: int, px: int) -> tuple[float, float]:
    """Sub-pixel offset of a peak: a parabola through 3 samples on each axis."""
    def refine(a, b, c):
        den = a - 2 * b + c
        return 0.0 if den >= 0 else float(np.clip(0.5 * (a - c) / den, -0.5, 0.5))

    if 0 < py < win.shape[0] - 1 and 0 < px < win.shape[1] - 1:
        return (refine(win[py - 1, px], win[py, px], win[py + 1, px]),
                refine(win[py, px - 1], win[py, px], win[py, px + 1]))
    return 0.0, 0.0


def estimate_lattice(data: np.ndarray, min_pitch: float | None = None) -> Lattice:
    """Pitch and angle of the mesh from the autocorrelation of a coarse copy.

    The coarse copy (largest side :data:`COARSE_SIDE`) averages away textures much finer
    than the mesh (a resolved holey film). If the pitch is only a few coarse pixels (or
    none is found), the search is repeated on a 4× finer copy of the central part, near
    the coarse estimate when there is one. ``min_pitch`` (input px) restricts the search
    to longer periods (used when the segments turned out larger than a first estimate).
    """
    side = max(data.shape)
    factor = max(1, int(np.ceil(side / COARSE_SIDE)))
    coarse = block_mean(data, factor)
    min_r = (min_pitch or 0.0) / factor
    vec, strength = _acf_peak(coarse, min_r=min_r)
    if (vec is None or np.hypot(*vec) < 12) and factor > 1:
        fine = max(1, factor // 4)
        span = COARSE_SIDE * fine
        r0 = max(0, (data.shape[0] - span) // 2)
        c0 = max(0, (data.shape[1] - span) // 2)
        crop = block_mean(data[r0: r0 + span, c0: c0 + span], fine)
        expect = None if vec is None else vec * factor / fine
        vec2, strength2 = _acf_peak(crop, expect=expect)
        if vec2 is not None:
            vec, strength, factor = vec2, strength2, fine
    if vec is None:
        return Lattice(None, None, strength, min_pitch)
    pitch = float(np.hypot(*vec)) * factor
    angle = float(np.degrees(np.arctan2(vec[0], vec[1]))) % 90.0
    return Lattice(pitch, angle, strength, min_pitch)


@dataclass
class Mixture:
    """Two Gaussian classes fitted to a histogram: low (bars) and high (squares)."""

    weights: tuple[float, float]
    means: tuple[float, float]
    sds: tuple[float, float]
    threshold: float  # equal-posterior point between the means


def fit_mixture(values: np.ndarray, bins: int = 256, iterations: int = 60) -> Mixture:
    """EM for a two-class Gaussian mixture on the histogram of ``values``.

    Deterministic: initial means at the 10th and 90th percentiles, equal weights. The
    histogram (clipped to the 0.1–99.9 percentiles) replaces the pixels, so the cost does
    not depend on the image size.
    """
    v = np.asarray(values, dtype=np.float32).ravel()
    if v.size > 500_000:  # percentile/histogram on a regular subsample: same answer, less time
        v = v[:: v.size // 250_000]
    lo, p10, p90, hi = np.percentile(v, [0.1, 10, 90, 99.9])
    if hi <= lo:
        return Mixture((1.0, 0.0), (float(lo), float(lo)), (0.0, 0.0), float(lo))
    counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
    x = 0.5 * (edges[:-1] + edges[1:])
    n = counts.astype(np.float64)
    width = edges[1] - edges[0]
    mu = np.array([p10, p90], float)
    sd = np.full(2, max((hi - lo) / 6.0, width))
    wt = np.array([0.5, 0.5])
    for _ in range(iterations):
        dens = wt / sd * np.exp(-0.5 * ((x[:, None] - mu) / sd) ** 2) + 1e-300
        resp = dens / dens.sum(axis=1, keepdims=True)
        nk = (resp * n[:, None]).sum(axis=0) + 1e-12
        new_mu = (resp * n[:, None] * x[:, None]).sum(axis=0) / nk
        var = (resp * n[:, None] * (x[:, None] - new_mu) ** 2).sum(axis=0) / nk
        sd = np.sqrt(np.maximum(var, width * width / 4))
        wt = nk / nk.sum()
        if np.allclose(new_mu, mu, atol=1e-6 * (hi - lo)):
            mu = new_mu
            break
        mu = new_mu
    order = np.argsort(mu)
    mu, sd, wt = mu[order], sd[order], wt[order]
    # Equal-posterior threshold on the grid between the two means.
    between = (x > mu[0]) & (x < mu[1])
    if between.any():
        xb = x[between]
        d0 = wt[0] / sd[0] * np.exp(-0.5 * ((xb - mu[0]) / sd[0]) ** 2)
        d1 = wt[1] / sd[1] * np.exp(-0.5 * ((xb - mu[1]) / sd[1]) ** 2)
        cross = np.nonzero(d1 >= d0)[0]
        thr = float(xb[cross[0]]) if len(cross) else float(0.5 * (mu[0] + mu[1]))
    else:
        thr = float(0.5 * (mu[0] + mu[1]))
    return Mixture((float(wt[0]), float(wt[1])), (float(mu[0]), float(mu[1])),
                   (float(sd[0]), float(sd[1])), thr)


def _block_percentile(img: np.ndarray, block: int, q: float) -> np.ndarray:
    """``q``-th percentile of each ``block × block`` tile (the ragged remainder joins the last tile)."""
    h, w = img.shape
    block = max(1, min(block, h, w))
    nb_r, nb_c = max(1, h // block), max(1, w // block)
    main = img[: nb_r * block, : nb_c * block]
    tiles = main.reshape(nb_r, block, nb_c, block).transpose(0, 2, 1, 3).reshape(nb_r, nb_c, -1)
    k = int(round(q / 100.0 * (tiles.shape[2] - 1)))
    return np.partition(tiles, k, axis=2)[:, :, k].astype(np.float32)


def _upsample(coarse: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear up-sampling of a per-block map to ``shape`` (block centres aligned)."""
    nr, nc = coarse.shape
    rows = (np.arange(shape[0]) + 0.5) * nr / shape[0] - 0.5
    cols = (np.arange(shape[1]) + 0.5) * nc / shape[1] - 0.5
    rows = np.clip(rows, 0, nr - 1)
    cols = np.clip(cols, 0, nc - 1)
    r0 = np.minimum(np.floor(rows).astype(int), max(nr - 2, 0))
    c0 = np.minimum(np.floor(cols).astype(int), max(nc - 2, 0))
    wr = (rows - r0).astype(np.float32)[:, None]
    wc = (cols - c0).astype(np.float32)[None, :]
    r1 = np.minimum(r0 + 1, nr - 1)
    c1 = np.minimum(c0 + 1, nc - 1)
    a = coarse[r0] * (1 - wr) + coarse[r1] * wr
    return (a[:, c0] * (1 - wc) + a[:, c1] * wc).astype(np.float32)


def local_levels(work: np.ndarray, pitch_work: float) -> tuple[np.ndarray, np.ndarray]:
    """Local bar (dark) and open (bright) levels at the working scale.

    Every pitch-sized block contains some bar (bars form a connected grid), so its 3rd
    percentile is the local opaque level; the 97th percentile over 2.5-pitch blocks is the
    local level of the open windows. Both maps are median-filtered over 3×3 blocks
    (rejects odd blocks) and interpolated back.
    """
    b_block = max(4, int(round(1.25 * pitch_work)))
    o_block = max(8, int(round(2.5 * pitch_work)))
    bars = _block_percentile(work, b_block, 3.0)
    opens = _block_percentile(work, o_block, 97.0)
    if min(bars.shape) >= 3:
        bars = ndi.median_filter(bars, size=3, mode="nearest")
    if min(opens.shape) >= 3:
        opens = ndi.median_filter(opens, size=3, mode="nearest")
    return _upsample(bars, work.shape), _upsample(opens, work.shape)


def lattice_credible(work: np.ndarray, pitch_work: float, strength: float = 1.0) -> tuple[bool, str]:
    """Is a measured period the grid mesh (opaque bars around every cell)?

    Two physical checks at the working scale:

    - at least ~2 periods in view on the shorter side (otherwise the autocorrelation
      cannot have seen the mesh, and any peak is a finer texture: film holes, noise);
    - bars are a connected opaque network, so *every* ``1.25 × pitch`` block holds some bar
      and the blocks' 3rd percentiles sit near the image's darkest block level. A texture
      inside a large window (a resolved holey film when fewer than ~2 meshes are in view)
      is periodic too, but its blocks' dark levels are the film's, far above the bars'.
      A period is rejected when more than 30 % of the blocks have a dark level above
      half-way between the darkest block level and the bright (97th percentile) level;
    - bars are narrower than a pitch (25–45 % of it): with a weak autocorrelation peak
      (``strength`` < 0.35; real meshes give 0.4–0.8, film textures seen through one or
      two windows 0.1–0.3) a period is rejected when more than 15 % of the image is dark
      over a whole pitch-sized square (dark bands wider than the period: the real bars
      around a texture inside the windows, e.g. holes in an opaque gold film).

    Returns ``(credible, reason)``.
    """
    h, w = work.shape
    if min(h, w) < 1.9 * pitch_work:
        return False, f"fewer than 2 periods ({pitch_work:.0f} px) in view"
    block = max(4, int(round(1.25 * pitch_work)))
    if min(h, w) < 2 * block:
        return True, ""
    dark = _block_percentile(work, block, 3.0)
    lo = float(np.percentile(dark, 5.0))
    hi = float(np.percentile(work[::2, ::2], 97.0))
    if not hi > lo:
        return True, ""
    frac = float(np.mean(dark > lo + 0.5 * (hi - lo)))
    if frac > 0.3:
        return False, f"{100 * frac:.0f} % of period-sized blocks hold no dark bar"
    if strength < 0.35:
        dark_mask = ndi.gaussian_filter(work, 1.0) < lo + 0.5 * (hi - lo)
        k = max(2, int(round(pitch_work)))
        wide = float(np.mean(ndi.binary_erosion(dark_mask, np.ones((k, k), bool))))
        if wide > 0.15:
            return False, f"weak period with dark bands wider than it over {100 * wide:.0f} % of the image"
    return True, ""


def _join_texture(cand: np.ndarray, labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Without a pitch: merge the resolved holes of a film back into their windows.

    Many small segments (holes of a holey film) separated by narrow film, inside dark
    bands much wider than them (the bars around one or two windows seen in a tile), are
    one window each: a closing over ~1.5 segment sizes bridges the film but not the bars.
    A hole image (no wide dark bands) is left alone.
    """
    area = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    d = float(np.sqrt(np.median(area)))
    k = max(3, int(round(1.5 * d)))
    if 6 * k > min(cand.shape):
        return cand, labels, n
    wide = ndi.minimum_filter((~cand).view(np.uint8), 3 * k).view(bool)
    if float(wide.mean()) < 0.1:
        return cand, labels, n
    closed = ndi.minimum_filter(ndi.maximum_filter(cand.view(np.uint8), k), k).view(bool)
    joined, m = ndi.label(closed, structure=np.ones((3, 3), int))
    return cand, np.where(cand, joined, 0), m


@dataclass
class Segmentation:
    """Labelled square segments at the working scale."""

    labels: np.ndarray  # int32, 0 = background
    n: int
    bar: np.ndarray  # local bar level (working scale)
    level: np.ndarray  # per label (index k-1): the segment's mean level used for its edge
    mixture: Mixture
    smooth: np.ndarray  # the lightly smoothed working image that was thresholded
    min_area: float  # smallest segment kept (working px)
    joined: bool = False  # resolved film holes were joined into their windows (no pitch)


def segment(work: np.ndarray, pitch_work: float | None, texture_work: float | None = None) -> Segmentation:
    """Bars-vs-not-bars segmentation with per-segment half-level edges.

    ``texture_work`` (working px): a periodic texture that is not the mesh (resolved holey
    film seen through one or two windows); without a pitch it is blurred away (σ = half
    its period, ≤ 12 px) so that a window stays one segment instead of one per hole.
    """
    # Smoothing suppresses noise and film texture (resolved holes); a symmetric blur does
    # not move the half-level crossing of a straight edge.
    sigma = 1.2 if pitch_work is not None else 0.7
    if pitch_work is None and texture_work:
        sigma = float(np.clip(0.5 * texture_work, sigma, 12.0))
    smooth = ndi.gaussian_filter(work, sigma)
    mix = fit_mixture(smooth)
    if pitch_work is None:
        # No periodicity: global levels from the mixture (Ptolemy's situation) — but only
        # when the two classes really separate: the gap is ≥ 4 σ of the bar class and ≥ 0.75 σ
        # of the open class (squares of very different ice make that class broad, opaque
        # bars keep the dark one narrow). A unimodal histogram (noise, an image without
        # bars) splits into two overlapping halves (gap ≈ 2.7 σ of each) and has no squares.
        gap = mix.means[1] - mix.means[0]
        if not (gap >= 4.0 * mix.sds[0] and gap >= 0.75 * mix.sds[1]):
            empty = np.zeros(work.shape, np.int32)
            return Segmentation(empty, 0, np.zeros_like(work), np.zeros(0, np.float32), mix, smooth, 30.0)
        bar = np.full(work.shape, mix.means[0], np.float32)
        opn = np.full(work.shape, mix.means[1] + 2 * mix.sds[1], np.float32)
        min_area = 30.0
    else:
        bar, opn = local_levels(smooth, pitch_work)
        min_area = 0.08 * (0.55 * pitch_work) ** 2
    contrast = opn - bar
    # Where no window is near (solid rim, clip ring, out-of-grid) the local contrast is
    # only noise: a floor tied to the atlas's brightest neighbourhoods keeps that noise
    # from being normalised up to square level.
    floor = 0.15 * float(np.percentile(contrast[::4, ::4], 99.0))
    floor = max(floor, 1e-6 * max(abs(float(mix.means[1])), 1.0))
    norm = (smooth - bar) / np.maximum(contrast, np.float32(floor))
    # Detection threshold in units of the local contrast: 6 σ above the bar noise, at
    # least 0.05 (glow), at most 0.35 (dark thick squares must stay above it).
    # Bars cover ≥ 44 % of a mesh (bar fraction ≥ 25 %), so the 5th–20th percentiles of
    # the normalised image lie on bars: their spread gives the bar noise (a Gaussian's
    # P20 − P5 = 0.80 σ) without being inflated by dark squares.
    sample = norm[::3, ::3] if norm.size > 300_000 else norm
    p5, p20 = np.percentile(sample, [5, 20])
    sigma = max(float(p20 - p5) / 0.80, 1e-6)
    t_det = float(np.clip(p20 + 0.84 * sigma + 6.0 * sigma, 0.05, 0.35))
    cand = norm > t_det
    # Thin bright lines (montage gap fill, cracks on bars) must not bridge squares.
    # (min/max filters on uint8 are separable and much faster than binary_opening.)
    cand = ndi.maximum_filter(ndi.minimum_filter(cand.view(np.uint8), 3), 3).view(bool)
    labels, n = ndi.label(cand, structure=np.ones((3, 3), int))
    joined = False
    if pitch_work is None and n > 20:
        n_before = n
        cand, labels, n = _join_texture(cand, labels, n)
        joined = n < n_before
    if n == 0:
        return Segmentation(labels.astype(np.int32), 0, bar, np.zeros(0, np.float32), mix, smooth, min_area)
    flat = labels.ravel()
    area = np.bincount(flat, minlength=n + 1)[1:].astype(np.float64)
    mean = np.bincount(flat, smooth.ravel(), minlength=n + 1)[1:] / np.maximum(area, 1)
    # The segment's own level from its interior: edge pixels (blur, glow) would lower it.
    core = np.where(ndi.minimum_filter(cand.view(np.uint8), 5).view(bool), labels, 0).ravel()
    core_n = np.bincount(core, minlength=n + 1)[1:]
    core_mean = np.bincount(core, smooth.ravel(), minlength=n + 1)[1:] / np.maximum(core_n, 1)
    mean = np.where(core_n >= 4, core_mean, mean)
    bar_at = np.bincount(flat, bar.ravel(), minlength=n + 1)[1:] / np.maximum(area, 1)
    keep = area >= min_area
    # Half-way between the bar level and the segment's own level: the true window edge.
    half = np.where(keep, bar_at + 0.5 * (mean - bar_at), np.inf).astype(np.float32)
    lut = np.concatenate([[np.inf], half]).astype(np.float32)
    refined = smooth > lut[labels]
    labels = np.where(refined, labels, 0)
    # Relabel compactly (drop emptied labels), keeping one label per original segment.
    present = np.bincount(labels.ravel(), minlength=n + 1) > 0
    present[0] = False
    remap = np.zeros(n + 1, np.int32)
    remap[present] = np.arange(1, int(present.sum()) + 1)
    labels = remap[labels]
    level = mean[present[1:]].astype(np.float32)
    return Segmentation(labels, int(present.sum()), bar, level, mix, smooth, min_area, joined)
