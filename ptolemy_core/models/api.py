"""Learned models, as the finders use them (contract 6).

Every scorer returns ``None`` when no weights are shipped for its model, so the
finders fall back to their interpretable scorers. All inference runs in
``eval()`` mode under :func:`torch.inference_mode`, on networks without any
normalisation layer: a target's score never depends on the other targets passed.

Functions
---------
square_cnn_scores(image, targets, norm=None)
    0..1 per square (square classifier).
hole_cnn_scores(image, targets, working_scale)
    0..1 per hole (hole classifier on working-scale crops).
unet_probability(work, channel="hole")
    Per-pixel probability map of hole centres (``"hole"``) or of holes worth
    collecting (``"good"``) for a working-scale image.
unet_hole_centres(work)
    ``(N, 2)`` working-scale ``(row, col)`` centroids of high-probability regions.
fit_anchor_lattice(centres, masses, shape, ...)
    The paper's anchor-pair lattice fit (cost 10·missed + 1·extra), generalised
    to oblique/hexagonal lattices with ``kind="general"``.
unet_lattice(work)
    U-Net centroids + lattice fit + per-node probability (Table 3's methods).
unet_hole_scores(work, targets, working_scale)
    0..1 per hole from the summed ``"good"`` probability inside each hole (the
    paper's best hole ranker).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from ..errors import PtolemyInputError
from ..image import Image, as_image
from ..targets import Target
from . import crops as C
from .registry import load_model

#: Pixel threshold of the probability map for "high-probability regions". Chosen for the
#: shipped space-to-depth network on the tuning split (``suite.square_image_sessions("tuning", 4)``
#: without 4096², finder working scales): best mean centroid F1 (0.832) and U-Net + lattice F1
#: (0.906) among 0.2-0.6 (0.3: 0.825 / 0.887). The session-1 network used 0.3.
PROB_THRESHOLD = 0.2
#: Table 3, last row: keep lattice nodes whose summed probability in the crop exceeds this.
NODE_PROB_THRESHOLD = 0.5
#: Lattice fit: anchors tried (centroids nearest the image centre).
MAX_ANCHORS = 40
#: Summed probability of one confident centre blob (2π·1.2², the training blur's sigma).
BLOB_MASS = 9.0
#: Tiles for large working images (bounded memory); the margin covers the receptive field.
#: Both are in the network's internal pixels (working px / its space-to-depth factor), and
#: an image of at most _WHOLE_MAX internal pixels runs in one piece (a 1024 × 1440 working
#: image with the factor-2 network: 368 640, one piece, no margin overhead).
_TILE = 768
_MARGIN = 48
_WHOLE_MAX = 800_000


# ----------------------------------------------------------------------------- squares
def square_cnn_scores(
    image: Image | np.ndarray,
    targets: list[Target],
    norm: tuple[float, float] | None = None,
    *,
    i0: float | None = None,
    model=None,
) -> np.ndarray | None:
    """Square-classifier probability (0..1) for each square.

    Parameters
    ----------
    image : Image or ndarray
        The atlas (full resolution).
    targets : list of Target
        Squares with ``vertices`` (aligned rectangle) and ``area``.
    norm : tuple, optional
        Atlas-level normalisation (:func:`square_norm`). Default: computed
        over *all* ``targets`` (the paper: all squares found in the atlas) —
        pass the atlas's own value to score a subset exactly as in the full
        set (the relative-area input uses the same median area).
    i0 : float, optional
        Vacuum intensity in raw counts (the square finder's ``SquareResult.i0``);
        gives the network the optical depth (ice thickness) of each square.
    model : SquareCNN, optional
        A network to use instead of the shipped one (training/evaluation).

    Returns
    -------
    ndarray of float or None
        One score per target (input order); None when no weights are shipped.
    """
    model = model if model is not None else load_model("square_cnn")
    if model is None:
        return None
    if not targets:
        return np.zeros(0, np.float64)
    data = as_image(image).data
    x, sc = square_inputs(data, [t.vertices_array() for t in targets],
                          np.array([t.area for t in targets], float), norm, i0,
                          version=input_version(model))
    return _run_classifier(model, x, sc)


def input_version(model) -> int:
    """Input version a network was trained with (``arch["inputs"]``; 1 = session-1 inputs)."""
    return int(getattr(model, "inputs", 1))


def square_norm(data: np.ndarray, vertices: list[np.ndarray], areas: np.ndarray,
                version: int = 2) -> tuple[float, ...]:
    """The atlas-level normalisation of :func:`square_inputs` for these squares (to score subsets).

    Version 2: ``(dark, bright, median log-intensity, log spread, median area)``;
    version 1: ``(mean, std, median area)``.
    """
    raw = C.square_crops(data, vertices)
    med_area = float(np.median(np.asarray(areas, float).clip(1.0))) if len(areas) else 1.0
    if version == 1:
        return (*C.square_normalisation(raw), med_area)
    dark, _, bright = C.image_levels(data)
    return (dark, bright, *C.square_population(C.square_log_crops(raw, dark, bright)), med_area)


def square_inputs(
    data: np.ndarray,
    vertices: list[np.ndarray],
    areas: np.ndarray,
    norm: tuple[float, ...] | None = None,
    i0: float | None = None,
    *,
    version: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised crops ``(N, 1, S, S)`` and scalars ``(N, 3)``: log relative area, log(I/I0), I0 known.

    Version 2 (robust): ``(log(I - dark) - M) / S`` with ``dark`` the atlas's
    opaque-bar level, ``M``/``S`` the median/robust spread of its squares'
    centre log-intensities (:func:`ptolemy_core.models.crops.square_population`):
    unchanged by dose, gain, detector offset and display gamma. Version 1: the
    session-1 inputs (mean/std of the raw crops). ``norm`` fixes the atlas-level
    values (see :func:`square_norm`) so a subset scores exactly as in the full set.
    """
    raw = C.square_crops(data, vertices)
    areas = np.asarray(areas, float)
    if version == 1:
        od, known = C.square_optical_depth(raw, i0)
        if norm is None:
            mean, std = C.square_normalisation(raw)
            med = float(np.median(areas.clip(1.0))) if len(areas) else 1.0
        else:
            mean, std = float(norm[0]), float(norm[1]) or 1.0
            med = float(norm[2]) if len(norm) > 2 else float(np.median(areas.clip(1.0)))
        x = ((raw - mean) / std).astype(np.float32)[:, None]
    else:
        if norm is None:
            dark, _, bright = C.image_levels(data)
            norm = (dark, bright, *C.square_population(C.square_log_crops(raw, dark, bright)),
                    float(np.median(areas.clip(1.0))) if len(areas) else 1.0)
        if len(norm) != 5:
            raise PtolemyInputError("norm for this square model must be (dark, bright, median, spread, "
                                    "median_area); use square_norm()")
        dark, bright, m, sd, med = (float(v) for v in norm)
        od, known = C.square_optical_depth_v2(raw, i0, dark)
        x = ((C.square_log_crops(raw, dark, bright) - m) / sd).clip(-C.SQUARE_CLIP, C.SQUARE_CLIP)
        x = x.astype(np.float32)[:, None]
    la = np.log(areas.clip(1.0) / max(med, 1.0)).astype(np.float32)
    return x, np.stack([la, od, known], axis=1).astype(np.float32)


#: Classifier inputs always go through the network in chunks of exactly this many crops
#: (the last chunk zero-padded): a batched convolution may sum in a batch-size dependent
#: order, a fixed chunk size makes every crop's score bit-identical alone or in a batch.
CHUNK = 16


def _chunked(model, tensors: list) -> np.ndarray:
    import torch

    n = len(tensors[0])
    out = np.zeros(n, np.float64)
    with torch.inference_mode():
        for s in range(0, n, CHUNK):
            parts = [t[s:s + CHUNK] for t in tensors]
            k = len(parts[0])
            if k < CHUNK:
                parts = [torch.cat([p, p.new_zeros((CHUNK - k, *p.shape[1:]))]) for p in parts]
            out[s:s + k] = torch.sigmoid(model(*parts)[:k].double()).numpy()
    return out


def _run_classifier(model, x: np.ndarray, *extra: np.ndarray) -> np.ndarray:
    import torch

    return _chunked(model, [torch.from_numpy(np.ascontiguousarray(a)) for a in (x, *extra)])


# ----------------------------------------------------------------------------- holes
def hole_radius_full(target: Target) -> float:
    """Hole radius (full-res px): ``features["radius"]``, else from the crop box."""
    r = target.features.get("radius") if target.features else None
    if r is not None and np.isfinite(float(r)) and float(r) > 0:
        return float(r)
    v = target.vertices_array()
    sides = np.hypot(*(np.roll(v, -1, axis=0) - v).T)
    return max(1.0, 0.5 * float(sides.min()) / C.HOLE_RIM)


def hole_inputs(work: np.ndarray, centres_work: np.ndarray, radii_work: np.ndarray,
                i0: float | None = None, *, version: int = 2) -> tuple[list[np.ndarray], float]:
    """Hole-CNN crops (list, sizes vary with the radius) and the I0-known flag.

    Version 2: three channels (:func:`ptolemy_core.models.crops.hole_crops_v2`);
    version 1: the session-1 two channels (:func:`ptolemy_core.models.crops.hole_crops`).
    Every value depends on the image and that hole only (image-level percentiles,
    never the other targets).
    """
    centres_work = np.asarray(centres_work, float).reshape(-1, 2)
    halves = np.array([C.hole_crop_half(r) for r in np.asarray(radii_work, float).ravel()], int)
    if version == 1:
        ref, known = C.hole_reference(work, i0)

        def make(c, h):
            return C.hole_crops(work, c, h, ref)
    else:
        known = i0 is not None and bool(np.isfinite(i0)) and i0 > 0
        levels = C.image_levels(work)[1:]

        def make(c, h):
            return C.hole_crops_v2(work, c, h, i0 if known else None, levels)
    crops: list[np.ndarray] = [None] * len(halves)  # type: ignore[list-item]
    for h in np.unique(halves):  # one vectorised lookup per crop size
        idx = np.flatnonzero(halves == h)
        for i, c in zip(idx, make(centres_work[idx], int(h)), strict=True):
            crops[i] = c
    return crops, float(known)


def hole_cnn_scores(
    image: Image | np.ndarray,
    targets: list[Target],
    working_scale: float,
    *,
    i0: float | None = None,
    work: np.ndarray | None = None,
    model=None,
) -> np.ndarray | None:
    """Hole-classifier probability (0..1) for each hole.

    Parameters
    ----------
    image : Image or ndarray
        The square image (full resolution).
    targets : list of Target
        Holes (``center``; ``features["radius"]`` in full-res px when known).
    working_scale : float
        Input px per working px, as chosen by the hole finder.
    i0 : float, optional
        Vacuum intensity (raw counts per input pixel; ``HoleResult.i0``). Gives the
        network the optical depth, i.e. the ice thickness; without it the
        image's 99.5th percentile is the reference (relative thickness only).
    work : ndarray, optional
        The working-scale image if the caller already has it (else computed
        with :func:`ptolemy_core.models.crops.to_working`).
    model : HoleCNN, optional
        A network to use instead of the shipped one.

    Returns
    -------
    ndarray or None
        One score per target; None when no weights are shipped.
    """
    model = model if model is not None else load_model("hole_cnn")
    if model is None:
        return None
    if not targets:
        return np.zeros(0, np.float64)
    if not (np.isfinite(working_scale) and working_scale > 0):
        raise PtolemyInputError(f"working_scale must be a positive number, got {working_scale!r}")
    if work is None:
        work = C.to_working(as_image(image).data, working_scale)
    centres = C.full_to_work(np.array([t.center for t in targets], float), working_scale)
    radii = np.array([hole_radius_full(t) for t in targets]) / working_scale
    crops, known = hole_inputs(work, centres, radii, i0, version=input_version(model))
    return hole_scores_from_crops(model, crops, known)


def hole_scores_from_crops(model, crops: list[np.ndarray], i0_known: float) -> np.ndarray:
    """Score crops grouped by size, in fixed-size chunks (scores never depend on the batch)."""
    import torch

    out = np.zeros(len(crops), np.float64)
    by_size: dict[tuple[int, ...], list[int]] = {}
    for i, c in enumerate(crops):
        by_size.setdefault(c.shape, []).append(i)
    for idx in by_size.values():
        x = torch.from_numpy(np.stack([crops[i] for i in idx]))
        out[idx] = _chunked(model, [x, torch.full((len(idx),), float(i0_known))])
    return out


# ----------------------------------------------------------------------------- U-Net
def unet_probability(work: np.ndarray, channel: str = "hole", *, model=None) -> np.ndarray | None:
    """Probability map (float32, same shape as ``work``) of hole centres.

    Parameters
    ----------
    work : (H, W) array
        The hole finder's working-scale image (holes ~10-20 px across), raw
        intensities; z-scored here over the whole image.
    channel : {"hole", "good", "both"}
        ``"hole"``: every hole's centre (localisation); ``"good"``: centres of
        holes worth collecting (ranking); ``"both"``: ``(2, H, W)``.
    model : HoleUNet, optional
        A network to use instead of the shipped one.

    Returns
    -------
    ndarray or None
        None when no U-Net weights are shipped.
    """
    from .unet import CHANNELS

    if channel not in (*CHANNELS, "both"):
        raise PtolemyInputError(f"channel must be one of {', '.join(CHANNELS)}, both; got {channel!r}")
    model = model if model is not None else load_model("unet")
    if model is None:
        return None
    work = np.asarray(work, dtype=np.float32)
    if work.ndim != 2 or min(work.shape) < 2:
        raise PtolemyInputError(f"unet_probability needs a 2-D image, got shape {work.shape}")
    prob = _unet_tiled(model, work)
    if channel == "both":
        return prob
    return prob[CHANNELS.index(channel)]


def _unet_tiled(model, work: np.ndarray, tile: int | None = None) -> np.ndarray:
    """Sigmoid maps ``(2, H, W)`` of the whole-image z-scored ``work``, in overlapping tiles if large.

    ``tile`` (working px, a multiple of the network's :attr:`~HoleUNet.multiple`)
    overrides the tile side (tests).
    """
    import torch

    _channels_last(model)
    mean = float(work.mean(dtype=np.float64))
    std = float(work.std(dtype=np.float64)) or 1.0
    z = ((work - mean) / std).astype(np.float32)
    h, w = z.shape
    f = int(getattr(model, "unshuffle", 1))
    margin = _MARGIN * f
    if tile is None:
        whole = h * w <= _WHOLE_MAX * f * f       # memory scales with the internal pixels
        tile = _TILE * f
    else:
        whole = h <= tile + 2 * margin and w <= tile + 2 * margin
    out = np.zeros((2, h, w), np.float32)
    with torch.inference_mode():
        if whole:
            return _probabilities(model, z).numpy()
        # Overlapping tiles: each output pixel comes from the tile where it is interior.
        for r0 in range(0, h, tile):
            for c0 in range(0, w, tile):
                ra, rb = max(0, r0 - margin), min(h, r0 + tile + margin)
                ca, cb = max(0, c0 - margin), min(w, c0 + tile + margin)
                p = _probabilities(model, np.ascontiguousarray(z[ra:rb, ca:cb])).numpy()
                re, ce = min(h, r0 + tile), min(w, c0 + tile)
                out[:, r0:re, c0:ce] = p[:, r0 - ra:re - ra, c0 - ca:ce - ca]
    return out


def _probabilities(model, z: np.ndarray):
    """(C, H, W) contiguous sigmoid maps of one z-scored image (channels-last input)."""
    import torch

    x = torch.from_numpy(z)[None, None].contiguous(memory_format=torch.channels_last)
    if hasattr(model, "probabilities"):
        return model.probabilities(x)
    return torch.sigmoid(model(x)[0]).contiguous()


def _channels_last(model) -> None:
    """Store the network's weights channels-last once (in place; idempotent).

    With channels-last weights and input, oneDNN's convolutions on these
    few-channel maps run ~1.7× faster on a 2-core CPU than in the default
    layout (same results to ~1e-5; deterministic run to run).
    """
    import torch

    if not getattr(model, "_ptolemy_channels_last", False):
        model.to(memory_format=torch.channels_last)
        model._ptolemy_channels_last = True


def unet_hole_centres(
    work: np.ndarray | None = None,
    *,
    prob: np.ndarray | None = None,
    threshold: float = PROB_THRESHOLD,
    return_mass: bool = False,
):
    """Centroids (working px, ``(row, col)``) of high-probability regions of the ``"hole"`` map.

    Parameters
    ----------
    work : ndarray, optional
        Working-scale image (the map is computed from it) ...
    prob : ndarray, optional
        ... or a probability map computed already.
    threshold : float
        Pixel probability above which a pixel belongs to a region.
    return_mass : bool
        Also return each region's summed probability.

    Returns
    -------
    (N, 2) ndarray, [(N,) ndarray], or None when no U-Net weights are shipped
    """
    if prob is None:
        if work is None:
            raise PtolemyInputError("unet_hole_centres needs work or prob")
        prob = unet_probability(work, "hole")
        if prob is None:
            return None
    mask = prob > threshold
    labels, n = ndi.label(mask)
    if n == 0:
        empty = np.zeros((0, 2))
        return (empty, np.zeros(0)) if return_mass else empty
    idx = np.arange(1, n + 1)
    centres = np.asarray(ndi.center_of_mass(prob, labels, idx), float).reshape(-1, 2)
    mass = np.asarray(ndi.sum(prob, labels, idx), float)
    return (centres, mass) if return_mass else centres


@dataclass
class LatticeFit:
    """A lattice fitted to U-Net centroids (working-scale pixels).

    Attributes
    ----------
    basis : (2, 2) ndarray
        Rows are the two basis vectors ``(row, col)``.
    origin : (2,) ndarray
        A lattice node ``(row, col)``.
    nodes : (M, 2) ndarray
        Every node whose centre lies inside the image.
    indices : (M, 2) int ndarray
        ``[i, j]`` of each node: ``node = origin + i*basis[0] + j*basis[1]``.
    cost : float
        ``10 * missed + 1 * extra`` of the chosen lattice (units: holes).
    node_prob : (M,) ndarray
        Summed ``"hole"`` probability in each node's crop (filled by :func:`unet_lattice`).
    """

    basis: np.ndarray
    origin: np.ndarray
    nodes: np.ndarray
    indices: np.ndarray
    cost: float
    node_prob: np.ndarray = field(default_factory=lambda: np.zeros(0))


def _reduce(v1: np.ndarray, v2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lagrange–Gauss reduction of many bases at once (shortest equivalent basis)."""
    v1, v2 = v1.copy(), v2.copy()
    for _ in range(8):
        swap = (v2 ** 2).sum(1) < (v1 ** 2).sum(1)
        v1[swap], v2[swap] = v2[swap].copy(), v1[swap].copy()
        mu = np.round((v1 * v2).sum(1) / np.maximum((v1 ** 2).sum(1), 1e-9))
        if not mu.any():
            break
        v2 = v2 - mu[:, None] * v1
    return v1, v2


def _frac_residual(points: np.ndarray, origins: np.ndarray, basis: np.ndarray):
    """Lattice coordinates of ``points`` for many lattices: (P, N, 2) rounded indices and residual norms."""
    inv = np.linalg.inv(basis.transpose(0, 2, 1))            # (P, 2, 2): solves d = B^T ij
    d = points[None, :, :] - origins[:, None, :]             # (P, N, 2)
    ij = np.einsum("pab,pnb->pna", inv, d)
    ij_round = np.round(ij)
    resid = np.einsum("pab,pnb->pna", basis.transpose(0, 2, 1), ij - ij_round)
    return ij_round, np.hypot(resid[..., 0], resid[..., 1])


def fit_anchor_lattice(
    centres: np.ndarray,
    masses: np.ndarray | None,
    shape: tuple[int, int],
    *,
    kind: str = "general",
    k_neighbours: int = 6,
    missed_weight: float = 10.0,
    extra_weight: float = 1.0,
    min_spacing: float = 4.0,
) -> LatticeFit | None:
    """Fit a lattice through the best anchor points (paper, section 2.3), vectorised.

    Candidate lattices come from each centroid (the anchor) and its
    ``k_neighbours`` nearest centroids: ``kind="square"`` is the paper's
    method (anchor + one neighbour; the second basis vector is the first turned
    by 90°); ``kind="general"`` pairs two neighbours, which also covers oblique
    (tilted) and hexagonal lattices. Each candidate costs
    ``missed_weight * missed + extra_weight * extra`` where *missed* counts
    centroids (weighted by min(1, mass)) farther than a quarter spacing from
    any node and *extra* counts nodes inside the image that no centroid
    explains. The best few candidates are refined by least squares on their
    matched centroids and re-costed exactly; the cheapest wins.

    Parameters
    ----------
    centres : (N, 2) array
        Centroids ``(row, col)`` (working px).
    masses : (N,) array, optional
        Their summed probabilities (default 1 each).
    shape : (rows, cols)
        Image shape: nodes are kept when their centre lies inside it.
    kind : {"general", "square"}

    Returns
    -------
    LatticeFit or None
        None with fewer than 3 centroids (no lattice can be trusted).
    """
    if kind not in ("general", "square"):
        raise PtolemyInputError(f"lattice kind must be 'general' or 'square', got {kind!r}")
    pts = np.asarray(centres, float).reshape(-1, 2)
    n = len(pts)
    if n < 3:
        return None
    w = np.ones(n) if masses is None else np.minimum(1.0, np.asarray(masses, float))
    from scipy.spatial import cKDTree

    k = min(k_neighbours, n - 1)
    # Anchors: the MAX_ANCHORS centroids nearest the image centre (any hole of a lattice is
    # as good an anchor as another; this bounds the cost on images with thousands of holes).
    centre = np.array([(shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0])
    anc = np.argsort(np.hypot(*(pts - centre).T), kind="stable")[:MAX_ANCHORS]
    _, nb = cKDTree(pts).query(pts[anc], k=k + 1)
    nb = nb[:, 1:]                                                        # (A, k)
    if kind == "square":
        origin_idx = np.repeat(anc, k)
        v1 = pts[nb.ravel()] - pts[origin_idx]
        v2 = np.stack([-v1[:, 1], v1[:, 0]], axis=1)
    else:
        a, b = np.triu_indices(k, 1)
        origin_idx = np.repeat(anc, len(a))
        v1 = (pts[nb[:, a]] - pts[anc][:, None, :]).reshape(-1, 2)
        v2 = (pts[nb[:, b]] - pts[anc][:, None, :]).reshape(-1, 2)
    v1, v2 = _reduce(v1, v2)
    len1, len2 = np.hypot(*v1.T), np.hypot(*v2.T)
    cross = np.abs(v1[:, 0] * v2[:, 1] - v1[:, 1] * v2[:, 0])
    ok = (len1 >= min_spacing) & (cross > 0.5 * len1 * len2)             # angle between 30° and 150°
    if not ok.any():
        return None
    # Candidates with the same reduced basis and origin class are duplicates: keep one.
    key = np.round(np.c_[v1, v2] * 2).astype(np.int64)
    _, first = np.unique(np.c_[key, origin_idx][ok], axis=0, return_index=True)
    cand = np.flatnonzero(ok)[np.sort(first)]
    basis = np.stack([v1[cand], v2[cand]], axis=1)                        # (P, 2, 2)
    origins = pts[origin_idx[cand]]
    area = float(shape[0] * shape[1])
    costs = np.empty(len(cand))
    for s in range(0, len(cand), 512):                                    # bounded memory
        sl = slice(s, s + 512)
        _, resid = _frac_residual(pts, origins[sl], basis[sl])
        tol = 0.25 * np.minimum(len1[cand[sl]], len2[cand[sl]])
        hit = resid <= tol[:, None]
        missed = ((~hit) * w).sum(1)
        n_nodes = area / np.abs(np.linalg.det(basis[sl]))
        extra = np.maximum(0.0, n_nodes - hit.sum(1))
        costs[sl] = missed_weight * missed + extra_weight * extra
    best: LatticeFit | None = None
    for p in np.argsort(costs, kind="stable")[:8]:
        fit = _refine(pts, w, basis[p], origins[p], shape, missed_weight, extra_weight)
        if fit is not None and (best is None or fit.cost < best.cost):
            best = fit
    return best


def _nodes_in(shape, basis: np.ndarray, origin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    corners = np.array([[0, 0], [0, shape[1] - 1], [shape[0] - 1, 0], [shape[0] - 1, shape[1] - 1]], float)
    ij = (corners - origin) @ np.linalg.inv(basis)
    lo, hi = np.floor(ij.min(0)) - 1, np.ceil(ij.max(0)) + 1
    ii, jj = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1), indexing="ij")
    idx = np.stack([ii.ravel(), jj.ravel()], axis=1)
    nodes = origin + idx @ basis
    inside = ((nodes[:, 0] >= -0.5) & (nodes[:, 0] <= shape[0] - 0.5)
              & (nodes[:, 1] >= -0.5) & (nodes[:, 1] <= shape[1] - 0.5))
    return nodes[inside], idx[inside].astype(int)


def _refine(pts, w, basis, origin, shape, missed_weight, extra_weight) -> LatticeFit | None:
    for _ in range(2):
        if abs(np.linalg.det(basis)) < 1.0:
            return None
        ij_round, resid = _frac_residual(pts, origin[None], basis[None])
        tol = 0.25 * np.hypot(*basis.T).min()
        hit = resid[0] <= tol
        if hit.sum() < 3:
            return None
        # Least squares: pts ≈ origin + i*b1 + j*b2 on matched centroids (weights = mass).
        ij = ij_round[0][hit]
        a = np.c_[np.ones(len(ij)), ij]
        sw = np.sqrt(w[hit])[:, None]
        sol, *_ = np.linalg.lstsq(a * sw, pts[hit] * sw, rcond=None)
        if np.linalg.matrix_rank(a) < 3:
            break
        origin, basis = sol[0], sol[1:3]
    nodes, idx = _nodes_in(shape, basis, origin)
    if len(nodes) == 0 or len(nodes) > 200_000:
        return None
    _, resid = _frac_residual(pts, origin[None], basis[None])
    tol = 0.25 * np.hypot(*basis.T).min()
    hit = resid[0] <= tol
    missed = float(((~hit) * w).sum())
    # A node is explained when a centroid lies within tol of it.
    from scipy.spatial import cKDTree

    d, _ = cKDTree(pts).query(nodes, k=1)
    extra = float(np.count_nonzero(d > tol))
    return LatticeFit(basis=np.asarray(basis, float), origin=np.asarray(origin, float), nodes=nodes,
                      indices=idx, cost=missed_weight * missed + extra_weight * extra)


def node_probability(prob: np.ndarray, nodes: np.ndarray, half: float) -> np.ndarray:
    """Summed probability in a ``(2*half+1)``² box around each node (bilinear lookup of a box sum)."""
    if len(nodes) == 0:
        return np.zeros(0)
    size = max(1, int(round(2 * half + 1)))
    box = ndi.uniform_filter(prob.astype(np.float32), size=size, mode="constant") * float(size * size)
    return ndi.map_coordinates(box, np.asarray(nodes, float).T, order=1, mode="constant")


def unet_lattice(
    work: np.ndarray | None = None,
    *,
    prob: np.ndarray | None = None,
    kind: str = "general",
) -> LatticeFit | None:
    """U-Net centroids + anchor lattice fit + summed probability per node (Table 3).

    Nodes with ``node_prob > NODE_PROB_THRESHOLD`` are the paper's
    "U-Net + lattice + probability threshold" holes. Returns None without
    weights or when fewer than 3 centroids are found.
    """
    if prob is None:
        if work is None:
            raise PtolemyInputError("unet_lattice needs work or prob")
        prob = unet_probability(work, "hole")
        if prob is None:
            return None
    centres, mass = unet_hole_centres(prob=prob, return_mass=True)
    fit = fit_anchor_lattice(centres, mass, prob.shape, kind=kind)
    if fit is None:
        return None
    half = 0.25 * float(np.hypot(*fit.basis.T).min())
    fit.node_prob = node_probability(prob, fit.nodes, half)
    return fit


def unet_hole_scores(
    work: np.ndarray,
    targets: list[Target],
    working_scale: float,
    *,
    prob_good: np.ndarray | None = None,
) -> np.ndarray | None:
    """Summed ``"good"`` probability inside each hole, mapped to 0..1 by ``sum / (sum + BLOB_MASS)``.

    ``BLOB_MASS`` (:data:`BLOB_MASS`) is the summed probability of one confident
    hole-centre blob (≈ 2πσ² of the training blur), so a clearly good hole
    scores ≳ 0.5 and the map never saturates (no ties at 1.0).

    Parameters
    ----------
    work : ndarray
        Working-scale image.
    targets : list of Target
        Holes (full-res ``center``, ``features["radius"]``).
    working_scale : float
        Input px per working px.
    prob_good : ndarray, optional
        The ``"good"`` map if already computed.

    Returns
    -------
    ndarray or None
        None when no U-Net weights are shipped. Each value depends only on
        the image and that hole's position/radius.
    """
    if prob_good is None:
        prob_good = unet_probability(work, "good")
        if prob_good is None:
            return None
    if not targets:
        return np.zeros(0)
    centres = C.full_to_work(np.array([t.center for t in targets], float), working_scale)
    radii = np.array([hole_radius_full(t) for t in targets]) / working_scale
    # Sum over the hole's disk (box of side 2r, radius-dependent: exact per hole).
    sums = np.array([_disk_sum(prob_good, c, r) for c, r in zip(centres, radii, strict=True)])
    return sums / (sums + BLOB_MASS)


def _disk_sum(prob: np.ndarray, centre: np.ndarray, radius: float) -> float:
    r = max(1.0, float(radius))
    r0, r1 = int(np.floor(centre[0] - r)), int(np.ceil(centre[0] + r)) + 1
    c0, c1 = int(np.floor(centre[1] - r)), int(np.ceil(centre[1] + r)) + 1
    ra, rb = max(0, r0), min(prob.shape[0], r1)
    ca, cb = max(0, c0), min(prob.shape[1], c1)
    if ra >= rb or ca >= cb:
        return 0.0
    rr, cc = np.ogrid[ra:rb, ca:cb]
    inside = (rr - centre[0]) ** 2 + (cc - centre[1]) ** 2 <= r * r
    return float(prob[ra:rb, ca:cb][inside].sum())
