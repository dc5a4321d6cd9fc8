"""Square scores: an interpretable logistic model on measurements, or the CNN when shipped.

Features (all dimensionless; :data:`FEATURES` order) — the paper's operators look at area
and brightness first (Fig. 10):

- ``log_area``: ln(rectangle area / median area of the atlas's uncut squares);
- ``rel_brightness``: ln(Ĩ / Ĩ_med), brightness above the bar level relative to the
  atlas's median uncut square (``= -relative_thickness / λ``);
- ``rel_brightness_sq``: its square (both too bright — empty/broken — and too dark —
  thick — are bad; a logistic model is monotone in each feature);
- ``log_cv``: ln(std / Ĩ) of the segment (cracks, vacuum patches, contamination);
- ``fill``: segment area / rectangle area (torn or contaminated windows fill less);
- ``visible_fraction`` and ``touches_edge``;
- ``log_peak``: ln(peak / Ĩ) — brightest core value (vacuum patches, cracks);
- ``log_dip``: ln(Ĩ / dip) — darkest core value (contamination);
- ``has_vacuum``, ``od_vacuum`` (= ice_thickness_nm / λ, 0 without vacuum) and its square:
  the optical depth against the atlas's own vacuum when a broken/empty square gives it;
- ``od_below`` / ``od_above``: how far that optical depth lies below / above the useful
  ice window (:data:`OD_WINDOW`), 0 inside it or without vacuum.

The only dependence on the other squares is the documented normalisation by the atlas's
median uncut square (area and brightness), as the paper normalises crops per atlas.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..synth.physics import LAMBDA_NM

FEATURES = ("log_area", "rel_brightness", "rel_brightness_sq", "log_cv", "fill", "visible_fraction",
            "touches_edge", "log_peak", "log_dip", "has_vacuum", "od_vacuum", "od_vacuum_sq",
            "od_below", "od_above")

WEIGHTS_NAME = "square_interpretable.json"
#: Hinges of the optical-depth features: the useful ice window 20–100 nm (/ λ) plus
#: ~15 nm for a thin carbon film's attenuation.
OD_WINDOW = ((20.0 + 15.0) / LAMBDA_NM["ice"], (100.0 + 15.0) / LAMBDA_NM["ice"])


def feature_matrix(area: np.ndarray, above: np.ndarray, std: np.ndarray, seg_area: np.ndarray,
                   visible: np.ndarray, edge: np.ndarray, ref_area: float, ref_level: float,
                   peak_above: np.ndarray | None = None, dip_above: np.ndarray | None = None,
                   ice_nm: np.ndarray | None = None) -> np.ndarray:
    """(n, len(FEATURES)) features from the measurements (see module docstring)."""
    above = np.maximum(np.asarray(above, float), 1e-6)
    n = len(above)
    rb = np.log(above / max(ref_level, 1e-6))
    peak_above = above if peak_above is None else np.maximum(np.asarray(peak_above, float), 1e-6)
    dip_above = above if dip_above is None else np.maximum(np.asarray(dip_above, float), 1e-6)
    if ice_nm is None:
        ice_nm = np.full(n, np.nan)
    ice_nm = np.asarray(ice_nm, float)
    has_vac = np.isfinite(ice_nm).astype(float)
    od = np.where(has_vac > 0, ice_nm, 0.0) / LAMBDA_NM["ice"]
    return np.stack([
        np.log(np.maximum(area, 1e-6) / max(ref_area, 1e-6)),
        rb,
        rb * rb,
        np.log(np.maximum(std, 1e-6) / above),
        np.clip(seg_area / np.maximum(area, 1e-6), 0, 2),
        np.asarray(visible, float),
        np.asarray(edge, float),
        np.log(peak_above / above),
        np.log(above / dip_above),
        has_vac,
        od,
        od * od,
        np.maximum(OD_WINDOW[0] - od, 0) * has_vac,
        np.maximum(od - OD_WINDOW[1], 0) * has_vac,
    ], axis=1).reshape(n, len(FEATURES))


def features_from_targets(targets) -> np.ndarray:
    """The feature matrix of found squares (the finder and the training both use this).

    Normalisation: the median rectangle area and the median brightness above the bar
    level of the atlas's squares that do not touch the image edge (all squares if every
    one does).
    """
    if not targets:
        return np.zeros((0, len(FEATURES)))
    f = [t.features for t in targets]
    area = np.array([t.area for t in targets], float)
    above = np.array([t.brightness - d["bar_level"] for t, d in zip(targets, f, strict=True)], float)
    std = np.array([d["std"] for d in f], float)
    seg = np.array([d["segment_area"] for d in f], float)
    vis = np.array([d["visible_fraction"] for d in f], float)
    edge = np.array([d["touches_edge"] for d in f], float)
    peak = np.array([d["peak"] - d["bar_level"] for d in f], float)
    dip = np.array([d["dip"] - d["bar_level"] for d in f], float)
    ice = np.array([np.nan if d["ice_thickness_nm"] is None else d["ice_thickness_nm"] for d in f], float)
    full = edge == 0
    ref_area = float(np.median(area[full] if full.any() else area))
    ref_level = float(np.median(np.maximum(above[full] if full.any() else above, 1e-6)))
    return feature_matrix(area, above, std, seg, vis, edge, ref_area, ref_level, peak, dip, ice)


def _weights_path() -> Path:
    # The registry finds the installed ``ptolemy_core.weights`` package (torch-free).
    from ..models.registry import weights_dir

    return Path(weights_dir()) / WEIGHTS_NAME


@lru_cache(maxsize=1)
def load_interpretable() -> dict | None:
    """The shipped logistic model (``weights/square_interpretable.json``) or None."""
    try:
        path = _weights_path()
        return json.loads(path.read_text())
    except (OSError, ValueError, ImportError):
        return None


def logistic_scores(x: np.ndarray, model: dict) -> np.ndarray:
    """``sigmoid(b + Σ w_i (x_i - mean_i) / sd_i)`` per row."""
    names = model["features"]
    if list(names) != list(FEATURES):
        raise ValueError("square model features do not match this version")
    mu = np.asarray(model["mean"], float)
    sd = np.asarray(model["sd"], float)
    w = np.asarray(model["coef"], float)
    z = model["intercept"] + ((x - mu) / sd) @ w
    return 1.0 / (1.0 + np.exp(-z))


def fallback_scores(x: np.ndarray) -> np.ndarray:
    """Without a model: favour uncut squares of median brightness and size (documented rule)."""
    z = -3.0 * x[:, 2] - 2.0 * np.abs(x[:, 0]) - 1.5 * x[:, 6] - 2.0 * x[:, 7] - 2.0 * x[:, 8]
    return 1.0 / (1.0 + np.exp(-(z + 1.0)))
