"""Provisional interpretable hole score (logistic model on measurements).

Features (all dose-free): log relative brightness and its square (too bright =
empty, too dark = thick), log relative std (speckle, cracks), dark fraction
inside the hole and on the film ring (contamination), hidden fraction, and —
when I0 is known — ice thickness in units of 100 nm and its square.
Coefficients are fitted on simulated sessions by
``python -m ptolemy_core.train.holes_interpretable`` and stored in
``weights/hole_interpretable.json``; built-in defaults are used when the file
is missing.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

FEATURES = ("log_rel", "log_rel_sq", "log_std_rel", "dark_fraction", "ring_dark_fraction", "hidden",
            "t100", "t100_sq", "has_t")

WEIGHTS_PATH = Path(__file__).resolve().parents[2] / "weights" / "hole_interpretable.json"

_DEFAULT = {
    "features": list(FEATURES),
    "coef": [0.0, -60.0, -2.0, -20.0, -5.0, -6.0, 4.0, -3.0, 0.0],
    "intercept": 1.0,
}


def feature_matrix(feats: dict, thickness) -> np.ndarray:
    """(N, len(FEATURES)) design matrix."""
    rel = np.log(np.maximum(np.asarray(feats["rel_brightness"], float), 1e-6))
    std = np.log(np.maximum(np.asarray(feats["std_rel"], float), 1e-6))
    t = np.array([np.nan if v is None else v for v in thickness], float) if len(thickness) else np.zeros(0)
    has_t = np.isfinite(t)
    t100 = np.where(has_t, t / 100.0, 0.0)
    return np.column_stack([
        rel, rel ** 2, std,
        np.asarray(feats["dark_fraction"], float), np.asarray(feats["ring_dark_fraction"], float),
        1.0 - np.asarray(feats["visible_fraction"], float),
        t100, t100 ** 2, has_t.astype(float),
    ]) if len(rel) else np.zeros((0, len(FEATURES)))


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
