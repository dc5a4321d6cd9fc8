"""Square scores: an interpretable logistic model on measurements, or the CNN when shipped.

Features (all dimensionless; :data:`FEATURES` order) — the paper's operators look at area
and brightness first (Fig. 10). Brightness is the **centre level** of the window (its
segment eroded by ~18 % of the window side) above the local bar level: the ice is thicker
next to the bars (meniscus), so the centre is the better thickness probe.

- ``log_area``: ln(rectangle area / median area of the atlas's uncut squares);
- ``rel_brightness`` = ln(Ĩ / Ĩ_med) (Ĩ: centre level above the bars; Ĩ_med: the median
  over the atlas's uncut squares; ``= -relative thickness / λ``), its square and its
  positive / negative parts (both too bright — empty, broken, thin — and too dark —
  thick — are bad; a logistic model is monotone in each feature);
- ``local_brightness``: ln(Ĩ / median Ĩ of the uncut neighbours within 1.6 pitches)
  and its positive / negative parts: the same comparison against the neighbourhood, which
  does not see vignetting, montage tile brightness or large-scale ice gradients;
- ``rim``: ln(Ĩ / mean level of the whole window) — the meniscus (a window with ice has
  darker edges; an empty one has none);
- ``log_cv`` / ``log_core_cv``: ln(std / level) of the whole segment and of its centre
  (cracks, vacuum patches, contamination);
- ``fill``: segment area / rectangle area (torn or contaminated windows fill less);
- ``visible_fraction``, ``half_cut`` (visible fraction < 0.5: the truth calls such a square
  not good, whatever its ice) and ``touches_edge``;
- ``log_peak``: ln(peak / Ĩ) — brightest core value (vacuum patches, cracks);
- ``log_dip``: ln(Ĩ / dip) — darkest core value (contamination);
- ``has_vacuum``, ``od_vacuum`` = ln(I_vac / Ĩ) (the optical depth of the centre against
  the atlas's own vacuum when a broken/empty square gives it, 0 without) and its square;
- ``od_below`` / ``od_above``: how far that optical depth lies below / above the useful
  ice window (:data:`OD_WINDOW`), 0 inside it or without vacuum;
- ``thin_film`` (1 when the atlas has a vacuum reference and its typical square's optical
  depth is below :data:`OD_FILM_GATE`: the film barely attenuates, so the optical depth is
  ice), ``od_ice`` = ``od_vacuum`` × ``thin_film`` and its hinges above / below
  :data:`OD_ICE_OVER` / :data:`OD_ICE_UNDER` (piecewise-linear: too thick and too thin ice
  are bad, whatever the other squares look like), and ``od_typical`` (that median).

Every intensity above the bars is first divided by the square's ``illumination`` feature
(the frame's fitted radial fall-off, :func:`ptolemy_core.squares.measure.illumination`):
vignetting darkens a frame's corners by up to ~25 %, which read as ~100 nm of extra ice
against a vacuum square near the centre and as "darker than the typical square".

The only dependence on the other squares is the documented normalisation by the atlas's
uncut squares (median area, centre level and optical depth, the neighbours' median level,
the vacuum level, the illumination fit), as the paper normalises crops per atlas.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..synth.physics import LAMBDA_NM

FEATURES = ("log_area", "rel_brightness", "rel_brightness_sq", "rel_brighter", "rel_darker",
            "local_brightness", "local_brighter", "local_darker", "rim", "log_cv", "log_core_cv", "fill",
            "visible_fraction", "half_cut", "touches_edge", "log_peak", "log_dip", "has_vacuum", "od_vacuum",
            "od_vacuum_sq", "od_below", "od_above", "thin_film", "od_ice", "od_ice_over_010",
            "od_ice_over_020", "od_ice_over_030", "od_ice_over_040", "od_ice_over_050", "od_ice_under_010",
            "od_ice_under_015", "od_ice_under_020", "od_typical")

WEIGHTS_NAME = "square_interpretable.json"
#: Hinges of the optical-depth features: the useful ice window 20–100 nm (/ λ) plus
#: ~15 nm for a thin carbon film's attenuation.
OD_WINDOW = ((20.0 + 15.0) / LAMBDA_NM["ice"], (100.0 + 15.0) / LAMBDA_NM["ice"])
#: The atlas's typical square (median optical depth of its uncut squares against the vacuum)
#: must be thinner than this for the absolute optical depth to be read as ice: 100 nm of ice
#: is 0.29, a 10–25 nm carbon film with 15–45 % holes adds 0.02–0.08. A typical square
#: transmitting less than exp(-0.7) ≈ 50 % of the vacuum has an attenuating film (gold foil,
#: thick carbon) of unknown thickness in the way, and only relative thickness is meaningful.
OD_FILM_GATE = 0.7
#: Hinges of the gated optical depth (``od_ice_over_*`` / ``od_ice_under_*``).
OD_ICE_OVER = (0.10, 0.20, 0.30, 0.40, 0.50)
OD_ICE_UNDER = (0.10, 0.15, 0.20)
#: Neighbours closer than this many pitches serve as the local reference level.
LOCAL_RADIUS_PITCH = 1.6


def feature_matrix(area: np.ndarray, level: np.ndarray, mean_level: np.ndarray, std: np.ndarray,
                   core_std: np.ndarray, seg_area: np.ndarray, visible: np.ndarray, edge: np.ndarray,
                   peak_above: np.ndarray, dip_above: np.ndarray, od_vac: np.ndarray | None,
                   centers: np.ndarray) -> np.ndarray:
    """(n, len(FEATURES)) features from the measurements (see module docstring).

    ``level`` is the centre level above the bars, ``mean_level`` the whole segment's;
    ``od_vac`` the optical depth against the vacuum (None without vacuum); ``centers``
    (n, 2) positions (any unit) for the neighbourhood reference.
    """
    level = np.maximum(np.asarray(level, float), 1e-6)
    n = len(level)
    full = np.asarray(edge, float) == 0
    ref = full if full.any() else np.ones(n, bool)
    rb = np.log(level / float(np.median(level[ref]))) if n else np.zeros(0)
    local = _local_brightness(level, np.asarray(centers, float).reshape(n, 2), full, rb)
    has_vac = 0.0 if od_vac is None else 1.0
    od = np.zeros(n) if od_vac is None else np.asarray(od_vac, float)
    od_typ = float(np.median(od[ref])) if n else 0.0
    gate = has_vac * float(od_typ < OD_FILM_GATE)
    od_ice = od * gate
    visible = np.asarray(visible, float)
    return np.stack([
        np.log(np.maximum(area, 1e-6) / max(float(np.median(area[ref])) if n else 1.0, 1e-6)),
        rb, rb * rb, np.maximum(rb, 0), np.maximum(-rb, 0),
        local, np.maximum(local, 0), np.maximum(-local, 0),
        np.log(level / np.maximum(mean_level, 1e-6)),
        np.log(np.maximum(std, 1e-6) / np.maximum(mean_level, 1e-6)),
        np.log(np.maximum(core_std, 1e-6) / level),
        np.clip(seg_area / np.maximum(area, 1e-6), 0, 2),
        visible,
        (visible < 0.5).astype(float),
        np.asarray(edge, float),
        np.log(np.maximum(peak_above, 1e-6) / level),
        np.log(level / np.maximum(dip_above, 1e-6)),
        np.full(n, has_vac),
        od,
        od * od,
        np.maximum(OD_WINDOW[0] - od, 0) * has_vac,
        np.maximum(od - OD_WINDOW[1], 0) * has_vac,
        np.full(n, gate),
        od_ice,
        *(np.maximum(od - k, 0) * gate for k in OD_ICE_OVER),
        *(np.maximum(k - od, 0) * gate for k in OD_ICE_UNDER),
        np.full(n, od_typ),
    ], axis=1).reshape(n, len(FEATURES))


def _local_brightness(level: np.ndarray, centers: np.ndarray, full: np.ndarray, rb: np.ndarray) -> np.ndarray:
    """ln(level / median level of the uncut neighbours within :data:`LOCAL_RADIUS_PITCH`).

    The pitch is the median nearest-neighbour distance; squares with fewer than two such
    neighbours fall back to the atlas-wide relative brightness ``rb``.
    """
    n = len(level)
    if n < 4:
        return rb.copy()
    from scipy.spatial import cKDTree

    tree = cKDTree(centers)
    k = min(n, 9)
    dist, nb = tree.query(centers, k=k)
    pitch = float(np.median(dist[:, 1]))
    ok = (dist[:, 1:] < LOCAL_RADIUS_PITCH * pitch) & full[nb[:, 1:]]
    vals = np.where(ok, level[nb[:, 1:]], np.nan)
    count = ok.sum(axis=1)
    out = rb.copy()
    use = count >= 2
    if use.any():
        out[use] = np.log(level[use] / np.nanmedian(vals[use], axis=1))
    return out


def features_from_targets(targets) -> np.ndarray:
    """The feature matrix of found squares (the finder and the training both use this).

    Normalisation: the median rectangle area and the median centre level above the bar
    level of the atlas's squares that do not touch the image edge (all squares if every
    one does), the neighbours' median level, and the vacuum level behind
    ``ice_thickness_nm`` (optical depth = thickness / λ).
    """
    if not targets:
        return np.zeros((0, len(FEATURES)))
    f = [t.features for t in targets]
    bar = np.array([d["bar_level"] for d in f], float)
    # Intensities above the bars divided by the frame's estimated illumination (vignetting).
    g = np.array([d.get("illumination", 1.0) for d in f], float)
    area = np.array([t.area for t in targets], float)
    mean_level = (np.array([t.brightness for t in targets], float) - bar) / g
    core = np.array([d.get("core", t.brightness) for t, d in zip(targets, f, strict=True)], float)
    level = (core - bar) / g
    std = np.array([d["std"] for d in f], float) / g
    core_std = np.array([d.get("core_std", d["std"]) for d in f], float) / g
    seg = np.array([d["segment_area"] for d in f], float)
    vis = np.array([d["visible_fraction"] for d in f], float)
    edge = np.array([d["touches_edge"] for d in f], float)
    peak = (np.array([d["peak"] for d in f], float) - bar) / g
    dip = (np.array([d["dip"] for d in f], float) - bar) / g
    ice = [d["ice_thickness_nm"] for d in f]
    od = None if any(v is None for v in ice) else np.array(ice, float) / LAMBDA_NM["ice"]
    centers = np.array([t.center for t in targets], float)
    return feature_matrix(area, level, mean_level, std, core_std, seg, vis, edge, peak, dip, od, centers)


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
    z = (-3.0 * x[:, 2] - 2.0 * np.abs(x[:, 0]) - 1.5 * x[:, 14] - 3.0 * x[:, 13] - 2.0 * x[:, 15]
         - 2.0 * x[:, 16])
    return 1.0 / (1.0 + np.exp(-(z + 1.0)))


def rescore_visibility(score: float, old_visible: float, new_visible: float, area_ratio: float = 1.0,
                       model: dict | None = None) -> float:
    """The interpretable score of a square whose visible fraction turned out to be larger.

    A square cut by a tile edge is scored on that tile as cut (``visible_fraction`` and
    ``half_cut`` lower its logit). When several overlapping tiles together show more of it
    (Leginon's atlas tiles), the logistic model's logit is moved by ``Σ w_i Δx_i / sd_i`` over
    ``visible_fraction``, ``half_cut`` and ``log_area`` (the rectangle area) — no need to
    re-measure the square. The other features keep the view's values, ``touches_edge`` and
    ``fill`` included (both would also move when the union shows the whole window), so this
    is the exact re-score of those three features only, not of a fresh measurement.

    Parameters
    ----------
    score : float
        The view's interpretable score (0..1).
    old_visible, new_visible : float
        Visible fraction of the view and of the union of the views.
    area_ratio : float
        Area of the union of the views / area of the view (``log_area`` moves by its log).
    model : dict, optional
        The logistic model; default the shipped one.

    Returns
    -------
    float
        The score with the new visibility (the old one when no model is available or the
        visibility did not grow).
    """
    model = model if model is not None else load_interpretable()
    if model is None or not new_visible > old_visible or list(model["features"]) != list(FEATURES):
        return float(score)
    names = list(model["features"])
    w = np.asarray(model["coef"], float) / np.asarray(model["sd"], float)
    dz = w[names.index("visible_fraction")] * (new_visible - old_visible)
    dz += w[names.index("half_cut")] * (float(new_visible < 0.5) - float(old_visible < 0.5))
    dz += w[names.index("log_area")] * float(np.log(max(area_ratio, 1e-6)))
    s = min(max(float(score), 1e-12), 1.0 - 1e-12)
    z = np.log(s / (1.0 - s)) + dz
    return float(1.0 / (1.0 + np.exp(-z)))
