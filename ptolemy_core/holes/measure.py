"""Per-hole measurements on the working image: intensity, uniformity, contamination, ice."""

from __future__ import annotations

import math

import numpy as np

from ..synth.physics import LAMBDA_NM
from . import locate

#: Disk-sample rings for the full-resolution noise measurement (ring k has 6k points: 330 in
#: all), fewer when there are very many holes so the cost stays bounded at 8192².
_HF_RINGS = 10
_HF_MAX_SAMPLES = 2_000_000


def measure_holes(work: np.ndarray, centres: np.ndarray, model: locate.CellModel, vis: np.ndarray,
                  raw: np.ndarray | None = None, scale: int = 1) -> dict:
    """Physical measurements of each hole, from its own pixels (plus per-image normalisation).

    Parameters
    ----------
    work : working image (``raw`` binned by ``scale``)
    centres : (N, 2) hole centres, working px
    model : the folded-cell model (ellipse, levels, contrast sign)
    vis : (N,) visible fraction of each hole
    raw : full-resolution image, optional
        Used for the pixel-scale noise measurement (crystalline speckle and cracks are
        finer than a working pixel); the working image stands in when None.
    scale : int
        Input pixels per working pixel.

    Returns
    -------
    dict of (N,) arrays
        ``mean``, ``std`` (0.8 × ellipse, working px); ``rel_brightness`` (mean over a
        smooth robust fit of all hole means: removes vignetting and dose); ``std_rel`` (std
        over the median hole std); ``noise_excess`` (pixel-to-pixel variance inside the
        hole over the shot-noise expectation ``g·mean``, ``g`` = the image's median
        variance-to-mean ratio over whole holes: > 1 for speckle and cracks);
        ``dark_od`` (optical depth of the darkest tenth of the hole over its median,
        less what noise alone gives: contamination); ``dark_fraction`` (hole pixels
        below half the typical hole level); ``ring_dark_fraction`` (the same on the film
        ring; 0 for gold-like films); ``visible_fraction``.
    """
    n = len(centres)
    keys = ("mean", "std", "rel_brightness", "std_rel", "dark_fraction", "ring_dark_fraction",
            "noise_excess", "dark_od", "edge_clearance")
    out = {k: np.zeros(n) for k in keys}
    out["visible_fraction"] = np.asarray(vis, float)
    if n == 0:
        return out
    vis = np.asarray(vis, float)
    full = vis >= 0.99
    pts = locate.ellipse_points(centres, model.a, model.b, model.angle_deg, scale=0.8)
    vals, ok = locate.sample(work, pts)
    vals = np.where(ok, vals, np.nan)
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(vals, axis=1)
        std = np.nanstd(vals, axis=1)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    std = np.where(np.isfinite(std), std, 0.0)
    typical = float(np.median(mean[full])) if full.any() else float(np.median(mean))
    dark = np.nanmean(np.where(ok, vals < 0.5 * typical, np.nan), axis=1)
    ring = locate.ellipse_points(centres, model.a, model.b, model.angle_deg, scale=1.5)
    rv, rok = locate.sample(work, ring)
    r_in = np.linalg.norm((ring - centres[:, None, :]), axis=2)
    ring_sel = rok & (r_in > 1.15 * max(model.a, model.b))
    gold_like = model.sign > 0 and model.film_level < 0.3 * model.hole_level
    if gold_like:
        ring_dark = np.zeros(n)
    else:
        cnt = np.maximum(ring_sel.sum(axis=1), 1)
        ring_dark = ((rv < 0.5 * model.film_level) & ring_sel).sum(axis=1) / cnt
    surface = _smooth_fit(centres, mean, full)

    # pixel-scale noise: half the mean squared difference of horizontal neighbours is the
    # white (shot) noise variance plus any fine structure (speckle, crack lines)
    src, f = (work, 1) if raw is None else (raw, max(1, int(scale)))
    var4, white4, _ = _pair_variance(src, centres, model, f)
    ratio = var4 / np.maximum(white4, 1e-12)
    # detectors with a spread point response correlate their noise: the image's whole holes set 1
    typical_ratio = float(np.median(ratio[full])) if full.any() else float(np.median(ratio))
    noise_excess = ratio / max(typical_ratio, 1e-9)
    gain = float(np.median((4.0 * white4 / np.maximum(mean, 1e-9))[full])) if full.any() else \
        float(np.median(4.0 * white4 / np.maximum(mean, 1e-9)))

    # contamination: optical depth of the darkest tenth of the hole, less the noise share
    srt = np.sort(vals, axis=1)  # NaN (outside the image) sort last
    n_ok = ok.sum(axis=1)
    med, p10 = _row_quantile(srt, n_ok, 0.5), _row_quantile(srt, n_ok, 0.1)
    # shot noise of one working pixel (the mean of f² pixels), relative to the hole level
    sig_rel = np.sqrt(np.maximum(gain * np.maximum(med, 1e-9), 0.0) / f ** 2) / np.maximum(med, 1e-9)
    with np.errstate(divide="ignore", invalid="ignore"):
        dark_od = np.log(np.maximum(med, 1e-9) / np.maximum(p10, 1e-3 * np.maximum(med, 1e-9)))
    dark_od = np.clip(np.nan_to_num(dark_od - 1.28 * sig_rel), 0.0, 5.0)
    out.update(
        mean=mean,
        std=std,
        rel_brightness=mean / np.maximum(surface, 1e-9),
        std_rel=std / max(float(np.median(std)), 1e-9),
        dark_fraction=np.nan_to_num(dark),
        ring_dark_fraction=ring_dark,
        noise_excess=np.nan_to_num(noise_excess, nan=1.0),
        dark_od=dark_od,
        edge_clearance=_edge_clearance(work.shape, centres, model),
    )
    return out


def _edge_clearance(shape, centres: np.ndarray, model: locate.CellModel) -> np.ndarray:
    """Distance from each hole centre to the nearest image edge, in hole radii (capped at 5).

    The fitted ellipse is the half-contrast core of the mean hole and soft rims extend past
    it, so a hole whose centre is within ~1.3 radii of the edge may well be cut.
    """
    h, w = shape
    d = np.minimum.reduce([centres[:, 0] + 0.5, h - 0.5 - centres[:, 0],
                           centres[:, 1] + 0.5, w - 0.5 - centres[:, 1]])
    return np.clip(d / max(model.a, model.b, 1e-6), 0.0, 5.0)


def _row_quantile(srt: np.ndarray, n_ok: np.ndarray, q: float) -> np.ndarray:
    """Quantile ``q`` of each row of ``srt`` (sorted, the first ``n_ok`` values valid; linear)."""
    pos = q * np.maximum(n_ok - 1, 0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(n_ok - 1, 0))
    rows = np.arange(len(srt))
    v = srt[rows, lo] + (pos - lo) * (srt[rows, hi] - srt[rows, lo])
    return np.where(n_ok > 0, v, np.nan)


def _pair_variance(src: np.ndarray, centres: np.ndarray, model: locate.CellModel, f: int):
    """Per hole: the variance of 2×2 pixel means over the hole, and the white-noise share of it.

    Taken at full resolution (``src`` = raw image, ``f`` = working scale) on 2×2 pixel blocks at
    points spread uniformly over 0.8 × each hole's ellipse. Shot noise is white (it arises after
    the optics), so half the mean squared difference of neighbouring pixels measures it; a 2×2
    mean keeps a quarter of it, but nearly all of any structure 1–3 px across (speckle of
    crystalline ice, crack lines). Returns ``(var_2x2, white / 4, mean)``.
    """
    rings = _HF_RINGS
    while rings > 5 and len(centres) * 3 * rings * (rings + 1) > _HF_MAX_SAMPLES:
        rings -= 1
    unit = locate.disk_samples(rings)
    th = math.radians(model.angle_deg)
    ua = np.array([math.sin(th), math.cos(th)])
    ub = np.array([ua[1], -ua[0]])
    local = (unit[:, 1:2] * model.a * ua + unit[:, 0:1] * model.b * ub) * 0.8
    # holes in chunks: each hole's numbers come from its own row, and the temporaries of a chunk
    # stay in cache (thousands of holes at 4096² and more)
    step = max(1, 65_536 // len(local))
    parts = [_pair_variance_rows(src, centres[i:i + step], local, f) for i in range(0, len(centres), step)]
    if not parts:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    return tuple(np.concatenate(x) for x in zip(*parts, strict=True))


def _pair_variance_rows(src: np.ndarray, centres: np.ndarray, local: np.ndarray, f: int):
    """:func:`_pair_variance` for some holes, given the sample offsets ``local`` (working px)."""
    pts = (centres[:, None, :] + local[None] + 0.5) * f - 0.5
    h, w = src.shape
    r = np.floor(pts[..., 0]).astype(np.int64)
    c = np.floor(pts[..., 1]).astype(np.int64)
    ok = (r >= 0) & (r < h - 1) & (c >= 0) & (c < w - 1)
    r, c = np.clip(r, 0, max(h - 2, 0)), np.clip(c, 0, max(w - 2, 0))
    flat = src.reshape(-1)
    idx = r * w + c
    step_r = w if h > 1 else 0
    step_c = 1 if w > 1 else 0
    a = flat.take(idx).astype(np.float32, copy=False)
    b = flat.take(idx + step_c).astype(np.float32, copy=False)
    d = flat.take(idx + step_r).astype(np.float32, copy=False)
    e = flat.take(idx + step_r + step_c).astype(np.float32, copy=False)
    cnt = np.maximum(ok.sum(axis=1), 1)
    okf = ok.astype(np.float32)
    white = (((a - b) ** 2 + (d - e) ** 2) * okf).sum(axis=1, dtype=np.float64) / (4.0 * cnt)
    m4 = 0.25 * (a + b + d + e)
    mean = (m4 * okf).sum(axis=1, dtype=np.float64) / cnt
    var4 = (((m4 - mean[:, None].astype(np.float32)) ** 2) * okf).sum(axis=1, dtype=np.float64) \
        / np.maximum(cnt - 1, 1)
    return var4, white / 4.0, mean


def _smooth_fit(centres: np.ndarray, values: np.ndarray, use: np.ndarray) -> np.ndarray:
    """Robust quadratic surface of ``values`` over hole positions (illumination, dose, gradients)."""
    if use.sum() < 12:
        return np.full(len(values), float(np.median(values)) if len(values) else 1.0)
    c = centres - centres.mean(axis=0)
    sc = float(np.abs(c).max()) or 1.0
    r, q = c[:, 0] / sc, c[:, 1] / sc
    design = np.column_stack([np.ones_like(r), r, q, r * r, r * q, q * q])
    y = np.log(np.maximum(values, 1e-9))
    sel = use.copy()
    coef = None
    for _ in range(4):
        coef, *_ = np.linalg.lstsq(design[sel], y[sel], rcond=None)
        res = y - design @ coef
        mad = 1.4826 * float(np.median(np.abs(res[sel]))) + 1e-9
        sel = use & (np.abs(res) < 2.5 * mad)
        if sel.sum() < 12:
            break
    return np.exp(design @ coef)


def choose_i0(i0: float | None, feats: dict, model: locate.CellModel) -> tuple[float | None, str | None]:
    """The vacuum intensity: the caller's, else the mean of empty-looking holes, else None.

    Empty holes (vacuum) are the brightest uniform holes: at least 8 % brighter
    than the smooth hole-brightness surface and no noisier than usual; I0 is the
    median of those within 5 % of their 90th percentile (thin-ice holes pass the
    8 % test too and would pull I0 down).
    """
    if i0 is not None:
        return float(i0), None
    rel, std_rel, vis = feats["rel_brightness"], feats["std_rel"], feats["visible_fraction"]
    if len(rel) == 0:
        return None, None
    cand = (rel > 1.08) & (std_rel < 1.6) & (vis >= 0.99) & (feats["dark_fraction"] < 0.02)
    if model.sign < 0 and cand.sum() == 0:
        cand = (rel > 1.15) & (vis >= 0.99)
    if cand.sum() == 0:
        return None, "ice thickness unknown: no I0 given and no empty hole in the image"
    # vacuum is the brightest level: thin-ice holes also pass the 8 % test, so keep the
    # candidates within 5 % of the upper decile (vignetting spreads the empty holes too)
    m = feats["mean"][cand]
    top = float(np.percentile(m, 90))
    value = float(np.median(m[m >= 0.95 * top]))
    return value, f"I0 = {value:.4g} estimated from {int(cand.sum())} empty-looking hole(s)"


def thickness(mean: np.ndarray, i0: float | None) -> list[float | None]:
    """Ice thickness (nm) by Beer–Lambert, ``λ·ln(I0/I)`` clipped at 0; None when ``i0`` is None."""
    if i0 is None:
        return [None] * len(mean)
    lam = LAMBDA_NM["ice"]
    return [float(max(0.0, lam * math.log(i0 / m))) if m > 0 else float("nan") for m in mean]
