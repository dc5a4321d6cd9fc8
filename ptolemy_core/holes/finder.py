"""``find_holes``: every hole of a holey-film square image, lattice-aware."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import PtolemyInputError, PtolemyUnavailableError
from ..image import Image, as_image
from ..targets import Target, rank
from . import lattice as lat
from . import locate, measure, score

#: Working scale aims at this many working pixels per lattice period (holes ~10–20 px across).
TARGET_PITCH_WORK = 24.0
#: Opaque-bar level, relative to the darker of film and hole (carbon films).
BAR_LEVEL = 0.55
#: A hole keeps its own measured centre (not the fitted lattice node) above this template match
#: (dev set: 0.3 -> 0.5 cut the median centre error of faint holes by ~10 %; the lattice fit
#: from all holes is better than a weakly matched single hole).
CENTRE_MIN_NCC = 0.5


@dataclass
class HoleResult:
    """Holes found in one image.

    Attributes
    ----------
    targets : list of Target
        ``kind="hole"``, ranked (highest score first).
    lattice : Lattice or None
        In full-resolution pixels.
    i0 : float or None
        Vacuum intensity used for ice thickness (caller's, or estimated from
        empty holes), None when unknown.
    working_scale : float
        Input pixels per working pixel.
    notes : list of str
    """

    targets: list[Target]
    lattice: lat.Lattice | None
    i0: float | None
    working_scale: float
    notes: list[str] = field(default_factory=list)


def find_holes(
    image: Image | np.ndarray,
    *,
    pixel_size_nm: float | None = None,
    i0: float | None = None,
    method: str = "lattice",
    scorer: str = "auto",
) -> HoleResult:
    """Find, measure and score every hole of a medium-magnification image.

    Parameters
    ----------
    image : Image or 2-D array
        Raw intensities (counts), any size.
    pixel_size_nm : float, optional
        Recorded in features when known; the finder does not need it.
    i0 : float, optional
        Vacuum intensity for ice thickness ``t = λ·ln(I0/I)``; estimated from
        empty holes in the image when not given.
    method : {"lattice", "unet"}
        ``"lattice"``: periodicity + template matching + robust lattice fit.
        ``"unet"``: the learned U-Net probability map (needs shipped weights).
    scorer : {"auto", "interpretable", "cnn"}
        ``"auto"`` uses the interpretable model (the shipped hole CNN collapses on real
        8-bit images, so it is opt-in); ``"cnn"`` uses the hole CNN (raises when no weights ship).

    Returns
    -------
    HoleResult
    """
    img = as_image(image, pixel_size_nm)
    notes = list(img.notes)
    if method not in ("lattice", "unet"):
        raise PtolemyInputError(f"unknown hole-finding method {method!r} (use 'lattice' or 'unet')")
    if scorer not in ("auto", "interpretable", "cnn"):
        raise PtolemyInputError(f"unknown hole scorer {scorer!r} (use 'auto', 'interpretable' or 'cnn')")
    if i0 is not None and not (np.isfinite(i0) and i0 > 0):
        raise PtolemyInputError(f"i0 must be a positive number, got {i0!r}")
    data = img.data
    h, w = data.shape
    step = (max(1, h // 256), max(1, w // 256))
    sub = data[::step[0], ::step[1]]
    if float(sub.max()) - float(sub.min()) <= 1e-6 * max(1.0, abs(float(sub.max()))):
        if float(data.max()) - float(data.min()) <= 1e-6 * max(1.0, abs(float(data.max()))):
            return HoleResult([], None, i0, 1.0, notes + ["constant image: no holes"])
    if min(h, w) < 24:
        return HoleResult([], None, i0, 1.0, notes + [f"image {h}x{w} is too small to hold a hole lattice"])
    diag: dict = {}
    est = lat.estimate_basis(data, diagnostics=diag)
    if method == "unet":
        return _find_unet(img, est, i0, scorer, notes)
    if est is None:
        reason = diag.get("reason", "no periodicity")
        return HoleResult([], None, i0, 1.0, notes + [f"no hole lattice found ({reason})"])
    prep = _prepare(data, est[0])
    if prep is None:
        return HoleResult([], None, i0, 1.0, notes + ["no hole lattice found (no hole in the cell)"])
    s, work, basis, pitch_w, flat, cf, smooth, bar_mask, model = prep
    cmap = locate.CorrelationMap(flat, model.template)
    origin = model.origin
    search = max(2, int(math.ceil(0.18 * pitch_w)))

    # grow the fit outward from the image centre so basis errors never exceed the search window
    centre = np.array([(work.shape[0] - 1) / 2.0, (work.shape[1] - 1) / 2.0])
    kmat = np.linalg.inv(basis.T)
    origin = origin + basis.T @ np.rint(kmat @ (centre - origin))
    reach = 5.0 * pitch_w
    for _ in range(6):
        idx, nodes = _nodes(work.shape, basis, origin, margin=pitch_w)
        near = np.linalg.norm(nodes - centre, axis=1) <= reach
        cen, ncc = cmap.refine(nodes[near], search)
        search = max(2, int(math.ceil(0.08 * pitch_w)))  # the fit is close now: smaller windows
        good = ncc > 0.25
        if good.sum() >= 6:
            o, b, inl = lat.fit_lattice(cen[good], idx[near][good], weights=ncc[good] ** 2)
            origin, basis = o, b
        if near.all():
            break
        reach *= 2.5
    kmat = np.linalg.inv(basis.T)
    origin = origin + basis.T @ np.rint(kmat @ (centre - origin))

    # final per-hole centres: measured where confident and consistent, else the fitted node
    idx, nodes = _nodes(work.shape, basis, origin, margin=pitch_w)
    cen, ncc = cmap.refine(nodes, max(2, int(math.ceil(0.1 * pitch_w))))
    del cmap
    dev = np.linalg.norm(cen - nodes, axis=1)
    use = (ncc > CENTRE_MIN_NCC) & (dev < 0.25 * model.b + 1.0)
    centres = np.where(use[:, None], cen, nodes)
    return _assemble(img, work, s, smooth, cf, centres, idx, ncc, model, bar_mask, basis, origin, i0,
                     scorer, notes)


def _prepare(data: np.ndarray, basis_full: np.ndarray, scale: int | None = None, work=None):
    """Working image, flattened copy, coarse smooth copy, bar mask and the folded-cell model."""
    pitch = float(np.linalg.norm(basis_full, axis=1).min())
    s = scale if scale is not None else max(1, int(pitch / TARGET_PITCH_WORK))
    work = lat.bin_image(data, s) if work is None else work
    basis = basis_full / s
    pitch_w = pitch / s
    med = float(np.median(work[::4, ::4]))
    flat = lat.flatten(work, sigma=4 * pitch_w, clip=3.0)
    cell_area = abs(float(np.linalg.det(basis)))
    # masks and visibility work on a coarser, smoothed copy (memory and time at 8192²)
    cf = max(1, int(0.1 * pitch_w))
    smooth = lat.gaussian_filter2(lat.bin_image(work, cf), max(0.7, 0.12 * pitch_w / cf))
    bar_mask = locate.dark_mask(smooth, 0.3 * med, 1.5 * cell_area / cf ** 2) if med > 0 else None

    model = locate.lattice_average(work, flat, basis, _upsample_mask(bar_mask, cf, work.shape))
    if model is None:
        return None
    # bars: much darker than both film and holes, and large (contamination blobs are smaller);
    # 8-bit displays and read-out offsets keep real bars well above zero, hence a relative level
    dark_level = BAR_LEVEL * min(model.film_level, model.hole_level)
    if dark_level > 0:
        bar_mask = locate.dark_mask(smooth, dark_level, 1.5 * cell_area / cf ** 2)
    return s, work, basis, pitch_w, flat, cf, smooth, bar_mask, model


def _assemble(img, work, s, smooth, cf, centres, idx, ncc, model, bar_mask, basis, origin, i0, scorer,
              notes) -> HoleResult:
    """Visibility, measurements, scores and targets for candidate hole centres (working px)."""
    h, w = img.data.shape
    # which nodes are visible holes
    vis, cut = _visibility(work, smooth, cf, centres, model, bar_mask)
    keep = (vis >= 0.5) & (centres[:, 0] >= -0.5) & (centres[:, 0] <= work.shape[0] - 0.5) \
        & (centres[:, 1] >= -0.5) & (centres[:, 1] <= work.shape[1] - 0.5)
    keep &= _centre_in_full(centres, s, (h, w))
    centres, idx, vis, cut, ncc_k = centres[keep], idx[keep], vis[keep], cut[keep], ncc[keep]

    feats = measure.measure_holes(work, centres, model, vis, raw=img.data, scale=s)
    i0_used, i0_note = measure.choose_i0(i0, feats, model)
    if i0_note:
        notes.append(i0_note)
    thickness = measure.thickness(feats["mean"], i0_used)
    scores = score.interpretable_scores(feats, thickness)

    lattice_full = lat.Lattice(
        kind=lat.classify(basis * s),
        basis=np.vstack(lat.reduce_basis(basis[0] * s, basis[1] * s)),
        origin=(origin + 0.5) * s - 0.5,
    )
    half_side = max(model.a, model.b) * s
    # plain Python numbers once per column: thousands of holes at 4096²+ (numpy scalars per
    # field would cost more than the measurements)
    rows = ((centres[:, 0] + 0.5) * s - 0.5).tolist()
    cols = ((centres[:, 1] + 0.5) * s - 0.5).tolist()
    thick = [t if math.isfinite(t) else None for t in np.asarray(thickness, float).tolist()]
    radius = float(math.sqrt(model.a * model.b) * s)
    ellipse = {"a": float(model.a * s), "b": float(model.b * s), "angle_deg": float(model.angle_deg)}
    area = float((2 * half_side) ** 2)
    names = ("mean", "std", "rel_brightness", "std_rel", "dark_fraction", "ring_dark_fraction",
             "noise_excess", "dark_od", "edge_clearance")
    col = {k: np.asarray(feats[k], float).tolist() for k in names}
    score_l, cut_l, idx_l = np.asarray(scores, float).tolist(), cut.tolist(), idx.astype(int).tolist()
    vis_l, ncc_l = np.round(vis, 3).astype(float).tolist(), np.asarray(ncc_k, float).tolist()
    targets = []
    for k, (r, c) in enumerate(zip(rows, cols, strict=True)):
        verts = ((r - half_side, c - half_side), (r - half_side, c + half_side),
                 (r + half_side, c + half_side), (r + half_side, c - half_side))
        targets.append(Target(
            kind="hole",
            center=(r, c),
            vertices=verts,
            area=area,
            score=score_l[k],
            brightness=col["mean"][k],
            features={
                "radius": radius,
                "ellipse": dict(ellipse),
                "mean": col["mean"][k],
                "std": col["std"][k],
                "ice_thickness_nm": thick[k],
                "cut": bool(cut_l[k]),
                "lattice_index": idx_l[k],
                "visible_fraction": vis_l[k],
                "relative_brightness": col["rel_brightness"][k],
                "std_rel": col["std_rel"][k],
                "dark_fraction": col["dark_fraction"][k],
                "ring_dark_fraction": col["ring_dark_fraction"][k],
                "noise_excess": col["noise_excess"][k],
                "dark_od": col["dark_od"][k],
                "edge_clearance": col["edge_clearance"][k],
                "match": ncc_l[k],
            },
        ))
    if scorer == "cnn" and targets:
        learned = score.cnn_scores(img, targets, float(s), i0=i0_used)
        if learned is not None:
            targets = [t.with_score(v) for t, v in zip(targets, learned, strict=True)]
        else:
            raise PtolemyUnavailableError(
                "hole CNN scorer unavailable: no shipped hole CNN weights (use scorer='interpretable')")
    if model.sign < 0:
        notes.append("holes are darker than the film (inverted contrast)")
    return HoleResult(rank(targets), lattice_full, i0_used, float(s), notes)


def _find_unet(img: Image, est, i0, scorer, notes) -> HoleResult:
    """The paper's route: U-Net centroids + anchor-pair lattice fit + probability threshold.

    Uses :func:`ptolemy_core.models.api.unet_lattice` (models issue) on the working
    image (scale from the periodicity when found, so holes are ~10–20 px across as
    the U-Net was trained), keeps nodes whose summed probability passes the paper's
    threshold, then measures and scores them exactly like the lattice method.
    """
    if not score.models_shipped("unet"):
        raise PtolemyUnavailableError(
            "method 'unet' needs the hole U-Net weights, which this installation does not ship; "
            "use method 'lattice'")
    from ..models import api

    data = img.data
    if est is not None:
        pitch = float(np.linalg.norm(est[0], axis=1).min())
        s = max(1, int(pitch / TARGET_PITCH_WORK))
    else:
        s = max(1, int(math.ceil(max(data.shape) / 1440)))
    work = lat.bin_image(data, s)
    if api.unet_probability(work[:32, :32]) is None:
        raise PtolemyUnavailableError(
            "method 'unet' needs the hole U-Net weights, which this installation does not ship; "
            "use method 'lattice'")
    fit = api.unet_lattice(work)
    if fit is None or len(fit.nodes) == 0:
        return HoleResult([], None, i0, float(s), notes + ["U-Net found no hole lattice"])
    basis = np.vstack(lat.reduce_basis(fit.basis[0], fit.basis[1]))
    prep = _prepare(data, basis * s, scale=s, work=work)
    if prep is None:
        return HoleResult([], None, i0, float(s), notes + ["U-Net lattice: no hole in the folded cell"])
    s, work, basis, pitch_w, flat, cf, smooth, bar_mask, model = prep
    keep = fit.node_prob > api.NODE_PROB_THRESHOLD
    centres = np.asarray(fit.nodes, float)[keep]
    idx = np.asarray(fit.indices, int)[keep]
    ncc = np.asarray(fit.node_prob, float)[keep]
    return _assemble(img, work, s, smooth, cf, centres, idx, ncc, model, bar_mask, fit.basis,
                     np.asarray(fit.origin, float), i0, scorer, notes + ["method: U-Net + lattice"])


def _nodes(shape, basis, origin, margin):
    """All lattice nodes within the image (plus margin): indices (N,2) and positions (N,2)."""
    h, w = shape
    kmat = np.linalg.inv(basis.T)
    corners = np.array([[-margin, -margin], [-margin, w + margin],
                        [h + margin, -margin], [h + margin, w + margin]])
    fr = (kmat @ (corners - origin).T).T
    lo = np.floor(fr.min(axis=0)).astype(int)
    hi = np.ceil(fr.max(axis=0)).astype(int)
    ii, jj = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1), indexing="ij")
    idx = np.column_stack([ii.ravel(), jj.ravel()])
    pos = origin + idx @ basis
    ok = ((pos[:, 0] >= -margin) & (pos[:, 0] <= h + margin)
          & (pos[:, 1] >= -margin) & (pos[:, 1] <= w + margin))
    return idx[ok], pos[ok]


def _centre_in_full(centres: np.ndarray, s: int, shape) -> np.ndarray:
    r = (centres[:, 0] + 0.5) * s - 0.5
    c = (centres[:, 1] + 0.5) * s - 0.5
    return (r >= -0.5) & (r <= shape[0] - 0.5) & (c >= -0.5) & (c <= shape[1] - 0.5)


def _upsample_mask(mask, factor: int, shape):
    """A coarse mask at working resolution (None stays None)."""
    if mask is None:
        return None
    if factor == 1:
        return mask
    up = np.repeat(np.repeat(mask, factor, axis=0), factor, axis=1)
    out = np.zeros(shape, bool)
    r, c = min(shape[0], up.shape[0]), min(shape[1], up.shape[1])
    out[:r, :c] = up[:r, :c]
    return out


def _visibility(work, smooth, cf, centres, model: locate.CellModel, bar_mask):
    """Visible fraction of each hole (image edge, bars) and whether it is cut."""
    pts = locate.ellipse_points(centres, model.a, model.b, model.angle_deg)
    h, w = work.shape
    inside = ((pts[..., 0] >= -0.5) & (pts[..., 0] <= h - 0.5)
              & (pts[..., 1] >= -0.5) & (pts[..., 1] <= w - 0.5))
    vals, ok = locate.sample_scaled(smooth, pts, cf)
    gold_like = model.sign > 0 and model.film_level < 0.3 * model.hole_level
    if gold_like:
        # the film is nearly as dark as a bar: a visible hole must look like a hole
        thr = model.film_level + 0.25 * (model.hole_level - model.film_level)
        open_ = vals > thr
    elif bar_mask is not None:
        mvals, _ = locate.sample_scaled(bar_mask, pts, cf)
        open_ = ~mvals
    else:
        open_ = np.ones(vals.shape, bool)
    vis = (inside & ok & open_).mean(axis=1)
    edge_vis = inside.mean(axis=1)
    cut = (edge_vis < 0.999) | (vis < 0.95)
    return vis, cut
