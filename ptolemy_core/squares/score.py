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
- ``visible_fraction`` and ``touches_edge``.

The only dependence on the other squares is the documented normalisation by the atlas's
median uncut square (area and brightness), as the paper normalises crops per atlas.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

FEATURES = ("log_area", "rel_brightness", "rel_brightness_sq", "log_cv", "fill", "visible_fraction",
            "touches_edge")

WEIGHTS_NAME = "square_interpretable.json"


def feature_matrix(area: np.ndarray, above: np.ndarray, std: np.ndarray, seg_area: np.ndarray,
                   visible: np.ndarray, edge: np.ndarray, ref_area: float, ref_level: float) -> np.ndarray:
    """(n, len(FEATURES)) features from the measurements (see module docstring)."""
    above = np.maximum(np.asarray(above, float), 1e-6)
    rb = np.log(above / max(ref_level, 1e-6))
    return np.stack([
        np.log(np.maximum(area, 1e-6) / max(ref_area, 1e-6)),
        rb,
        rb * rb,
        np.log(np.maximum(std, 1e-6) / above),
        np.clip(seg_area / np.maximum(area, 1e-6), 0, 2),
        np.asarray(visible, float),
        np.asarray(edge, float),
    ], axis=1)


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
    z = -3.0 * x[:, 2] - 2.0 * np.abs(x[:, 0]) - 1.5 * x[:, 6]
    return 1.0 / (1.0 + np.exp(-(z + 1.0)))
