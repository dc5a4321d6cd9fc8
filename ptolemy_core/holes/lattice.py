"""The hole lattice from the image itself: periodicity, refinement, robust fit.

Three steps, each cheap and independent of the contrast sign:

1. :func:`estimate_basis` — autocorrelation of a binned, clipped, high-passed
   image with a *whitened* power spectrum (every frequency normalised by the
   radial mean power), so lattice peaks are sharp whatever the hole contrast.
   Candidate peaks are combined into pairs; the accepted basis is the densest
   lattice whose predicted points are all peaks (a sub-lattice explains fewer
   peaks; a super-lattice predicts points that are not peaks). Tried from a
   coarse scale down to full resolution, so the scale need not be known.
   The basis is then fitted to the sub-pixel positions of all predicted ACF
   peaks (long lattice vectors pin it down far better than the shortest ones).
2. :func:`fit_lattice` — robust (iteratively trimmed) least squares of origin
   and basis to per-hole centres.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi


@dataclass
class Lattice:
    """A 2-D lattice in pixels of the full-resolution input.

    Attributes
    ----------
    kind : {"square", "hex", "oblique"}
        From the reduced basis: equal lengths (±4 %) at 90° (±3°) = square,
        at 60°/120° = hex, anything else (stage tilt) = oblique.
    basis : ndarray (2, 2)
        Rows are the two shortest independent lattice vectors ``(row, col)``.
    origin : ndarray (2,)
        A lattice node ``(row, col)`` (the one nearest the image centre).
    """

    kind: str
    basis: np.ndarray
    origin: np.ndarray

    @property
    def pitch_px(self) -> float:
        """Length of the shortest lattice vector."""
        return float(np.linalg.norm(self.basis, axis=1).min())

    def to_json(self) -> dict:
        """``{"kind", "basis": [[x, y], [x, y]], "origin": [x, y]}`` (edge convention)."""
        return {
            "kind": self.kind,
            "basis": [[float(v[1]), float(v[0])] for v in self.basis],
            "origin": [float(self.origin[1]), float(self.origin[0])],
        }


def reduce_basis(a, b) -> tuple[np.ndarray, np.ndarray]:
    """Lagrange–Gauss reduction to the two shortest independent vectors (``|a| ≤ |b|``)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a @ a > b @ b:
        a, b = b, a
    for _ in range(64):
        mu = round(float(a @ b) / float(a @ a))
        if mu == 0:
            break
        b = b - mu * a
        if b @ b < a @ a:
            a, b = b, a
    # canonical signs: a points to +col (or +row), b makes a positive angle
    if a[1] < 0 or (a[1] == 0 and a[0] < 0):
        a = -a
    if a[0] * b[1] - a[1] * b[0] < 0:
        b = -b
    return a, b


def classify(basis: np.ndarray) -> str:
    """Lattice kind of a reduced basis (rows = vectors)."""
    a, b = basis
    la, lb = np.linalg.norm(a), np.linalg.norm(b)
    ang = math.degrees(math.acos(np.clip(abs(a @ b) / (la * lb), 0, 1)))
    if abs(la - lb) <= 0.04 * max(la, lb):
        if ang > 87.0:
            return "square"
        if abs(ang - 60.0) < 3.0:
            return "hex"
    return "oblique"


def bin_image(a: np.ndarray, f: int) -> np.ndarray:
    """Block mean over ``f × f`` pixels (edge remainder dropped), float32."""
    if f <= 1:
        return np.asarray(a, dtype=np.float32)
    h, w = (a.shape[0] // f) * f, (a.shape[1] // f) * f
    out = np.empty((h // f, w // f), np.float32)
    step = max(1, 2048 // f)  # bounded temporaries
    # f² strided adds: several times faster than a mean over the small reshaped axes
    for r in range(0, h // f, step):
        r1 = min(h // f, r + step)
        blk = a[r * f:r1 * f, :w]
        rows = blk[0::f].astype(np.float32, copy=True)
        for i in range(1, f):
            rows += blk[i::f]
        acc = rows[:, 0::f].copy()
        for j in range(1, f):
            acc += rows[:, j::f]
        out[r:r1] = acc * np.float32(1.0 / (f * f))
    return out


def _tukey(n: int) -> np.ndarray:
    w = np.ones(n, np.float32)
    m = max(1, n // 10)
    ramp = 0.5 * (1 - np.cos(np.pi * np.arange(m) / m))
    w[:m] = ramp
    w[n - m:] = ramp[::-1]
    return w


CLIP_SIGMA = 1.0
#: Longest reduced basis vector relative to the shortest.
MAX_ASPECT = 2.5
#: Weakest fold contrast-to-noise accepted as a lattice.
MIN_FOLD_SNR = 4.0
#: Weakest agreement of the two interleaved halves' folded cells (:func:`fold_consistency`);
#: simulated lattices (tuning split) ≥ 0.67 even at the lowest contrast, lacey-like films ≤ 0.51.
MIN_CONSISTENCY = 0.6
#: Consistency needed by a candidate that folds less well than an incoherent one (lacey films
#: offer many weak candidates, some of them coherent by chance).
FALLBACK_CONSISTENCY = 0.75
#: A denser candidate containing the best-folding basis replaces it when it folds at least this
#: well relative to it (dev: true lattice 0.74 of an index-7 hexagonal sub-lattice; too-dense
#: lattices ≤ 0.62).
CONTAIN_FOLD = 0.7
#: A denser lattice replaces the best-folding one when its extra translations map the folded cell onto
#: itself with at least this correlation (:func:`denser_candidates`).
PERIODIC_CORR = 0.5
#: ... or when it folds at least this well relative to it (tuning split: a true denser lattice
#: ≥ 0.84 of the sparse one's fold SNR, a wrong one ≤ 0.62, 0.8 for faint hexagonal big holes).
DENSER_FOLD = 0.85
#: Shortest lattice period considered (px at the analysed scale); finer spectral content is dropped.
MIN_PERIOD = 4.0
SPECTRAL_THRESHOLD = 6.0
#: Fold SNR of the gradient-energy image relative to the intensity image's at equal evidence
#: (its smoothed, skewed pixels make the fold noise estimate low: random bases fold ~1.3× higher).
ENERGY_NULL = 1.3
#: The gradient-energy channel is analysed when the intensity's best coherent fold is weaker
#: than this (contrast low enough for the holes' brightness spread to matter).
ENERGY_GATE = 30.0
#: Shortest period (px at the analysed scale) taken from the gradient-energy channel.
MIN_ENERGY_PERIOD = 8.0
#: Cell self-correlation needed to accept a denser lattice from the gradient-energy channel
#: (tuning/dev: true denser lattices of faint holes ≥ 0.88; half-period ring overlap ≤ 0.35).
PERIODIC_CORR_ENERGY = 0.7
#: Period (px at the scale the lattice was found) above which the final ACF refinement reuses that
#: scale's crop instead of analysing a new crop at ~16 px per period (tuning/dev/faint gate: same
#: lattices and F1 within 0.002; saves a 512² flatten + ACF on most 1024 × 1440 images).
REFINE_SAMPLED_PITCH = 12.0
#: The weak-lattice trial folds (sub-lattices of spectral peak pairs) are skipped when the best
#: candidate already folds at least this well with at least this consistency (gate: unchanged lattices).
TRIAL_SKIP_SNR = 10.0
TRIAL_SKIP_CONSISTENCY = 0.9
#: The gradient-energy channel is not analysed when the intensity's best candidate already folds at
#: least this well and its image halves agree this closely (a sub-lattice picked by the holes'
#: random brightness folds inconsistently: 30210's index-4 one at 0.72). Dev gate: at 0.95 a small-hole
#: image (32007, consistency 0.97) lost its energy-refined basis and 0.25 % of F1; 0.98 changed nothing.
ENERGY_SKIP_SNR = 20.0
ENERGY_SKIP_CONSISTENCY = 0.98


def _kernel_weights(sigma: float) -> np.ndarray:
    """The float64 taps of ``ndi.gaussian_filter1d(…, sigma)`` (truncate 4): its response to an impulse."""
    r = int(4.0 * float(sigma) + 0.5)
    return ndi.gaussian_filter1d(np.eye(1, 2 * r + 1, r).ravel(), sigma, mode="constant")


def gaussian_filter2(a: np.ndarray, sigma: float) -> np.ndarray:
    """``ndi.gaussian_filter(a, sigma)`` (reflect mode), bit for bit, with a faster pass along axis 0.

    scipy filters a C-ordered image column by column along axis 0 (several times slower
    than along rows). Here that pass runs on blocks of whole rows with the same float64
    arithmetic as scipy's symmetric-kernel loop (centre tap, then the pairs from the outermost
    in, rounded to float32 once); the row pass is scipy's own.
    """
    r = int(4.0 * float(sigma) + 0.5)
    n = a.shape[0] if a.ndim == 2 else 0
    if a.dtype != np.float32 or n < 4 * r + 8 or a.size < 65_536:
        return ndi.gaussian_filter(a, sigma)
    w = _kernel_weights(sigma)
    out = np.empty(a.shape, np.float32)
    step = max(8, 65_536 // a.shape[1])  # float64 blocks that stay in cache
    for i0 in range(0, n, step):
        i1 = min(n, i0 + step)
        lo, hi = i0 - r, i1 + r
        if lo >= 0 and hi <= n:
            blk = a[lo:hi].astype(np.float64)
        else:  # scipy's "reflect" = numpy's "symmetric" (d c b a | a b c d)
            idx = np.arange(lo, hi)
            idx = np.where(idx < 0, -idx - 1, idx)
            idx = np.where(idx >= n, 2 * n - idx - 1, idx)
            blk = a[idx].astype(np.float64)
        m = i1 - i0
        acc = blk[r:r + m] * w[r]
        tmp = np.empty_like(acc)
        for j in range(r, 0, -1):
            np.add(blk[r - j:r - j + m], blk[r + j:r + j + m], out=tmp)
            tmp *= w[r - j]
            acc += tmp
        out[i0:i1] = acc
    return ndi.gaussian_filter1d(out, sigma, axis=1, output=out)


def flatten(a: np.ndarray, sigma: float, clip: float | None = None) -> np.ndarray:
    """Clip outliers, replace opaque (bar) pixels by the median, subtract a smooth background.

    Insensitive to the contrast sign; keeps bars and contamination from
    dominating the spectrum.
    """
    step = (max(1, a.shape[0] // 256), max(1, a.shape[1] // 256))
    med = float(np.median(a[::step[0], ::step[1]]))
    if med > 0:
        dark = a < 0.3 * med
        if dark.any():  # (no copy when nothing is opaque)
            a = np.where(dark, np.float32(med), a)
        del dark
    a = gaussian_filter2(a, 0.7)  # a new array: modified in place below
    sub = a[::step[0], ::step[1]]
    med = float(np.median(sub))
    # tight clip: sparse outliers (empty/thick holes, contamination) would dominate the
    # spectrum; the lattice survives clipping (it even becomes a cleaner binary pattern).
    # Integer counts at low dose have many ties: fall back from the MAD to the IQR and std.
    q25, q75 = np.percentile(sub, [25, 75])
    sig = max(1.4826 * float(np.median(np.abs(sub - med))), (q75 - q25) / 1.349,
              0.25 * float(sub.std()), 1e-9)
    k = CLIP_SIGMA if clip is None else clip
    lo, hi = med - k * sig, med + k * sig
    # in place unless the bounds promote (numpy float64 when the IQR sets sig: a float64 result)
    out = np.clip(a, lo, hi, out=a) if np.result_type(a, lo, hi) == a.dtype else np.clip(a, lo, hi)
    _subtract_background(out, sigma)
    sd = float(out.std())
    if sd > 0:
        np.divide(out, sd, out=out)
    return out.astype(np.float32, copy=False)


def _subtract_background(a: np.ndarray, sigma: float) -> None:
    """``a -= smooth_background(a, sigma)`` in place, without building the full-size background."""
    f = max(1, int(sigma / 4))
    if f == 1:
        a -= ndi.gaussian_filter(a, sigma, mode="nearest")
        return
    small = ndi.gaussian_filter(bin_image(a, f), sigma / f, mode="nearest").astype(np.float32)
    h, w = small.shape[0] * f, small.shape[1] * f
    # the nearest-upsampled blocks, then the edge rows/columns beyond them (np.pad "edge")
    # rows of blocks: each of the f rows of block row i loses the same upsampled row
    blocks = np.lib.stride_tricks.as_strided(
        a, shape=(small.shape[0], f, w), strides=(f * a.strides[0], a.strides[0], a.strides[1]))
    blocks -= np.repeat(small, f, axis=1)[:, None, :]
    if w < a.shape[1]:
        a[:h, w:] -= np.repeat(small[:, -1:], f, axis=0)
    if h < a.shape[0]:
        a[h:, :w] -= np.repeat(small[-1:, :], f, axis=1)
        if w < a.shape[1]:
            a[h:, w:] -= small[-1, -1]


def smooth_background(a: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with a large ``sigma``, computed on a binned copy (cost independent of sigma)."""
    f = max(1, int(sigma / 4))
    if f == 1:
        return ndi.gaussian_filter(a, sigma, mode="nearest")
    small = ndi.gaussian_filter(bin_image(a, f), sigma / f, mode="nearest")
    # nearest upsampling: the steps (gradient × f) are far below the noise for sigma ≫ f
    out = np.repeat(np.repeat(small, f, axis=0), f, axis=1)
    out = np.pad(out, [(0, max(0, a.shape[0] - out.shape[0])), (0, max(0, a.shape[1] - out.shape[1]))],
                 mode="edge")[: a.shape[0], : a.shape[1]]
    return out.astype(np.float32)


_POWER_CACHE: list = [None]


def _padded_power(a: np.ndarray) -> np.ndarray:
    """Power spectrum of the Tukey-windowed array zero-padded to twice its size (rfft layout).

    The ACF and both spectral routes need it for the same crop: the last result is
    kept (with a reference to its input, so the identity check is safe).
    """
    entry = _POWER_CACHE[0]  # one read: another thread may replace the slot meanwhile
    if entry is not None and entry[0] is a:
        return entry[1]
    h, w = a.shape
    x = a * _tukey(h)[:, None] * _tukey(w)[None, :]
    spec = np.fft.rfft2(x, s=(2 * h, 2 * w))
    power = spec.real ** 2 + spec.imag ** 2
    _POWER_CACHE[0] = (a, power)
    return power


_RATIO_CACHE: list = [None]


def _ring_ratio(a: np.ndarray) -> np.ndarray:
    """The padded power over its ring's robust level (float32, rfft layout), shared and read only.

    Both spectral routes start from it for the same crop; the last result is kept like
    :func:`_padded_power`'s. Callers copy before changing it.
    """
    cached_power = _padded_power(a)
    entry = _RATIO_CACHE[0]  # one read: another thread may replace the slot meanwhile
    if entry is not None and entry[0] is cached_power:
        return entry[1]
    power = cached_power.astype(np.float32, copy=False)
    g = _freq_grid(*a.shape)
    # robust ring level: exp(mean log power) · e^γ is the mean of exponential noise, barely moved by peaks
    level = np.exp(np.bincount(g["ri_flat"], np.log(power.ravel() + 1e-30)) / g["cnt"] + 0.5772)
    level = np.exp(ndi.uniform_filter1d(np.log(level), 5))
    ratio = power / level.astype(np.float32)[g["ri"]]
    ratio.flags.writeable = False
    _RATIO_CACHE[0] = (cached_power, ratio)
    return ratio


_GRIDS: dict = {}


def _freq_grid(h: int, w: int) -> dict:
    """Radial frequency grids of the ``2h × 2w`` padded rfft layout, built once per crop shape.

    ``kr`` |k| (cycles/px, float32), ``ri`` its ring index, ``cnt`` bins per ring (≥ 1),
    ``acf_zero`` the bins :func:`whitened_acf` zeroes, ``acf_den_unshifted`` its window-overlap
    divisor (in the unshifted ACF layout).
    """
    key = (h, w)
    grid = _GRIDS.get(key)
    if grid is not None:
        return grid
    ky = np.fft.fftfreq(2 * h).astype(np.float32)[:, None]
    kx = np.fft.rfftfreq(2 * w).astype(np.float32)[None, :]
    kr = np.sqrt(ky * ky + kx * kx)
    ri = np.rint(kr * 2 * max(h, w)).astype(np.int32)
    ri_flat = ri.ravel()
    # window overlap: separable autocorrelations of the two 1-D windows
    win_r, win_c = _tukey(h), _tukey(w)
    ov_r = np.correlate(win_r, win_r, mode="full")
    ov_c = np.correlate(win_c, win_c, mode="full")
    ov = np.zeros((2 * h, 2 * w), np.float32)
    ov[1:, 1:] = np.outer(ov_r, ov_c)
    ov /= ov.max()
    grid = dict(kr=kr, ri=ri, ri_flat=ri_flat, cnt=np.maximum(np.bincount(ri_flat), 1),
                acf_zero=(ri < 3) | (kr > 1.0 / MIN_PERIOD),
                acf_den_unshifted=np.fft.ifftshift(np.maximum(ov, 0.05)))
    if len(_GRIDS) >= 4:  # a few crop shapes per image; bounded memory across images
        _GRIDS.clear()
    _GRIDS[key] = grid
    return grid


def whitened_acf(a: np.ndarray) -> np.ndarray:
    """Autocorrelation with a whitened spectrum, centred (``acf[H, W]`` = zero shift), window-corrected."""
    h, w = a.shape
    power = _padded_power(a)
    g = _freq_grid(h, w)
    ri = g["ri"]
    prof = np.bincount(g["ri_flat"], power.ravel()) / g["cnt"]
    prof = ndi.uniform_filter1d(prof, 3)
    # half whitening: sharper peaks than the plain ACF without amplifying the noise floor
    # (the square root per ring, then gathered: the same numbers as per bin)
    pw = power / np.sqrt(prof + 1e-20)[ri]
    pw[g["acf_zero"]] = 0
    acf = np.fft.irfft2(pw, s=(2 * h, 2 * w))
    # window correction before the shift (on the unshifted divisor: the same divisions)
    np.divide(acf, g["acf_den_unshifted"], out=acf)
    return np.fft.fftshift(acf.astype(np.float32))


def basis_from_spectrum(a: np.ndarray, threshold: float = 12.0):
    """Lattice basis from the strongest Fourier peaks (coherent over all holes: best at low contrast).

    The reciprocal basis is the pair of strong peaks that generates every other
    strong peak with integer coefficients and has the finest reciprocal cell.
    Returns ``(basis rows (row, col) px, strength)`` or None.
    """
    h, w = a.shape
    ph, pwid = 2 * h, 2 * w
    g = _freq_grid(h, w)
    ri = g["ri"]
    ratio = _ring_ratio(a).copy()
    ratio[ri < 4] = 0
    # periods under MIN_PERIOD px cannot be a hole lattice (rejected later anyway), but pixel-level
    # artefacts there (gain patterns, read-out stripes) would crowd the strongest peaks at low contrast
    ratio[g["kr"] > 1.0 / MIN_PERIOD] = 0
    full = np.fft.fftshift(ratio, axes=0)  # rows centred, cols 0..W
    mx = ndi.maximum_filter(full, 5, mode="constant")
    pk = np.argwhere((full == mx) & (full > threshold))
    if len(pk) < 2:
        return None
    vals = full[pk[:, 0], pk[:, 1]]
    # the first-order reflections are the lowest-frequency strong peaks (high orders, sharpened
    # by rims and clipping, can outshine them): keep the 10 lowest frequencies among the 30 strongest
    order = np.argsort(-vals)[:30]
    pk, vals = pk[order], vals[order]
    radius = np.hypot((pk[:, 0] - ph // 2) / ph, pk[:, 1] / pwid)
    order = np.argsort(radius)[:10]
    pk, vals = pk[order], vals[order]
    ks = []
    for r, c in pk:
        sr, sc = _subpixel(np.pad(full, 1, mode="edge"), r + 1, c + 1)
        ks.append(((sr - 1 - ph // 2) / ph, (sc - 1) / pwid))
    ks = np.array(ks)
    best = None
    for i in range(len(ks)):
        for j in range(i + 1, len(ks)):
            kb = np.vstack([ks[i], ks[j]])
            det = kb[0, 0] * kb[1, 1] - kb[0, 1] * kb[1, 0]
            if abs(det) < 0.2 * np.linalg.norm(kb[0]) * np.linalg.norm(kb[1]):
                continue
            coef = np.linalg.solve(kb.T, ks.T).T
            # support: the weight of the top peaks this pair explains as small integer combinations
            ok = (np.abs(coef - np.rint(coef)).max(axis=1) < 0.1) & (np.abs(coef).max(axis=1) < 4.5)
            support = float(vals[ok].sum())
            # most support wins; among equals, the coarsest reciprocal cell (the lattice the peaks generate)
            if best is None or support > best[1] * 1.02 or (support >= best[1] * 0.98 and abs(det) > best[0]):
                best = (abs(det), support, kb)
    if best is None:
        return None
    basis = np.linalg.inv(best[2]).T  # rows = real-space vectors: k_i · a_j = δ_ij
    a_, b_ = reduce_basis(basis[0], basis[1])
    return np.vstack([a_, b_]), float(np.median(vals[:4]))


def smoothed_spectrum(a: np.ndarray, max_period: float | None = None) -> np.ndarray:
    """Whitened power spectrum, 3 × 3-summed, rows centred (``[ph // 2, 0]`` = zero frequency).

    Padded to twice the size; every bin is divided by its ring's robust mean level
    (so noise ≈ 1), the two axis lines by their own running level (row/column stripes
    from read-out or gain patterns), and periods outside ``MIN_PERIOD .. max_period``
    are zeroed. At ≤ 3 % hole contrast a single bin of a lattice reflection is barely
    above the noise maximum over ~10⁵ bins; the reflection spreads over a few bins of
    the padded spectrum, and the 3 × 3 mean lifts it clear.
    """
    h, w = a.shape
    kr = _freq_grid(h, w)["kr"]
    ratio = _ring_ratio(a).copy()
    for line in (ratio[:, :2], ratio[:2, :].T, ratio[-1:, :].T):
        lv = ndi.median_filter(line, size=(15, 1), mode="nearest")
        line /= np.maximum(lv, 1e-6) * 1.4427  # median of Exp(1) = ln 2
    lo = 1.0 / (max_period if max_period else max(h, w) / 4.0)
    ratio[(kr > 1.0 / MIN_PERIOD) | (kr < lo)] = 0
    full = np.fft.fftshift(ratio, axes=0)
    return ndi.uniform_filter(full, 3, mode="constant")


def spectral_candidates(sm: np.ndarray, n_peaks: int = 24, n_best: int = 10) -> list[np.ndarray]:
    """Candidate bases from pairs of the strongest peaks of :func:`smoothed_spectrum` (low contrast).

    Every non-degenerate pair of the ``n_peaks`` strongest peaks is a candidate
    reciprocal basis; pairs are ranked by their *harmonic support* — the summed excess of
    ``sm`` over all reflections they predict up to order 3 — which adds up the whole
    lattice's power (a single weak reflection is barely above the noise, the set of
    them is not). The ``n_best`` best pairs are returned as reduced real-space bases;
    the caller validates them by folding (:func:`fold_snr`).
    """
    ph, pwid = sm.shape[0], 2 * (sm.shape[1] - 1)
    mx = ndi.maximum_filter(sm, 5, mode="constant")
    pk = np.argwhere((sm == mx) & (sm > 1.5))
    if len(pk) < 2:
        return []
    vals = sm[pk[:, 0], pk[:, 1]]
    pk = pk[np.argsort(-vals)[:n_peaks]]
    ks = np.column_stack([(pk[:, 0] - ph // 2) / ph, pk[:, 1] / pwid])
    ii, jj = np.triu_indices(len(ks), 1)
    k1, k2 = ks[ii], ks[jj]
    det = k1[:, 0] * k2[:, 1] - k1[:, 1] * k2[:, 0]
    ok = np.abs(det) >= 0.25 * np.linalg.norm(k1, axis=1) * np.linalg.norm(k2, axis=1)
    k1, k2, det = k1[ok], k2[ok], det[ok]
    if len(k1) == 0:
        return []
    mn = np.array([(m, n) for m in range(0, 4) for n in range(-3, 4) if m > 0 or n > 0], float)
    pts = mn[None, :, 0:1] * k1[:, None, :] + mn[None, :, 1:2] * k2[:, None, :]  # (P, M, 2)
    pts = np.where(pts[..., 1:2] < 0, -pts, pts)
    r = np.rint(pts[..., 0] * ph).astype(int) + ph // 2
    c = np.rint(pts[..., 1] * pwid).astype(int)
    inside = (r >= 0) & (r < ph) & (c >= 0) & (c < sm.shape[1])
    val = np.where(inside, sm[np.clip(r, 0, ph - 1), np.clip(c, 0, sm.shape[1] - 1)], 0.0)
    inband = inside & (val > 0)  # out-of-band bins are zero
    count = inband.sum(axis=1)
    # summed excess over the noise level (≈ 1): many weak true reflections add up, a pair of
    # strong noise peaks predicts mostly noise (a sparser sub-lattice ties; folding settles it)
    support = np.where(count >= 4, ((val - 1.0) * inband).sum(axis=1), 0.0)
    out, seen = [], set()
    for p in np.argsort(-support):
        if support[p] <= 1.0 or len(out) >= n_best:
            break
        basis = np.linalg.inv(np.vstack([k1[p], k2[p]])).T
        a_, b_ = reduce_basis(basis[0], basis[1])
        key = (round(a_[0], 0), round(a_[1], 0), round(b_[0], 0), round(b_[1], 0))
        if key not in seen:
            seen.add(key)
            out.append(np.vstack([a_, b_]))
    return out


def sublattices(basis: np.ndarray, max_index: int) -> list[np.ndarray]:
    """``basis`` and all its sub-lattices of index ≤ ``max_index`` (Hermite normal forms).

    Index ``n`` sub-lattices are spanned by ``(p·a + q·b, r·b)`` with ``p·r = n`` and
    ``0 ≤ q < r``.
    """
    a, b = basis
    out = []
    for n in range(1, max_index + 1):
        for p in range(1, n + 1):
            if n % p:
                continue
            r = n // p
            for q in range(r):
                out.append(np.vstack([p * a + q * b, r * b]))
    return out


def refine_in_spectrum(sm: np.ndarray, basis: np.ndarray, order: int = 4) -> np.ndarray:
    """Basis fitted to the sub-bin positions of all its reflections (up to ``order``) in ``sm``.

    Candidate bases from single peak pairs are a few % off; higher-order reflections
    pin the reciprocal basis down (and a drift of a few % over the image would smear
    the fold used to compare candidates). Returns ``basis`` unchanged when fewer than
    three reflections stand out.
    """
    ph, pwid = sm.shape[0], 2 * (sm.shape[1] - 1)
    if abs(float(np.linalg.det(basis))) < 1e-6 * float((basis * basis).sum()) + 1e-12:
        return basis
    kmat = np.linalg.inv(basis).T  # rows: reciprocal vectors (cycles/px), k_i · a_j = δ_ij
    mn = np.array([(m, n) for m in range(-order, order + 1) for n in range(-order, order + 1)
                   if (m, n) != (0, 0)], float)
    ncol = sm.shape[1]
    for half in (3, 2):
        ks = mn @ kmat
        flip = ks[:, 1] < 0
        ks[flip] *= -1
        sgn = np.where(flip, -1.0, 1.0)
        r = np.rint(ks[:, 0] * ph).astype(np.int64) + ph // 2
        c = np.rint(ks[:, 1] * pwid).astype(np.int64)
        sel = (half + 1 <= r) & (r < ph - half - 1) & (0 <= c) & (c < ncol - half - 1)
        r, c, idx, sg = r[sel], c[sel], mn[sel], sgn[sel]
        if len(r) < 3:
            return basis
        # the brightest bin of each window (columns < 0 left out; first in row-major order as
        # np.argmax over the clipped window)
        off = np.arange(-half, half + 1)
        cc = c[:, None] + off[None, :]
        win = sm[r[:, None, None] + off[None, :, None], np.maximum(cc, 0)[:, None, :]]
        win = np.where((cc >= 0)[:, None, :], win, -np.inf)
        q = np.argmax(win.reshape(len(r), -1), axis=1)
        pr, pc = r - half + q // (2 * half + 1), c - half + q % (2 * half + 1)
        peak = sm[pr, pc]
        ok = (peak >= 2.0) & (pc != 0) & (pr != 0) & (pr != ph - 1)
        if ok.sum() < 3:
            return basis
        sr, sc = _subpixel_many(sm, pr[ok], pc[ok])
        design = idx[ok] * sg[ok][:, None]
        obs = np.column_stack([(sr - ph // 2) / ph, sc / pwid])
        wts = np.sqrt(peak[ok].astype(np.float64) - 1.0)[:, None]
        # rank < 2 exactly when every 2 × 2 minor of the small-integer design vanishes (what
        # matrix_rank's SVD decides for it: its smallest non-zero singular value is ≫ the tolerance)
        if not (np.outer(design[:, 0], design[:, 1]) != np.outer(design[:, 1], design[:, 0])).any():
            return basis
        kmat, *_ = np.linalg.lstsq(design * wts, obs * wts, rcond=None)
    if abs(float(np.linalg.det(kmat))) < 1e-12:
        return basis
    out = np.linalg.inv(kmat).T
    a_, b_ = reduce_basis(out[0], out[1])
    return np.vstack([a_, b_])


def _subpixel_many(a: np.ndarray, r: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_subpixel` at many peaks ``(r, c)`` (integer arrays): the same arithmetic, vectorised."""
    z = a[r, c]

    def par(m, p):
        den = m - 2 * z + p
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.clip(0.5 * (m - p) / den, -0.5, 0.5)
        return np.where(den >= 0, 0.0, q).astype(np.float64)

    return r + par(a[r - 1, c], a[r + 1, c]), c + par(a[r, c - 1], a[r, c + 1])


def _subpixel(acf: np.ndarray, r: int, c: int) -> tuple[float, float]:
    def par(m, z, p):
        den = m - 2 * z + p
        return 0.0 if den >= 0 else float(np.clip(0.5 * (m - p) / den, -0.5, 0.5))

    dr = par(acf[r - 1, c], acf[r, c], acf[r + 1, c])
    dc = par(acf[r, c - 1], acf[r, c], acf[r, c + 1])
    return r + dr, c + dc


def basis_from_acf(acf: np.ndarray, shape: tuple[int, int], min_len: float = 3.0):
    """Choose the lattice basis from the ACF peaks, or None.

    Returns ``(basis (2,2) rows (row,col), strength)``; ``strength`` is the
    median predicted-point height in units of the ACF's robust noise.
    """
    h, w = shape
    ch, cw = acf.shape[0] // 2, acf.shape[1] // 2
    lim_r, lim_c = int(0.42 * h), int(0.42 * w)
    region = acf[ch - lim_r: ch + lim_r + 1, cw - lim_c: cw + lim_c + 1]
    tmp = region.copy()  # one scratch copy for both medians (np.median would copy twice)
    med = float(np.median(tmp, overwrite_input=True))
    np.subtract(region, med, out=tmp)
    noise = 1.4826 * float(np.median(np.abs(tmp, out=tmp), overwrite_input=True)) + 1e-12
    del tmp
    # a 5 × 5 maximum is the 3 × 3 maximum of the 3 × 3 maxima (exactly, reflect mode included)
    mxa = ndi.maximum_filter(region, 3)
    mx = ndi.maximum_filter(mxa, 3)
    pk = np.argwhere((region == mx) & (region > med + 3 * noise))
    if len(pk) < 2:
        return None
    v = pk - [lim_r, lim_c]
    half = (v[:, 0] > 0) | ((v[:, 0] == 0) & (v[:, 1] > 0))
    dist = np.hypot(v[:, 0], v[:, 1])
    keep = half & (dist >= min_len) & (pk[:, 0] > 0) & (pk[:, 1] > 0) \
        & (pk[:, 0] < region.shape[0] - 1) & (pk[:, 1] < region.shape[1] - 1)
    pk, vals = pk[keep], region[pk[keep, 0], pk[keep, 1]]
    if len(pk) < 2:
        return None
    order = np.argsort(-vals)[:40]
    pk, vals = pk[order], vals[order]
    ref = float(np.median(vals[: min(10, len(vals))])) - med
    sr, sc = _subpixel_many(region, pk[:, 0], pk[:, 1])
    vecs = np.column_stack([sr - lim_r, sc - lim_c])
    short = vecs[np.argsort(np.hypot(vecs[:, 0], vecs[:, 1]))[:16]]
    best = None
    seen = set()
    mm = np.array([(m, n) for m in range(-4, 5) for n in range(-4, 5) if (m, n) != (0, 0)], float)
    for i in range(len(short)):
        for j in range(i + 1, len(short)):
            a, b = short[i], short[j]
            cross = abs(a[0] * b[1] - a[1] * b[0])
            if cross < 0.25 * np.linalg.norm(a) * np.linalg.norm(b):
                continue
            a, b = reduce_basis(a, b)
            key = (round(a[0]), round(a[1]), round(b[0]), round(b[1]))
            if key in seen:
                continue
            seen.add(key)
            pts = mm @ np.vstack([a, b])
            ok = (np.abs(pts[:, 0]) < lim_r - 1) & (np.abs(pts[:, 1]) < lim_c - 1)
            if ok.sum() < 6:
                continue
            ir = np.rint(pts[ok, 0]).astype(int) + lim_r
            ic = np.rint(pts[ok, 1]).astype(int) + lim_c
            heights = mxa[ir, ic] - med
            frac = float(np.mean(heights > 0.35 * ref))
            if frac < 0.75:
                continue
            area = abs(a[0] * b[1] - a[1] * b[0])
            score = (area, -float(np.median(heights)))
            if best is None or score < best[0]:
                best = (score, np.vstack([a, b]), float(np.median(heights)) / noise)
    if best is None:
        return None
    basis = _refine_on_acf(region, best[1], (lim_r, lim_c), med + 0.35 * ref)
    return basis, best[2]


#: Lattice orders (m, n) whose ACF peaks :func:`_refine_on_acf` fits (row-major, origin left out).
_ACF_ORDERS = np.array([(m, n) for m in range(-12, 13) for n in range(-12, 13) if (m, n) != (0, 0)],
                       np.int64)


def _refine_on_acf(region: np.ndarray, basis: np.ndarray, centre, level: float) -> np.ndarray:
    """Least-squares basis from the sub-pixel positions of all predicted ACF peaks.

    Long lattice vectors pin the basis down far better than the two shortest ones.
    """
    lim_r, lim_c = centre
    half = max(2, int(0.2 * np.linalg.norm(basis, axis=1).min()))
    mn = _ACF_ORDERS
    p = mn[:, 0:1] * basis[0] + mn[:, 1:2] * basis[1]
    r = np.rint(p[:, 0]).astype(np.int64) + lim_r
    c = np.rint(p[:, 1]).astype(np.int64) + lim_c
    hh, ww = region.shape
    sel = (half + 1 <= r) & (r < hh - half - 1) & (half + 1 <= c) & (c < ww - half - 1)
    mn, r, c = mn[sel], r[sel], c[sel]
    if len(r) < 4:
        return basis
    # the brightest pixel of each window (the first in row-major order, as np.argmax)
    off = np.arange(-half, half + 1)
    win = region[r[:, None, None] + off[None, :, None], c[:, None, None] + off[None, None, :]]
    k = np.argmax(win.reshape(len(r), -1), axis=1)
    pr, pc = r - half + k // (2 * half + 1), c - half + k % (2 * half + 1)
    ok = (region[pr, pc] >= level) & (pr != 0) & (pr != hh - 1) & (pc != 0) & (pc != ww - 1)
    if ok.sum() < 4:
        return basis
    sr, sc = _subpixel_many(region, pr[ok], pc[ok])
    design, targets = mn[ok].astype(float), np.column_stack([sr - lim_r, sc - lim_c])
    fit, *_ = np.linalg.lstsq(design, targets, rcond=None)
    res = np.linalg.norm(targets - design @ fit, axis=1)
    keep = res <= max(3 * np.median(res), 0.7)
    if keep.sum() >= 4:
        fit, *_ = np.linalg.lstsq(design[keep], targets[keep], rcond=None)
    return fit


def fold_cell(flat: np.ndarray, basis: np.ndarray, m: int = 24, max_px: int = 200_000):
    """The image folded onto the lattice cell of ``basis``: ``(cell (m, m) mean, noise)`` or None.

    ``cell`` is a normalised convolution (1-px Gaussian-smoothed sums over smoothed counts);
    ``noise`` the standard error of such a bin mean; None when too many bins are (nearly) empty.
    """
    return _fold_cells(flat, [basis], m, max_px)[0]


_GRID_CACHE: list = [[]]


def _fold_grid(flat: np.ndarray, st: int):
    """Pixel coordinates and float64 values of ``flat[::st, ::st]`` (the last few are kept).

    Every fold of one analysed image at one stride needs the same grids and values: the
    candidates' folds (dozens at low contrast) share them.
    """
    entries = _GRID_CACHE[0]  # one read: another thread may replace the list meanwhile
    for entry in entries:
        if entry[0] is flat and entry[1] == st:
            return entry[2]
    h, w = flat.shape
    rows = np.arange(0, h, st, dtype=np.float32)[:, None]
    cols = np.arange(0, w, st, dtype=np.float32)[None, :]
    vals = flat[::st, ::st].ravel().astype(np.float64)
    grid = (rows, cols, vals, vals * vals)
    # a few entries: the intensity and gradient-energy channels alternate
    _GRID_CACHE[0] = [(flat, st, grid)] + entries[:3]
    return grid


def _cell_index(kmat: np.ndarray, rows: np.ndarray, cols: np.ndarray, m: int):
    """Flat bin index (``iu * m + iv``) of every pixel's fractional lattice coordinates, and floors."""
    u = kmat[0, 0] * rows + kmat[0, 1] * cols
    v = kmat[1, 0] * rows + kmat[1, 1] * cols
    fu, fv = np.floor(u), np.floor(v)
    # in place, the arithmetic of floor((u - floor(u)) * m) % m: the floor lies in 0..m (m for a
    # fraction within rounding of 1), so the modulo only wraps m to 0; bins stay exact in float64
    u -= fu
    u *= m
    np.floor(u, out=u)
    u[u >= m] = 0
    v -= fv
    v *= m
    np.floor(v, out=v)
    v[v >= m] = 0
    u *= m
    u += v
    return u.astype(np.int64).ravel(), fu, fv


def _row_median(x: np.ndarray) -> np.ndarray:
    """``np.median(x, axis=1)`` of a 2-D float array without NaNs (partition + mean of the middle pair)."""
    n = x.shape[1]
    k = n // 2
    if n % 2:
        return np.partition(x, k, axis=1)[:, k]
    p = np.partition(x, [k - 1, k], axis=1)
    return (p[:, k - 1] + p[:, k]) / 2.0


#: Pixels × bases folded per vectorised pass (float64 temporaries of ~2 MB stay in cache).
_FOLD_CHUNK = 250_000


def _fold_cells(flat: np.ndarray, bases, m: int = 24, max_px: int = 200_000):
    """:func:`fold_cell` of one image for several bases at once: ``[(cell, noise) or None]``.

    The bases' bins are offset by ``k·m²`` and counted in one ``bincount`` per chunk
    (each bin still sums its own pixels in image order: the same numbers as one fold at a time).
    """
    h, w = flat.shape
    st = max(1, int(math.ceil(math.sqrt(h * w / max_px))))
    rows, cols, vals, vals2 = _fold_grid(flat, st)
    npx = vals.size
    mm = m * m
    out: list = []
    chunk = max(1, _FOLD_CHUNK // max(npx, 1))
    for k0 in range(0, len(bases), chunk):
        part = bases[k0:k0 + chunk]
        kk = len(part)
        kmats = np.array([np.linalg.inv(np.asarray(b, float).T) for b in part])  # (kk, 2, 2)
        # every basis's bins at once: the same per-pixel arithmetic as _cell_index
        u = kmats[:, 0, 0, None, None] * rows + kmats[:, 0, 1, None, None] * cols
        v = kmats[:, 1, 0, None, None] * rows + kmats[:, 1, 1, None, None] * cols
        u -= np.floor(u)
        u *= m
        np.floor(u, out=u)
        u[u >= m] = 0
        v -= np.floor(v)
        v *= m
        np.floor(v, out=v)
        v[v >= m] = 0
        u *= m
        u += v
        u += (np.arange(kk, dtype=np.float64) * mm)[:, None, None]
        idx = u.astype(np.int64).ravel()
        del u, v
        stack = np.empty((3, kk, m, m), np.float64)
        stack[0] = np.bincount(idx, minlength=kk * mm).reshape(kk, m, m)
        stack[1] = np.bincount(idx, np.tile(vals, kk), minlength=kk * mm).reshape(kk, m, m)
        stack[2] = np.bincount(idx, np.tile(vals2, kk), minlength=kk * mm).reshape(kk, m, m)
        # normalised convolution (smoothed sums / smoothed counts), every cell smoothed on its own
        sm = ndi.gaussian_filter(stack, (0.0, 0.0, 1.0, 1.0), mode="wrap")
        n, s, s2 = sm[0].reshape(kk, mm), sm[1].reshape(kk, mm), sm[2].reshape(kk, mm)
        empty = (n < 3).mean(axis=1) > 0.2
        cell = s / np.maximum(n, 1e-9)
        var = s2 / np.maximum(n, 1e-9) - cell ** 2
        med_var, med_n = _row_median(var), _row_median(n)
        for j in range(kk):
            if empty[j]:
                out.append(None)
                continue
            noise = math.sqrt(max(float(med_var[j]), 1e-12) / max(float(med_n[j]), 1.0)) / 2.0
            out.append((cell[j].reshape(m, m), noise))
    return out


def fold_snr(flat: np.ndarray, basis: np.ndarray, m: int = 24, max_px: int = 200_000) -> float:
    """Contrast-to-noise of the image folded onto the lattice cell of ``basis``.

    The right lattice folds every hole onto one sharp spot; a too-dense lattice
    mixes holes with film (low contrast); a too-sparse one gives the same
    contrast with a larger cell (ties are broken towards the smaller cell).
    """
    return fold_snrs(flat, [basis], m, max_px)[0]


def fold_snrs(flat: np.ndarray, bases, m: int = 24, max_px: int = 200_000) -> list[float]:
    """:func:`fold_snr` of several bases (one batched fold: the low-contrast trials fold dozens)."""
    res = _fold_cells(flat, bases, m, max_px)
    ok = [r for r in res if r is not None]
    if not ok:
        return [0.0] * len(res)
    cells = np.stack([r[0] for r in ok]).reshape(len(ok), -1)
    dev = np.abs(cells - _row_median(cells)[:, None]).max(axis=1)
    it = iter(range(len(ok)))
    return [0.0 if r is None else float(dev[next(it)] / r[1]) for r in res]


def fold_consistency(flat: np.ndarray, basis: np.ndarray, m: int = 24) -> float:
    """Correlation of the folded cells of two interleaved halves of the image (mean of two splits).

    A real lattice puts the same hole in both halves' cells (correlation near 1, lower
    only at very low contrast); a random pattern (lacey carbon, cracks) folded onto a
    spurious large cell gives two unrelated cells (correlation near 0), however high
    its :func:`fold_snr` (whose noise model assumes independent pixels).
    """
    h, w = flat.shape
    kmat = np.linalg.inv(basis.T)
    st = max(1, int(math.ceil(math.sqrt(h * w / 200_000))))
    rows, cols, vals, _ = _fold_grid(flat, st)
    idx, fu, fv = _cell_index(kmat, rows, cols, m)
    # cells go to the halves by a hash of their index, not by parity: on a lattice commensurate
    # with the pixel grid (e.g. a basis of half-integers) each position in the cell is sampled by
    # one parity class only, and the two parity halves would share no bins at all
    fi, fj = fu.astype(np.int64), fv.astype(np.int64)
    # two splits, averaged: cell parity (finely interleaved: slow ice/illumination gradients fall
    # equally in both halves) and a hash of the cell index (cells at random). The normalised
    # convolution fills the bins that a lattice commensurate with the pixel grid leaves empty
    # in one parity class.
    x = (fi * 0x9E3779B1 + fj * 0x85EBCA77) & 0xFFFFFFFF
    x = ((x ^ (x >> 15)) * 0x2C1B3C6D) & 0xFFFFFFFF
    mm = m * m
    # both halves of both splits in one bincount each (bins offset by the half: every bin sums
    # its own pixels in image order, as separate bincounts over the selected pixels would)
    key = np.empty(2 * idx.size, np.int64)
    key[:idx.size] = ((fi + fj) % 2).ravel() * mm
    key[idx.size:] = ((x >> 13) & 1).ravel() * mm + 2 * mm
    key[:idx.size] += idx
    key[idx.size:] += idx
    stack = np.empty((2, 4, m, m), np.float64)
    stack[0] = np.bincount(key, minlength=4 * mm).reshape(4, m, m)
    stack[1] = np.bincount(key, np.concatenate([vals, vals]), minlength=4 * mm).reshape(4, m, m)
    sm = ndi.gaussian_filter(stack, (0.0, 0.0, 1.0, 1.0), mode="wrap")
    if ((sm[0] < 2).reshape(4, mm).mean(axis=1) > 0.2).any():
        return 0.0
    out = []
    for split in (0, 1):
        cells = []
        for p in (0, 1):
            c = sm[1, 2 * split + p] / np.maximum(sm[0, 2 * split + p], 1e-9)
            cells.append(c - c.mean())
        den = math.sqrt(float((cells[0] ** 2).sum()) * float((cells[1] ** 2).sum())) + 1e-20
        out.append(float((cells[0] * cells[1]).sum()) / den)
    return 0.5 * (out[0] + out[1])


def denser_candidates(flat: np.ndarray, basis: np.ndarray, max_index: int = 5, m: int = 24,
                      min_corr: float = 0.15) -> list[tuple[int, np.ndarray, float]]:
    """Denser lattices containing ``basis`` (index ≤ ``max_index``) that the image may repeat on.

    A sparser sub-lattice folds about as well as the true lattice (each of its nodes
    is a hole), so the best-folding basis may be one: every second hole darker (JPEG
    blocks, contamination) makes that likelier. Fold the image onto the cell of
    ``basis``; for each fractional translation ``t = (i, j) / n`` the cell is compared
    with itself shifted by every multiple ``k·t``. If the true lattice contains ``t``
    the cell holds copies of the hole there (correlation → 1); otherwise a shift puts a
    hole on film (correlation ≤ 0).

    Returns ``[(index n, dense basis rows, worst correlation)]`` with worst correlation
    ≥ ``min_corr``, densest first.
    """
    res = fold_cell(flat, basis, m)
    if res is None:
        return []
    cell = res[0] - res[0].mean()
    power = float((cell * cell).sum())
    # the cell's own noise does not repeat under a shift: compare with the signal power only
    den = max(power - m * m * res[1] ** 2, 0.25 * power) + 1e-20

    memo: dict = {}

    def corr(t):
        # the same fractional shift recurs across n and k (k·t mod 1): computed once
        key = (round(float(t[0]) * 60), round(float(t[1]) * 60))
        if key not in memo:
            sh = ndi.shift(cell, (t[0] * m, t[1] * m), order=1, mode="grid-wrap")
            memo[key] = float((cell * sh).sum()) / den
        return memo[key]

    out = []
    area = abs(float(np.linalg.det(basis)))
    for n in range(2, max_index + 1):
        for i in range(n):
            for j in range(n):
                if (i, j) == (0, 0) or math.gcd(math.gcd(i, j), n) != 1:
                    continue  # (i, j)/n of lower order was tried with a smaller n
                t = np.array([i, j], float) / n
                worst = min(corr((k * t) % 1.0) for k in range(1, n))
                if worst < min_corr:
                    continue
                # the lattice generated by basis and t·basis (index n): two shortest independent
                # vectors spanning a cell of area/n among short combinations of the generators
                v = t @ basis
                pts = [k * v + p * basis[0] + q * basis[1]
                       for k in range(n) for p in range(-1, 2) for q in range(-1, 2)]
                pts = sorted((x for x in pts if np.linalg.norm(x) > 1e-6), key=lambda x: float(x @ x))
                for w_ in pts[1:]:
                    if abs(abs(pts[0][0] * w_[1] - pts[0][1] * w_[0]) - area / n) < 0.02 * area / n:
                        a_, b_ = reduce_basis(pts[0], w_)
                        out.append((n, np.vstack([a_, b_]), worst))
                        break
    out.sort(key=lambda c: (-c[0], -c[2]))
    return out


def estimate_basis(img: np.ndarray, max_side: int = 512, diagnostics: dict | None = None):
    """Lattice basis (rows (row,col), full-resolution px) from periodicity, or None.

    Candidates from the ACF and from the Fourier peaks, at coarse to fine scales (and of
    the gradient energy at the coarsest scale when the intensity folds weakly), are
    validated by folding the image onto each candidate cell (:func:`fold_snr`): the
    best-folding candidate whose image halves agree (:func:`fold_consistency`) wins, or a
    denser lattice containing it on which the image still repeats.

    Parameters
    ----------
    img : ndarray
        Full-resolution image (float32).
    max_side : int
        Size of the analysed crop at each scale.
    diagnostics : dict, optional
        Filled with ``candidates`` (``[(fold SNR, channel, basis)]``, best first),
        ``fold_snr``, ``consistency`` (:func:`fold_consistency`), ``channel`` (``"flat"``
        or ``"energy"``) and, when the answer is None, ``reason`` (one line).

    Returns
    -------
    (basis, strength) or None
        ``strength`` is the fold contrast-to-noise ratio.
    """
    try:
        return _estimate_basis(img, max_side, diagnostics)
    finally:
        # the caches hold analysed crops: release them with the call
        _POWER_CACHE[0] = None
        _RATIO_CACHE[0] = None
        _GRID_CACHE[0] = []


def _estimate_basis(img: np.ndarray, max_side: int, diagnostics: dict | None):
    h, w = img.shape
    f = max(1, math.ceil(max(h, w) / max_side))
    cands = []
    scales = []
    # per scale and channel ("flat": intensities, "energy": gradient energy) the analysed image
    # and its smoothed spectrum
    flats: dict[tuple[int, str], np.ndarray] = {}
    spectra: dict[tuple[int, str], np.ndarray] = {}
    while True:
        scales.append(f)
        if f == 1:
            break
        f = max(1, f // 2)

    # folds are deterministic in (image, basis): several checks below refold the same pairs
    memo: dict = {}

    def snr_of(fl, b):
        key = ("snr", id(fl), b.tobytes())
        if key not in memo:
            memo[key] = fold_snr(fl, b)
        return memo[key]

    def cons_of(fl, b):
        key = ("cons", id(fl), b.tobytes())
        if key not in memo:
            memo[key] = fold_consistency(fl, b)
        return memo[key]

    def score(b, f):
        """Fold SNR of ``b`` (analysed px at scale f): the better channel (energy on the flat's scale)."""
        s_flat = snr_of(flats[f, "flat"], b)
        s_en = snr_of(flats[f, "energy"], b) / ENERGY_NULL if (f, "energy") in flats else 0.0
        return (s_flat, "flat") if s_flat >= s_en else (s_en, "energy")

    def add(b, f, ch):
        if abs(float(np.linalg.det(b))) < 1.0:  # degenerate pair
            return
        b = refine_in_spectrum(spectra[f, ch], b)
        lens = np.linalg.norm(b, axis=1)
        if ch == "energy" and lens.min() < MIN_ENERGY_PERIOD:
            return  # the gradient energy has no reliable structure this fine
        # at least ~12 cells in the crop: huge cells fold a few defects into a fake "hole";
        # hole lattices are never needle-like (tilt ≤ 60° shortens one axis by 2 at most),
        # while thin cells fold random films (lacey) into a consistent smear
        if lens.min() < 5.0 or abs(float(np.linalg.det(b))) > flats[f, "flat"].size / 12.0 \
                or lens.max() > MAX_ASPECT * lens.min():
            return
        snr, best_ch = score(b, f)
        cands.append((snr, best_ch, abs(float(np.linalg.det(b))) * f * f, b * f, f, ch))

    consistency: dict[int, float] = {}
    acf_found: dict[int, tuple | None] = {}  # per analysed scale: basis_from_acf of its crop

    def best_credible(source=None):
        """Best-folding candidate whose image halves agree (a large spurious cell can fold well)."""
        need = MIN_CONSISTENCY
        for c in sorted(cands, key=lambda c: -c[0]):
            if source is not None and c[5] != source:
                continue
            if c[0] < MIN_FOLD_SNR:
                return None
            if id(c) not in consistency:
                consistency[id(c)] = cons_of(flats[c[4], c[1]], c[3] / c[4])
            if consistency[id(c)] >= need:
                return c
            # below an incoherent best fold (a random film?) only a clearly coherent cell counts
            need = FALLBACK_CONSISTENCY
        return None

    for i, f in enumerate(scales[:3]):
        crop = _central_crop(img, f, max_side)
        if min(crop.shape) < 24:
            continue
        flat = flatten(crop, max(crop.shape) / 8.0)
        flats[f, "flat"] = flat
        spectra[f, "flat"] = smoothed_spectrum(flat)
        acf_found[f] = basis_from_acf(whitened_acf(flat), crop.shape)
        for res in (acf_found[f], basis_from_spectrum(flat)):
            if res is not None:
                add(res[0], f, "flat")
        best = best_credible()
        # no energy channel when the intensity already folds strongly, or well with closely
        # agreeing image halves
        energy_needed = best is None or not (best[0] >= ENERGY_GATE or (
            best[0] >= ENERGY_SKIP_SNR and consistency[id(best)] >= ENERGY_SKIP_CONSISTENCY))
        if i == 0 and energy_needed:
            # holes whose ice (hence brightness) varies by more than their mean contrast with the
            # film (low contrast) barely show in the intensity's periodicity; their edges do,
            # whatever each hole's sign. Analysed at the coarsest scale, where low contrast is decided.
            en = flatten(gradient_energy(crop), max(crop.shape) / 8.0)
            flats[f, "energy"] = en
            spectra[f, "energy"] = smoothed_spectrum(en)
            # the candidates seen so far were scored without this channel
            cands[:] = [score(c[3] / f, f) + c[2:] if c[4] == f else c for c in cands]
            consistency.clear()
            for res in (basis_from_acf(whitened_acf(en), crop.shape), basis_from_spectrum(en)):
                if res is not None:
                    add(res[0], f, "energy")
        # only the intensity's own candidates stop the descent in scale: at a coarse scale the
        # energy channel can offer a sparse sub-lattice of a lattice too fine to resolve there
        best = best_credible("flat")
        if best is not None and best[0] > 12 and np.linalg.norm(best[3], axis=1).min() / best[4] >= 8:
            break
    if not flats:
        return None
    best = best_credible()
    # a clearly coherent, well-folding candidate needs no trial folds of spectral peak pairs
    coherent = best is not None and best[0] >= TRIAL_SKIP_SNR \
        and consistency[id(best)] >= TRIAL_SKIP_CONSISTENCY
    if (best is None or best[0] < 12) and not coherent:
        # weak lattice (low contrast): the ACF and single-bin Fourier peaks miss it; pairs of
        # the strongest smoothed Fourier peaks at the coarsest scale
        f = scales[0]
        # ring-like holes (Fresnel fringes) can leave the first-order reflections weaker than
        # the second: a peak pair then spans a lattice over which the true one has index ≤ 4.
        # Every sub-lattice of index ≤ 4 (Hermite normal forms) of the best pairs is folded
        # (unrefined: cheap); the best few are refined and enter the candidates.
        trial = []
        for ch in ("flat", "energy"):
            if (f, ch) not in flats:
                continue
            norm = 1.0 if ch == "flat" else ENERGY_NULL
            vs = []
            for b in spectral_candidates(spectra[f, ch], n_best=6):
                b = refine_in_spectrum(spectra[f, ch], b)
                for v in sublattices(b, 4):
                    if abs(float(np.linalg.det(v))) <= flats[f, ch].size / 12.0:
                        vs.append(v)
            # a strided fold ranks the trials (the best few are refolded in full)
            for v, snr_v in zip(vs, fold_snrs(flats[f, ch], vs, max_px=25_000), strict=True):
                trial.append((snr_v / norm, v, ch))
        trial.sort(key=lambda c: -c[0])
        for _, v, ch in trial[:6]:
            add(v, f, ch)
    diag = diagnostics if diagnostics is not None else {}
    if not cands or max(c[0] for c in cands) < MIN_FOLD_SNR:
        diag["reason"] = "no periodicity"
        return None
    best = best_credible()
    diag["candidates"] = [(float(c[0]), c[1], c[3]) for c in sorted(cands, key=lambda c: -c[0])]
    snr, ch, _, basis, f, _src = best if best is not None else max(cands, key=lambda c: c[0])
    # a sparser sub-lattice can fold better than the true lattice (its cell's max picks the
    # luckiest of several hole copies): a denser candidate containing it that folds nearly as
    # well and coherently is the lattice
    # (in every analysed channel: holes about half a period across put the edges of a too-dense
    # lattice's cell onto each other, so the energy fold alone can hold up for it)
    for c in sorted(cands, key=lambda c: c[2]):
        if c[2] < 0.9 * abs(float(np.linalg.det(basis))) and c[0] >= CONTAIN_FOLD * snr \
                and _is_sublattice(basis, c[3], tol=0.08) \
                and all(snr_of(flats[c[4], k], c[3] / c[4])
                        >= CONTAIN_FOLD * snr_of(flats[c[4], k], basis / c[4])
                        for k in ("flat", "energy") if (c[4], k) in flats) \
                and cons_of(flats[c[4], c[1]], c[3] / c[4]) >= MIN_CONSISTENCY:
            snr, ch, _, basis, f, _src = c
            break
    # the best-folding basis may be a sparser sub-lattice (a hole on every node, but not every
    # hole on a node): densest lattice containing it on which the image still repeats. Tried in
    # both channels: at low contrast the holes' random brightness makes the intensity folds of
    # sub-lattice cosets differ, while their edges (energy) still repeat.
    channels = [c for c in ("flat", "energy") if (f, c) in flats]
    before_denser = (basis, f, snr, ch)
    for _ in range(2):
        found = None
        for c in channels:
            fl_c = flats[f, c]
            base_snr = snr_of(fl_c, basis / f)
            base_cons = cons_of(fl_c, basis / f)
            for _n, dense, corr in denser_candidates(fl_c, basis / f):
                dense = refine_in_spectrum(spectra[f, c], dense)
                lens = np.linalg.norm(dense, axis=1)
                shortest = 5.0 if c == "flat" else MIN_ENERGY_PERIOD
                if lens.min() < shortest or lens.max() > MAX_ASPECT * lens.min():
                    continue
                if c == "energy":
                    # edges of holes half a period across coincide under a half-period shift, so
                    # the energy fold of a too-dense lattice can stay high: only a near-perfect
                    # repeat of the whole cell counts there
                    ok = corr >= PERIODIC_CORR_ENERGY
                else:
                    # a too-dense lattice mixes holes with film: its fold contrast roughly halves
                    d_snr = snr_of(fl_c, dense)
                    ok = corr >= PERIODIC_CORR or (d_snr >= DENSER_FOLD * base_snr
                                                   and corr >= 0.6 * PERIODIC_CORR)
                # ... and the two halves of the image no longer agree on the folded cell
                if ok and cons_of(fl_c, dense) >= 0.9 * base_cons:
                    found = (dense, c)
                    break
            if found is not None:
                break
        if found is None:
            break
        basis = found[0] * f
        snr, ch = score(found[0], f)
    fl = flats[f, ch]
    cons = cons_of(fl, basis / f)
    if cons < MIN_CONSISTENCY and before_denser[0] is not basis:
        # a denser lattice taken from one channel (hole edges of R2/1 film coincide under the
        # centred shift in the gradient energy) that the image halves do not support: the
        # lattice it was derived from, when that one is coherent, rather than no lattice
        b0, f0, snr0, ch0 = before_denser
        cons0 = cons_of(flats[f0, ch0], b0 / f0)
        if cons0 >= MIN_CONSISTENCY:
            basis, f, snr, ch, fl, cons = b0, f0, snr0, ch0, flats[f0, ch0], cons0
    diag.update(fold_snr=float(snr), consistency=cons, channel=ch)
    if cons < MIN_CONSISTENCY:
        # a random pattern (lacey carbon) folds onto some large cell with a high fold SNR,
        # but the two halves of the image disagree on what the cell holds
        diag["reason"] = f"no credible lattice: the image halves fold differently (consistency {cons:.2f})"
        return None
    # refine on a crop at a scale where the pitch is ~16 px
    pitch = float(np.linalg.norm(basis, axis=1).min())
    f2 = max(1, int(pitch / 16.0))
    if f2 < f and f2 not in acf_found and pitch / f >= REFINE_SAMPLED_PITCH and f in acf_found:
        # the analysed scale already samples the period finely and its crop (larger than a
        # new one at f2) was refined on up to 12 orders of ACF peaks: no new crop
        res = acf_found[f]
        if res is not None and _same_lattice(res[0] * f, basis, tol=0.08):
            basis = res[0] * f
    elif f2 < f:
        crop = _central_crop(img, f2, max_side) if f2 not in acf_found else None
        if f2 in acf_found or min(crop.shape) >= 24:
            # the same crop's ACF basis when that scale was analysed above
            res = acf_found[f2] if f2 in acf_found else \
                basis_from_acf(whitened_acf(flatten(crop, max(crop.shape) / 8.0)), crop.shape)
            if res is not None and _same_lattice(res[0] * f2, basis, tol=0.08):
                basis = res[0] * f2
    a_, b_ = reduce_basis(basis[0], basis[1])
    return np.vstack([a_, b_]), snr


def gradient_energy(a: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Squared gradient magnitude of the dose-normalised image (opaque pixels set to the median).

    Hole edges show in it whatever the sign of each hole's contrast with the film, so its
    periodicity survives holes whose brightness varies more than their mean contrast.
    """
    step = (max(1, a.shape[0] // 256), max(1, a.shape[1] // 256))
    med = float(np.median(a[::step[0], ::step[1]]))
    if med > 0:
        a = np.where(a < 0.3 * med, np.float32(med), a)
    bg = smooth_background(a, max(a.shape) / 8.0)
    a = a / np.maximum(bg, np.float32(1e-6 * max(abs(med), 1e-6)))
    return (ndi.gaussian_gradient_magnitude(a, sigma) ** 2).astype(np.float32)


def _central_crop(img: np.ndarray, f: int, side: int) -> np.ndarray:
    h, w = img.shape
    ch, cw = min(h, side * f), min(w, side * f)
    r0, c0 = (h - ch) // 2, (w - cw) // 2
    return bin_image(img[r0:r0 + ch, c0:c0 + cw], f)


def _is_sublattice(sub: np.ndarray, dense: np.ndarray, tol: float = 0.12) -> bool:
    """True when every vector of ``sub`` is (nearly) an integer combination of ``dense``."""
    coef = np.linalg.solve(dense.T, sub.T).T
    return bool(np.abs(coef - np.rint(coef)).max() <= tol)


def _same_lattice(b1: np.ndarray, b2: np.ndarray, tol: float) -> bool:
    """True when every vector of ``b1`` is an integer combination of ``b2`` (relative tol) and areas match."""
    coef = np.linalg.solve(b2.T, b1.T).T
    if np.abs(coef - np.rint(coef)).max() > tol * 3:
        return False
    a1, a2 = abs(np.linalg.det(b1)), abs(np.linalg.det(b2))
    return abs(a1 - a2) <= tol * a2


def fit_lattice(centres: np.ndarray, index: np.ndarray, weights: np.ndarray | None = None,
                *, iterations: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Robust least squares ``centre ≈ origin + i·a + j·b``.

    Parameters
    ----------
    centres : (N, 2) measured centres (row, col)
    index : (N, 2) integer lattice indices (i, j)
    weights : (N,) optional non-negative weights

    Returns
    -------
    origin (2,), basis (2, 2) rows, inlier mask (N,)
    """
    centres = np.asarray(centres, float)
    design = np.column_stack([np.ones(len(centres)), index.astype(float)])
    wts = np.ones(len(centres)) if weights is None else np.asarray(weights, float)
    inl = wts > 0
    coef = None
    for _ in range(iterations):
        if inl.sum() < 3:
            break
        sw = np.sqrt(wts[inl])[:, None]
        coef, *_ = np.linalg.lstsq(design[inl] * sw, centres[inl] * sw, rcond=None)
        res = np.linalg.norm(centres - design @ coef, axis=1)
        mad = 1.4826 * np.median(res[inl]) + 1e-6
        inl = (wts > 0) & (res <= max(3.0 * mad, 0.75))
    if coef is None:
        raise ValueError("not enough centres to fit a lattice")
    return coef[0], coef[1:3], inl
