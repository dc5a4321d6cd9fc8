"""Per-hole measurements on the working image: intensity, uniformity, contamination, ice."""

from __future__ import annotations

import math

import numpy as np

from ..synth.physics import LAMBDA_NM
from . import locate


def measure_holes(work: np.ndarray, centres: np.ndarray, model: locate.CellModel, vis: np.ndarray) -> dict:
    """Intensity statistics inside each hole (0.8 × its ellipse) and in a film ring around it.

    Returns a dict of (N,) arrays: ``mean``, ``std`` (working-scale pixels),
    ``rel_brightness`` (mean over a smooth robust fit of all hole means, which
    removes vignetting and dose), ``std_rel`` (std over the median hole std),
    ``dark_fraction`` (hole pixels below half the typical hole level:
    contamination), ``ring_dark_fraction`` (the same on the film ring;
    0 for gold-like films), ``visible_fraction``.
    """
    n = len(centres)
    out = {k: np.zeros(n) for k in ("mean", "std", "rel_brightness", "std_rel", "dark_fraction",
                                    "ring_dark_fraction")}
    out["visible_fraction"] = np.asarray(vis, float)
    if n == 0:
        return out
    pts = locate.ellipse_points(centres, model.a, model.b, model.angle_deg, scale=0.8)
    vals, ok = locate.sample(work, pts)
    vals = np.where(ok, vals, np.nan)
    mean = np.nanmean(vals, axis=1)
    std = np.nanstd(vals, axis=1)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    std = np.where(np.isfinite(std), std, 0.0)
    typical = float(np.median(mean[vis >= 0.99])) if (vis >= 0.99).any() else float(np.median(mean))
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
    surface = _smooth_fit(centres, mean, vis >= 0.99)
    out.update(
        mean=mean,
        std=std,
        rel_brightness=mean / np.maximum(surface, 1e-9),
        std_rel=std / max(float(np.median(std)), 1e-9),
        dark_fraction=np.nan_to_num(dark),
        ring_dark_fraction=ring_dark,
    )
    return out


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
    than the smooth hole-brightness surface and no noisier than usual.
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
    value = float(np.median(feats["mean"][cand]))
    return value, f"I0 = {value:.4g} estimated from {int(cand.sum())} empty-looking hole(s)"


def thickness(mean: np.ndarray, i0: float | None) -> list[float | None]:
    """Ice thickness (nm) by Beer–Lambert, ``λ·ln(I0/I)`` clipped at 0; None when ``i0`` is None."""
    if i0 is None:
        return [None] * len(mean)
    lam = LAMBDA_NM["ice"]
    return [float(max(0.0, lam * math.log(i0 / m))) if m > 0 else float("nan") for m in mean]
