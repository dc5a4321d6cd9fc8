"""Find, measure and rank grid squares on a low-magnification atlas.

>>> from ptolemy_core.squares import find_squares          # doctest: +SKIP
>>> result = find_squares(atlas_array)
>>> result.targets[0].center, result.targets[0].score     # (row, col), 0..1

Pipeline (``method="robust"``, the default):

1. lattice pitch/angle from the autocorrelation of a coarse copy → working scale
   (pitch ≈ 40 working px), block-averaged copy of the atlas;
2. bars-vs-not-bars segmentation against local bar/open levels (flattens vignetting,
   tile brightness and seams), half-level edges per segment (:mod:`.segment`);
3. convex hulls, one grid angle by bounded Brent around the autocorrelation angle,
   aligned rectangles; segments spanning several lattice cells are split and fragments
   of one cell merged (:mod:`.geometry`);
4. measurements and ice thickness (:mod:`.measure`), scores (:mod:`.score`), ranking.

Robustness (each noted in ``SquareResult.notes``): a period that cannot be the mesh (fewer
than two periods in view, cells without a dark bar, or a weak peak inside dark bands wider
than it — an atlas tile showing the holey film of one window) is rejected and the tile is
segmented without a lattice, the film texture blurred away or its holes joined into their
windows; faint noise blobs (beyond the grid rim) are dropped unless they are window-sized
on a lattice node; nearly opaque on-lattice squares get the typical window box; round
"squares" (a medium-mag hole image) are kept but flagged.

``method="ptolemy"`` is the published baseline: global two-class mixture threshold,
labelling, hulls, Brent angle, aligned rectangles (no flattening, no split/merge).
Coordinates are ``(row, col)`` pixels of the full-resolution input.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from ..errors import PtolemyInputError
from ..image import Image, as_image
from ..targets import Target, rank
from . import geometry, measure, score, segment

__all__ = ["SquareResult", "find_squares"]

SCORERS = ("auto", "interpretable", "cnn", "none")
METHODS = ("robust", "ptolemy")


@dataclass
class SquareResult:
    """Squares found on one atlas.

    Attributes
    ----------
    targets : list of Target
        kind ``"square"``, highest score first.
    grid_angle_deg : float or None
        Grid axis angle in degrees, ``[0, 90)``; None when nothing was found.
    pitch_px : float or None
        Mesh pitch in input pixels (autocorrelation), None when not periodic.
    i0 : float or None
        Vacuum intensity (raw units) when a broken/empty square provides it, brought to
        the frame centre by the fitted illumination fall-off (the square's
        ``features["illumination"]``; its raw peak when no fall-off was fitted).
    notes : list of str
        One-line remarks (no periodicity, I0 unknown ...).
    working_scale : int
        Input pixels per working pixel.
    scorer : str
        Which scorer produced the scores.
    """

    targets: list[Target]
    grid_angle_deg: float | None = None
    pitch_px: float | None = None
    i0: float | None = None
    notes: list[str] = field(default_factory=list)
    working_scale: int = 1
    scorer: str = "none"


def _cnn_scores(image: Image, targets: list[Target], i0: float | None) -> np.ndarray | None:
    """Hook for the learned classifier (``ptolemy_core.models.api.square_cnn_scores``).

    Returns None (→ interpretable scores) when no square CNN weights are installed; the
    manifest is checked first so that torch is imported only when there is a model.
    """
    try:
        from ..models.registry import read_manifest

        if "square_cnn" not in read_manifest():
            return None
        from ..models.api import square_cnn_scores
    except ImportError:
        return None
    import inspect

    if "i0" in inspect.signature(square_cnn_scores).parameters:
        return square_cnn_scores(image, targets, i0=i0)
    return square_cnn_scores(image, targets)


def find_squares(image: Image | np.ndarray, *, pixel_size_nm: float | None = None,
                 scorer: str = "auto", method: str = "robust") -> SquareResult:
    """Find every grid square on an atlas, measure, score and rank it.

    Parameters
    ----------
    image : Image or ndarray
        2-D atlas (any size and aspect ratio, single frame or montage).
    pixel_size_nm : float, optional
        Overrides the image's pixel size (reported only; the finder measures the pitch).
    scorer : {"auto", "interpretable", "cnn", "none"}
        ``auto`` = the interpretable model on physical measurements: it beats the
        shipped CNN on held-out simulated atlases (bench_models' 27 held-out atlases: ROC
        AUC 0.889 vs 0.836) and, unlike the CNN, keeps calibrated scores on real 8-bit
        atlases. ``cnn`` uses the CNN.
    method : {"robust", "ptolemy"}
        ``ptolemy`` = the published baseline, for comparison.

    Returns
    -------
    SquareResult
        Squares cut by the atlas edge keep the box of their visible part as ``vertices``;
        ``features["visible_fraction"]`` is the part of their expected window (typical
        window size on their lattice node) inside the image, ``touches_edge`` is True and
        ``expected_vertices`` holds that full window ((row, col) corners; None for uncut
        squares). Less than half visible squares score low (the truth calls them not good).

    Raises
    ------
    PtolemyInputError
        Unknown scorer/method, or ``scorer="cnn"`` without shipped weights.
    """
    if scorer not in SCORERS:
        raise PtolemyInputError(f"unknown scorer {scorer!r} (choose from {', '.join(SCORERS)})")
    if method not in METHODS:
        raise PtolemyInputError(f"unknown method {method!r} (choose from {', '.join(METHODS)})")
    img = as_image(image, pixel_size_nm)
    data = img.data
    notes: list[str] = []
    if min(data.shape) < 8:
        notes.append(f"image of {data.shape[0]}x{data.shape[1]} pixels is too small: no squares")
        return SquareResult([], notes=notes)
    # Constant images: checked on a coarse copy (a full-resolution min/max costs more).
    probe = segment.block_mean(data, max(1, max(data.shape) // 512), keep_remainder=True)
    if not float(probe.max()) > float(probe.min()) and not float(data.max()) > float(data.min()):
        notes.append("image is constant: no squares")
        return SquareResult([], notes=notes)

    lat = _credible(data, segment.estimate_lattice(data), notes)
    loc = _localise(data, lat, method, notes)
    if loc is not None and loc[-1] is not None:
        # Segments much larger than the measured pitch: the autocorrelation picked a
        # sub-period (e.g. very large squares); search again above the segments' size.
        lat = _credible(data, segment.estimate_lattice(data, min_pitch=loc[-1]), notes)
        notes.append("pitch re-estimated: segments were larger than the first estimate")
        loc = _localise(data, lat, method, notes)
    pitch, scale = _pitch_and_scale(data, lat)
    if loc is None:
        notes.append("no square-like segment found")
        return SquareResult([], pitch_px=pitch, notes=notes, working_scale=scale)
    work, labels, smooth, bar, min_area, theta, boxes, _ = loc
    valid = measure.valid_mask(data, scale, work.shape) if method == "robust" else None
    if valid is not None:
        notes.append("constant fill lines (montage tile gaps) found: the pixels next to them are left out "
                     "of the square statistics")
    m = measure.measure(work, smooth, labels, bar, valid)
    idx = boxes.ids - 1
    keep = m.count[idx] >= min_area
    faint = _faint_blobs(m.mean[idx] - m.bar[idx], m.std[idx], keep)
    if faint.any() and pitch is not None and method == "robust":
        # An opaque square is as faint, but it is a window: on a lattice node, window-sized.
        faint &= ~_window_on_lattice(boxes, keep & ~m.touches_edge[idx], pitch / scale, m.count[idx])
    if faint.any():
        notes.append(f"{int(faint.sum())} faint blob(s) dropped: their level above the local bars is "
                     f"< {FAINT_FRACTION:.0%} of a typical square's and < {FAINT_SNR:.0f}x their own noise")
        keep &= ~faint
    if not keep.any():
        notes.append("no square-like segment found")
        return SquareResult([], grid_angle_deg=theta, pitch_px=pitch, notes=notes, working_scale=scale)
    idx = idx[keep]
    edge = m.touches_edge[idx]
    kb = geometry.Boxes(boxes.ids[keep], boxes.u0[keep], boxes.u1[keep], boxes.v0[keep], boxes.v1[keep],
                        boxes.theta)
    from_lattice = np.zeros(len(idx), bool)
    if pitch is not None and method == "robust":
        kb, from_lattice = _lattice_boxes(kb, edge, pitch / scale, work.shape)
        if from_lattice.any():
            notes.append(f"{int(from_lattice.sum())} square(s) much smaller than their lattice cell (nearly "
                         "opaque, only a faint glow segmented): box set to the typical window on the lattice")
    corners = kb.corners() * scale + (scale - 1) / 2.0
    du = kb.u1 - kb.u0
    dv = kb.v1 - kb.v0
    area = du * dv * scale * scale
    visible, edge, expected = _visible_fractions(kb, edge, pitch / scale if pitch else None, scale,
                                                 data.shape, area)
    full = ~edge
    count, mean, std, bar_k = m.count[idx], m.mean[idx], m.std[idx], m.bar[idx]
    sub = measure.Measurements(count, mean, std, bar_k, m.peak[idx], edge, m.dip[idx],
                               core=m.core[idx], core_std=m.core_std[idx])
    # The frame's illumination fall-off (vignetting) at each square: intensities above the
    # bars are compared across the atlas (and with its vacuum) only after dividing by it.
    illum = measure.illumination(corners.mean(axis=1), sub.core - bar_k, full, data.shape)
    i0, thick, rel, _ = measure.ice_estimates(sub, full, illum)
    if i0 is None:
        notes.append("no vacuum (broken/empty square) found: I0 unknown, relative thickness only")
    seg_area = count * scale * scale
    roundness = _hole_like(seg_area, area, full)
    if roundness is not None and not any(n.startswith("resolved film holes joined") for n in notes):
        notes.append(f"the {int(full.sum())} uncut segments look like holes, not grid squares: they fill "
                     f"{roundness:.2f} of their aligned boxes (a disc fills pi/4 = 0.79, a grid window "
                     f">= {HOLE_FILL:.2f}); is this a medium-magnification image? (ptolemy medmag)")

    targets = []
    for k in range(len(idx)):
        c = corners[k]
        targets.append(Target(
            kind="square",
            center=(float(c[:, 0].mean()), float(c[:, 1].mean())),
            vertices=tuple((float(r), float(cc)) for r, cc in c),
            area=float(area[k]),
            score=0.0,
            brightness=float(mean[k]),
            features={
                "segment_area": float(seg_area[k]),
                "std": float(std[k]),
                "visible_fraction": float(visible[k]),
                "touches_edge": bool(edge[k]),
                "ice_thickness_nm": None if i0 is None else float(thick[k]),
                "relative_thickness": float(rel[k]),
                "bar_level": float(bar_k[k]),
                "peak": float(sub.peak[k]),
                "dip": float(sub.dip[k]),
                "box_from_lattice": bool(from_lattice[k]),
                "core": float(m.core[idx[k]]),
                "core_std": float(m.core_std[idx[k]]),
                "expected_vertices": None if expected is None or not edge[k] else
                tuple((float(r), float(cc)) for r, cc in expected[k]),
                "illumination": float(illum[k]),
            },
        ))
    scores, used = _score(img, targets, score.features_from_targets(targets), scorer, i0)
    targets = [t.with_score(s) for t, s in zip(targets, scores, strict=True)]
    return SquareResult(rank(targets), grid_angle_deg=float(theta), pitch_px=pitch, i0=i0, notes=notes,
                        working_scale=scale, scorer=used)


def _clip_area(poly: np.ndarray, shape: tuple[int, int]) -> float:
    """Area of a convex (K, 2) (row, col) polygon inside the image's pixel area.

    Sutherland–Hodgman against the four image borders (pixel centres at integers, so the
    image covers ``[-0.5, n - 0.5]`` on each axis), then the shoelace formula.
    """
    pts = [tuple(p) for p in poly]
    for axis, limit, sign in ((0, -0.5, 1), (0, shape[0] - 0.5, -1), (1, -0.5, 1), (1, shape[1] - 0.5, -1)):
        src, pts = pts, []
        for i, cur in enumerate(src):
            prev = src[i - 1]
            cin, pin = sign * (cur[axis] - limit) >= 0, sign * (prev[axis] - limit) >= 0
            if cin != pin:
                t = (limit - prev[axis]) / (cur[axis] - prev[axis])
                pts.append((prev[0] + t * (cur[0] - prev[0]), prev[1] + t * (cur[1] - prev[1])))
            if cin:
                pts.append(cur)
        if not pts:
            return 0.0
    if len(pts) < 3:
        return 0.0
    y, x = np.array(pts).T
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


#: A square is cut by the edge when less than this fraction of its expected window lies
#: inside the image (box sizes scatter by a few per cent around the typical window).
CUT_TOLERANCE = 0.97


def _visible_fractions(kb, edge: np.ndarray, pitch_work: float | None, scale: int,
                       shape: tuple[int, int], area: np.ndarray):
    """``(visible_fraction, touches_edge, expected_corners | None)`` per box.

    A square cut by the atlas edge shows only part of its window; its segment's box is the
    visible part. The full window it belongs to is the typical window (median size of the
    uncut squares of typical size) centred on the lattice node that best contains the
    visible box (candidates: the nodes around the box centre; the right one holds the
    whole visible box, its neighbours at most the part not separated by a bar). The
    visible fraction is the area of that window inside the image over its full area, as
    the truth defines it. Squares whose segment does not touch the edge but whose window
    leaves the image (by more than 3 %) are flagged too. Without a lattice (no pitch, or
    fewer than 3 typical uncut squares) the fraction falls back to box area / median box
    area of the uncut squares.
    """
    n = len(area)
    full = ~edge
    ref_area = float(np.median(area[full])) if full.any() else float(np.median(area)) if n else 1.0
    fallback = np.where(edge, np.minimum(area / max(ref_area, 1e-9), 1.0), 1.0)
    if pitch_work is None or full.sum() < 3:
        return fallback, edge, None
    du, dv = kb.u1 - kb.u0, kb.v1 - kb.v0
    side = np.maximum(du, dv)
    typical = float(np.median(side[full]))
    normal = full & (side >= 0.75 * typical) & (side <= 1.25 * typical)
    if normal.sum() < 3:
        return fallback, edge, None
    hu, hv = 0.5 * float(np.median(du[normal])), 0.5 * float(np.median(dv[normal]))
    cu, cv = kb.center_uv
    pu, pv = geometry.lattice_phase(cu[normal], cv[normal], pitch_work)
    iu = np.round((cu - pu) / pitch_work)
    iv = np.round((cv - pv) / pitch_work)
    best = np.full(n, -1.0)
    nu, nv = pu + pitch_work * iu, pv + pitch_work * iv
    for su in (-1, 0, 1):
        for sv in (-1, 0, 1):
            cu_, cv_ = pu + pitch_work * (iu + su), pv + pitch_work * (iv + sv)
            ou = np.clip(np.minimum(kb.u1, cu_ + hu) - np.maximum(kb.u0, cu_ - hu), 0, None)
            ov = np.clip(np.minimum(kb.v1, cv_ + hv) - np.maximum(kb.v0, cv_ - hv), 0, None)
            frac = ou * ov / np.maximum(du * dv, 1e-9)
            # The centre node wins ties (an uncut square is contained by its own window).
            frac = frac + (1e-6 if su == 0 and sv == 0 else 0.0)
            take = frac > best
            best = np.where(take, frac, best)
            nu, nv = np.where(take, cu_, nu), np.where(take, cv_, nv)
    exp_boxes = geometry.Boxes(kb.ids, nu - hu, nu + hu, nv - hv, nv + hv, kb.theta)
    expected = exp_boxes.corners() * scale + (scale - 1) / 2.0
    full_area = 4.0 * hu * hv * scale * scale
    inside = np.array([_clip_area(c, shape) for c in expected]) / max(full_area, 1e-9)
    inside = np.clip(inside, 0.0, 1.0)
    cut = edge | (inside < CUT_TOLERANCE)
    # A segment touching the edge although its expected window is inside: the box itself
    # (its window may be larger than typical) says how much is visible.
    visible = np.where(cut, np.where(inside < CUT_TOLERANCE, inside, 1.0), 1.0)
    return visible, cut, expected


#: A segment is noise, not a square, when its level above the local bars is below this
#: fraction of a typical square's (the 75th percentile, robust to many blobs; the darkest
#: thick squares of the simulated tuning atlases sit at 0.22 of the median) ...
FAINT_FRACTION = 0.10
#: ... and below this multiple of its own intensity spread (a noise blob's mean is ~1 σ
#: above the local floor it was cut from; a real dark square is a uniform plateau).
FAINT_SNR = 3.0


#: Median fraction of its grid-aligned box that an uncut segment fills, below which the
#: "squares" are round (holes of a medium-mag image): a disc fills π/4 ≈ 0.79 of any
#: bounding square (measured 0.81 on simulated and real hole images), a window with
#: rounded corners ≥ 0.95 (simulated atlases 0.96–1.02, real atlases 0.89–0.91).
HOLE_FILL = 0.86


def _hole_like(seg_area: np.ndarray, box_area: np.ndarray, full: np.ndarray) -> float | None:
    """Median box fill of the uncut segments when it says "round holes", else None."""
    if full.sum() < 3:
        return None
    fill = float(np.median(seg_area[full] / np.maximum(box_area[full], 1e-9)))
    return fill if fill < HOLE_FILL else None


def _lattice_boxes(kb, edge: np.ndarray, pitch_work: float, shape: tuple[int, int]):
    """Give on-lattice segments much smaller than a window the typical window's box.

    A nearly opaque square (thick ice) shows only a faint central glow: its segment is a
    blob a third of the window's size, but it sits on a lattice node (within 0.15 pitch)
    and the mesh says where its window is. Such a segment (uncut, longer side < 0.6 of
    the typical window's) gets the median window box centred on its node; the box must
    stay inside the image. Returns the new boxes and which were replaced.
    """
    du, dv = kb.u1 - kb.u0, kb.v1 - kb.v0
    side = np.maximum(du, dv)
    grown = np.zeros(len(side), bool)
    if (~edge).sum() < 3:
        return kb, grown
    typical = float(np.median(side[~edge]))
    normal = ~edge & (side >= 0.75 * typical) & (side <= 1.25 * typical)
    if normal.sum() < 3:
        return kb, grown
    cu, cv = kb.center_uv
    pu, pv = geometry.lattice_phase(cu[normal], cv[normal], pitch_work)
    nu = pu + pitch_work * np.round((cu - pu) / pitch_work)
    nv = pv + pitch_work * np.round((cv - pv) / pitch_work)
    on = (np.abs(cu - nu) < 0.15 * pitch_work) & (np.abs(cv - nv) < 0.15 * pitch_work)
    small = ~edge & (side < 0.6 * typical) & on
    if not small.any():
        return kb, grown
    hu, hv = 0.5 * float(np.median(du[normal])), 0.5 * float(np.median(dv[normal]))
    u0, u1, v0, v1 = nu - hu, nu + hu, nv - hv, nv + hv
    cand = geometry.Boxes(kb.ids, u0, u1, v0, v1, kb.theta).corners()
    inside = ((cand[..., 0] >= -0.5) & (cand[..., 0] <= shape[0] - 0.5)
              & (cand[..., 1] >= -0.5) & (cand[..., 1] <= shape[1] - 0.5)).all(axis=1)
    grown = small & inside
    pick = lambda new, old: np.where(grown, new, old)  # noqa: E731
    return geometry.Boxes(kb.ids, pick(u0, kb.u0), pick(u1, kb.u1), pick(v0, kb.v0), pick(v1, kb.v1),
                          kb.theta), grown


def _window_on_lattice(boxes, ref: np.ndarray, pitch_work: float, count: np.ndarray) -> np.ndarray:
    """Boxes centred within 0.15 pitch of a lattice node, at least half a window wide and
    at least half filled by their segment (``count`` pixels; a noise blob is sparse).

    The lattice phase comes from the ``ref`` boxes of typical size (±25 % of the median).
    """
    side = np.maximum(boxes.u1 - boxes.u0, boxes.v1 - boxes.v0)
    out = np.zeros(len(side), bool)
    if ref.sum() < 3:
        return out
    typical = float(np.median(side[ref]))
    normal = ref & (side >= 0.75 * typical) & (side <= 1.25 * typical)
    if normal.sum() < 3:
        return out
    cu, cv = boxes.center_uv
    pu, pv = geometry.lattice_phase(cu[normal], cv[normal], pitch_work)
    off_u = np.abs((cu - pu + 0.5 * pitch_work) % pitch_work - 0.5 * pitch_work)
    off_v = np.abs((cv - pv + 0.5 * pitch_work) % pitch_work - 0.5 * pitch_work)
    fill = count / np.maximum((boxes.u1 - boxes.u0) * (boxes.v1 - boxes.v0), 1e-9)
    return (off_u < 0.15 * pitch_work) & (off_v < 0.15 * pitch_work) & (side >= 0.5 * typical) & (fill >= 0.5)


def _faint_blobs(above: np.ndarray, std: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Segments that are noise in a dark region (beyond the grid rim, clip ring, etc.).

    There the local bar level is the noise floor and blobs of noise pass the detection
    threshold; a real square — even thick ice — is a plateau clearly above the bars.
    """
    if keep.sum() < 3:
        return np.zeros(len(above), bool)
    typical = float(np.percentile(above[keep], 75.0))
    if not typical > 0:
        return np.zeros(len(above), bool)
    return keep & (above < FAINT_FRACTION * typical) & (above < FAINT_SNR * std)


def _credible(data: np.ndarray, lat, notes: list[str]):
    """The lattice, or a no-periodicity one when its period cannot be the grid mesh.

    A single atlas tile can hold fewer than two squares across: the autocorrelation then
    finds a finer texture (the holey film inside one window) whose "pitch" would split a
    square into hundreds of fragments (see :func:`segment.lattice_credible`). Without a
    credible pitch the segmentation uses global levels and no split/merge or size prior.
    """
    pitch = lat.pitch_px
    if pitch is not None and pitch < 12.0:
        # Too fine for a mesh: a texture (film holes) to smooth away, not a lattice.
        return segment.Lattice(None, None, lat.strength, lat.min_pitch, texture_px=pitch)
    if pitch is None or not (pitch <= min(data.shape) / 1.2):
        return lat
    # A coarse copy (pitch ≈ 8 px) is enough to see whether every cell holds a bar.
    f = max(1, int(pitch // 8), int(np.ceil(max(data.shape) / 1024)))
    # Averaging every 4th row/column of each block is as good for percentiles of block
    # levels and reads a fraction of an 8k² atlas.
    st = max(1, f // 4)
    coarse = segment.block_mean(data[::st, ::st], max(1, f // st))
    ok, why = segment.lattice_credible(coarse, pitch / (st * max(1, f // st)), lat.strength)
    if ok:
        return lat
    notes.append(f"grid period {pitch:.0f} px not credible ({why}): segmented without the lattice")
    return segment.Lattice(None, None, lat.strength, lat.min_pitch, texture_px=pitch)


def _pitch_and_scale(data: np.ndarray, lat) -> tuple[float | None, int]:
    pitch = lat.pitch_px
    if pitch is not None and not (12.0 <= pitch <= min(data.shape) / 1.2):
        pitch = None
    if pitch is None:
        return None, max(1, int(np.ceil(max(data.shape) / 1024)))
    # Bounded cost: the working image never exceeds ~2048 px on its longer side.
    return pitch, max(1, int(round(pitch / segment.WORK_PITCH_PX)), int(np.ceil(max(data.shape) / 2048)))


def _localise(data: np.ndarray, lat, method: str, notes: list[str]):
    """Working image, segments, grid angle and boxes; None when nothing is found.

    The last element is a pitch (input px) to search above when the segments are larger
    than the measured pitch (a sub-period was picked), else None.
    """
    pitch, scale = _pitch_and_scale(data, lat)
    if pitch is None and not any(n.startswith("no grid periodicity") for n in notes):
        notes.append("no grid periodicity found: global thresholds, no lattice split/merge")
    work = segment.block_mean(data, scale, keep_remainder=True)
    pitch_work = pitch / scale if pitch else None
    if method == "ptolemy":
        labels, smooth, bar, min_area = _ptolemy_segments(work)
    else:
        texture = lat.texture_px / scale if lat.texture_px else None
        seg = segment.segment(work, pitch_work, texture)
        labels, smooth, bar, min_area = seg.labels, seg.smooth, seg.bar, seg.min_area
        if seg.joined:
            notes.append("resolved film holes joined into their windows (dark bands much wider than them)")
    if labels.max() == 0:
        return None
    if pitch is not None and method == "robust":
        # The autocorrelation angle is exact to a few hundredths of a degree; Brent on the
        # hulls of digitised segments is biased towards rational slopes at working scale.
        theta = float(lat.angle_deg)
    else:
        theta = geometry.grid_angle(geometry.hulls(labels), None)
    boxes = geometry.aligned_boxes(labels, theta)
    if pitch_work is not None and method == "robust":
        sides = np.maximum(boxes.u1 - boxes.u0, boxes.v1 - boxes.v0)
        sides = sides[sides >= np.sqrt(min_area)]
        if len(sides) >= 2 and float(np.median(sides)) > 1.05 * pitch_work and not lat.min_pitch:
            return (work, labels, smooth, bar, min_area, theta, boxes, float(np.median(sides)) * scale * 1.05)
        labels, changed = geometry.split_merge(labels, boxes, pitch_work)
        if changed:
            boxes = geometry.aligned_boxes(labels, theta)
    return work, labels, smooth, bar, min_area, theta, boxes, None


def _score(img: Image, targets: list[Target], x: np.ndarray, scorer: str,
           i0: float | None) -> tuple[np.ndarray, str]:
    if scorer == "none":
        return np.zeros(len(targets)), "none"
    if scorer == "cnn":
        cnn = _cnn_scores(img, targets, i0)
        if cnn is not None:
            return np.clip(np.asarray(cnn, float), 0, 1), "cnn"
        raise PtolemyInputError("the square CNN scorer has no shipped weights in this installation")
    model = score.load_interpretable()
    if model is None:
        return score.fallback_scores(x), "rule"
    return score.logistic_scores(x, model), "interpretable"


def _ptolemy_segments(work: np.ndarray):
    """The published segmentation: global mixture threshold, 8-connected flood fill."""
    smooth = work
    mix = segment.fit_mixture(work)
    mask = work > mix.threshold
    labels, _ = ndi.label(mask, structure=np.ones((3, 3), int))
    bar = np.full(work.shape, mix.means[0], np.float32)
    return labels.astype(np.int32), smooth, bar, 30.0
