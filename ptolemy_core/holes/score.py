"""Provisional interpretable hole score (logistic model on physical measurements).

Every feature is a physical quantity of the hole itself (with per-image normalisation
documented in :func:`ptolemy_core.holes.measure.measure_holes`):

- ``t100``, ``t100_sq`` — ice thickness ``λ·ln(I0/I)`` in units of 100 nm and its square,
  when I0 is known (given by the caller or estimated from empty holes); a parabola that
  peaks inside the useful 20–100 nm window, so vacuum (t ≈ 0) and thick ice score low.
- ``rel_thickness``, ``rel_thickness_sq`` — when I0 is unknown: thickness relative to the
  image's typical hole, ``-λ·ln(I/I_typical)`` / 100 nm (``I_typical`` = smooth robust fit of
  the hole means, which also removes vignetting), and its square; 0 when I0 is known.
- ``has_t`` — 1 when the absolute thickness is known.
- ``noise_excess`` — ``max(0, ln(var / shot-noise expectation))`` of 2×2-pixel means inside
  the hole (crystalline speckle, cracks, contamination).
- ``dark_od`` — optical depth of the darkest tenth of the hole over its median, less the
  share of noise (contamination).
- ``ring_dark_fraction`` — dark blobs on the film ring around the hole (carbon films).
- ``hidden`` — 1 − visible fraction; ``near_edge`` — ``max(0, 1.5 − clearance)`` with the
  clearance to the image edge in hole radii (a hole must be wholly imaged to be targeted).

Coefficients are fitted on simulated training sessions by
``python -m ptolemy_core.train.holes_interpretable`` and stored in
``weights/hole_interpretable.json``; built-in defaults are used when the file is missing.
Each hole's score depends only on its own measurements and the per-image normalisation.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..synth.physics import LAMBDA_NM

FEATURES = ("rel_thickness", "rel_thickness_sq", "noise_excess", "dark_od", "ring_dark_fraction",
            "hidden", "near_edge", "t100", "t100_sq", "has_t")

WEIGHTS_PATH = Path(__file__).resolve().parents[2] / "weights" / "hole_interpretable.json"

#: Used when weights/hole_interpretable.json is missing or stale (rounded fit of the shipped one).
_DEFAULT = {
    "features": list(FEATURES),
    "coef": [0.19, -7.9, -3.83, -1.94, -4.33, -3.86, -3.32, 18.5, -13.5, -4.69],
    "intercept": 0.95,
}


def feature_matrix(feats: dict, thickness) -> np.ndarray:
    """(N, len(FEATURES)) design matrix from :func:`~ptolemy_core.holes.measure.measure_holes`
    output (or the same keys taken from ``Target.features``) and the thicknesses (None = unknown)."""
    n = len(feats["rel_brightness"])
    if n == 0:
        return np.zeros((0, len(FEATURES)))
    rel = np.log(np.maximum(np.asarray(feats["rel_brightness"], float), 1e-6))
    t = np.array([np.nan if v is None else v for v in thickness], float)
    has_t = np.isfinite(t)
    t100 = np.where(has_t, t / 100.0, 0.0)
    rel_t = np.where(has_t, 0.0, -LAMBDA_NM["ice"] * rel / 100.0)
    noise = np.log(np.maximum(np.asarray(feats["noise_excess"], float), 1e-6))
    clearance = np.asarray(feats["edge_clearance"], float)
    return np.column_stack([
        rel_t, rel_t ** 2,
        np.clip(noise, 0.0, None),
        np.asarray(feats["dark_od"], float),
        np.asarray(feats["ring_dark_fraction"], float),
        1.0 - np.asarray(feats["visible_fraction"], float),
        np.clip(1.5 - clearance, 0.0, None),
        t100, t100 ** 2, has_t.astype(float),
    ])
@lru_cache(maxsize=1)
def load_weights() -> dict:
    """The fitted coefficients (or the built-in defaults)."""
    try:
        data = json.loads(WEIGHTS_PATH.read_text())
        if list(data["features"]) == list(FEATURES):
            return data
    except (OSError, ValueError, KeyError):
        pass
    return _DEFAULT


def interpretable_scores(feats: dict, thickness) -> np.ndarray:
    """Scores 0..1 (probability of a good hole); each hole scored on its own measurements."""
    x = feature_matrix(feats, thickness)
    if len(x) == 0:
        return np.zeros(0)
    w = load_weights()
    z = x @ np.asarray(w["coef"], float) + float(w["intercept"])
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))


def models_shipped(name: str = "hole_cnn") -> bool:
    """Whether ``weights/manifest.json`` lists the learned model ``name`` ("hole_cnn", "unet").

    Checked before importing :mod:`ptolemy_core.models` so that torch is only imported
    when a hole model actually ships.
    """
    try:
        manifest = json.loads((WEIGHTS_PATH.parent / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return name in (manifest.get("models") or {})


def cnn_scores(image, targets, working_scale: float, i0: float | None = None):
    """Learned scores from :func:`ptolemy_core.models.api.hole_cnn_scores`, or None when unavailable."""
    if not models_shipped():
        return None
    try:
        from ..models import api
    except ImportError:
        return None
    fn = getattr(api, "hole_cnn_scores", None)
    if fn is None:
        return None
    out = fn(image, targets, working_scale, i0=i0)
    return None if out is None else np.asarray(out, float)
