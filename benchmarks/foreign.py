"""Foreign looks: an independent grid-image generator for robustness checks.

Written from scratch (numpy/scipy/scikit-image only, PIL/tifffile only to *encode* files) and
deliberately unlike ``ptolemy_core.synth``: no Poisson counts model, no shared helpers. It
renders what real atlases and square images from other microscopes/software look like —
8-bit JPEG with mid-grey bars, display gamma/log scaling, strong vignetting, sharp-cornered
squares of 10–300 px, grids with a dark half beyond the rim, float HDR; soft-edged holes,
Fresnel-rimmed holes, large and tiny holes, ice gradients, heavy contamination, lacey carbon
(no lattice), non-square frames.

Truth follows the simulator contracts (kind "atlas" / "square", ``[x, y]`` coordinates).

>>> fi = foreign_atlas(0, "grey_bars_jpeg")                 # doctest: +SKIP
>>> path = fi.save("benchmarks/_data/foreign/grey_bars_jpeg_0")  # .jpg + .json  # doctest: +SKIP
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

FOREIGN_VERSION = "foreign-2"
#: Effective inelastic mean free path used for truth thicknesses (nm).
LAMBDA_NM = 350.0

ATLAS_LOOKS = ("grey_bars_jpeg", "vignette_gamma", "tiny_squares", "huge_squares", "half_dark", "hdr_float")
SQUARE_LOOKS = ("soft_edges", "fresnel_rim", "jpeg_low_contrast", "large_holes", "tiny_holes_epu",
                "ice_gradient", "heavy_contamination", "lacey", "rectangular")


# ------------------------------------------------------------------------------------------
# shared small helpers (own implementations, on purpose)
# ------------------------------------------------------------------------------------------

def _smooth_noise(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    """Zero-mean, unit-sd smooth random field."""
    f = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return (f - f.mean()) / (f.std() + 1e-9)


def _coords(shape):
    r, c = np.mgrid[0: shape[0], 0: shape[1]].astype(np.float32)
    return r + 0.5, c + 0.5  # pixel centres


def _jpeg(img01: np.ndarray, quality: int) -> tuple[np.ndarray, bytes]:
    """Encode as an 8-bit JPEG (artefacts are part of the look): decoded pixels and the file bytes."""
    from PIL import Image as PILImage

    u8 = np.clip(np.round(img01 * 255.0), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    PILImage.fromarray(u8).save(buf, format="JPEG", quality=int(quality))
    raw = buf.getvalue()
    return np.asarray(PILImage.open(io.BytesIO(raw))).copy(), raw


@dataclass
class ForeignImage:
    """One foreign image: ``data`` as the file decodes, ``truth`` (simulator schema), file bytes."""

    data: np.ndarray
    truth: dict
    encoded: bytes | None = None  # JPEG bytes (written as is: no second compression)

    def save(self, stem) -> Path:
        """Write ``<stem>.<jpg|png|tif>`` and ``<stem>.json``; returns the image path."""
        return write_foreign(self, stem)


def _vignette(shape, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Multiplicative illumination: off-centre radial fall-off (1 at the brightest point)."""
    r, c = _coords(shape)
    cy = shape[0] * rng.uniform(0.3, 0.7)
    cx = shape[1] * rng.uniform(0.3, 0.7)
    d = np.hypot(r - cy, c - cx) / (0.5 * math.hypot(*shape))
    return (1.0 - strength * np.clip(d, 0, 1.5) ** 2 / 2.25).astype(np.float32)


# ------------------------------------------------------------------------------------------
# atlases
# ------------------------------------------------------------------------------------------

_ATLAS_DEFAULTS = {
    # pitch px, bar fraction, shape, bar level (fraction of I0), output
    "grey_bars_jpeg": dict(pitch=(120, 200), bar=(0.3, 0.42), shape=(1024, 1024), bar_level=(0.45, 0.6),
                           out="jpg", jpeg_q=(25, 45), noise=0.0, vignette=0.15, display="linear"),
    "vignette_gamma": dict(pitch=(90, 150), bar=(0.25, 0.35), shape=(1024, 1280), bar_level=(0.0, 0.03),
                           out="png", noise=0.01, vignette=0.8, display="gamma"),
    "tiny_squares": dict(pitch=(16, 28), bar=(0.3, 0.4), shape=(1024, 1024), bar_level=(0.0, 0.05),
                         out="png", noise=0.02, vignette=0.2, display="linear"),
    "huge_squares": dict(pitch=(360, 420), bar=(0.18, 0.25), shape=(1536, 1536), bar_level=(0.0, 0.05),
                         out="png", noise=0.02, vignette=0.2, display="linear"),
    "half_dark": dict(pitch=(90, 140), bar=(0.3, 0.4), shape=(1024, 1024), bar_level=(0.05, 0.1),
                      out="jpg", jpeg_q=(60, 85), noise=0.01, vignette=0.2, display="log"),
    "hdr_float": dict(pitch=(100, 160), bar=(0.3, 0.4), shape=(1024, 1024), bar_level=(0.0, 0.0),
                      out="tif", noise=0.002, vignette=0.1, display="linear"),
}


def foreign_atlas(seed: int, look: str, **overrides):
    """Render one low-mag atlas of a foreign ``look``.

    Parameters
    ----------
    seed : int
        Everything is drawn from ``np.random.default_rng(seed)``.
    look : str
        One of :data:`ATLAS_LOOKS`.
    **overrides
        Replace entries of the look's defaults (``pitch``, ``shape`` ...).

    Returns
    -------
    ForeignImage
        ``data`` as the file decodes (uint8 for jpg/png, float32 for tif), ``truth`` in the
        atlas simulator's schema.
    """
    if look not in _ATLAS_DEFAULTS:
        raise ValueError(f"unknown atlas look {look!r}")
    cfg = dict(_ATLAS_DEFAULTS[look])
    cfg.update(overrides)
    rng = np.random.default_rng(seed)

    def draw(v):
        return float(rng.uniform(*v)) if isinstance(v, tuple) else v

    shape = tuple(cfg["shape"])
    pitch = draw(cfg["pitch"])
    bar_frac = draw(cfg["bar"])
    bar_level = draw(cfg["bar_level"])
    angle = float(rng.uniform(0.0, 90.0))
    th = math.radians(angle)
    # Lattice axes in (row, col): u along (sin, cos), v along (cos, -sin).
    ur, uc = math.sin(th), math.cos(th)
    vr, vc = math.cos(th), -math.sin(th)
    off_u, off_v = rng.uniform(0, pitch, size=2)
    r, c = _coords(shape)
    u = r * ur + c * uc - off_u
    v = r * vr + c * vc - off_v
    iu, iv = np.floor(u / pitch).astype(np.int32), np.floor(v / pitch).astype(np.int32)
    fu, fv = u - iu * pitch, v - iv * pitch
    half_bar = 0.5 * bar_frac * pitch
    side = pitch - 2 * half_bar
    open_ = (fu >= half_bar) & (fu < pitch - half_bar) & (fv >= half_bar) & (fv < pitch - half_bar)

    # Grid disc rim: "half_dark" puts a straight/curved rim through the image; beyond it no grid.
    in_grid = np.ones(shape, bool)
    if look == "half_dark":
        phi = rng.uniform(0, 2 * math.pi)
        R = max(shape) * rng.uniform(1.5, 3.0)  # large disc: gently curved rim
        cy = shape[0] / 2 + math.sin(phi) * (R - rng.uniform(0.0, 0.2) * min(shape))
        cx = shape[1] / 2 + math.cos(phi) * (R - rng.uniform(0.0, 0.2) * min(shape))
        in_grid = np.hypot(r - cy, c - cx) < R

    # Per-cell properties (cells indexed by offsets from the minimum index).
    i0u, i0v = int(iu.min()), int(iv.min())
    nu, nv = int(iu.max()) - i0u + 1, int(iv.max()) - i0v + 1
    ncell = nu * nv
    kinds = rng.choice(["none", "thick", "empty", "opaque", "broken", "contaminated"], size=ncell,
                       p=[0.6, 0.12, 0.06, 0.06, 0.1, 0.06])
    thick = np.where(kinds == "thick", rng.uniform(150, 400, ncell), rng.uniform(15, 110, ncell))
    thick = np.where(kinds == "empty", 0.0, thick)
    thick = np.where(kinds == "opaque", rng.uniform(1500, 3000, ncell), thick)
    cell = (iu - i0u) * nv + (iv - i0v)
    t_map = thick[cell].astype(np.float32)
    # broken: a vacuum half-plane through the square at a random angle
    if np.any(kinds == "broken"):
        ang = rng.uniform(0, 2 * math.pi, ncell)
        cut = rng.uniform(-0.3, 0.3, ncell) * side
        du = fu - pitch / 2
        dv = fv - pitch / 2
        s = du * np.cos(ang)[cell] + dv * np.sin(ang)[cell] - cut[cell]
        t_map = np.where((kinds[cell] == "broken") & (s > 0), 0.0, t_map)
    trans = np.exp(-t_map / LAMBDA_NM)
    if np.any(kinds == "contaminated"):
        blobs = _smooth_noise(rng, shape, max(1.0, side / 12))
        trans = np.where((kinds[cell] == "contaminated") & (blobs > 1.3), trans * 0.15, trans)
    i0 = 1.0
    # Display offset (Leginon's tutorial images): bars sit at a mid-grey floor and transmitted
    # intensity is added on top, so nothing is darker than the bars (opaque squares = bar level).
    img = np.where(open_ & in_grid, bar_level + (1.0 - bar_level) * i0 * trans, bar_level).astype(np.float32)
    if look == "half_dark":
        img = np.where(in_grid, img, 0.02)  # outside the rim: thick copper/nothing, near black
    img *= _vignette(shape, cfg["vignette"], rng)
    if cfg["noise"]:
        img += cfg["noise"] * rng.standard_normal(shape).astype(np.float32)
    img = np.clip(img, 0, None)
    display = cfg["display"]
    if display == "gamma":
        img = img ** 0.45
    elif display == "log":
        img = np.log1p(30 * img) / np.log1p(30)
    encoded = None
    if cfg["out"] == "jpg":
        data, encoded = _jpeg(img / max(float(img.max()), 1e-6), int(draw(cfg["jpeg_q"])))
    elif cfg["out"] == "png":
        data = np.clip(np.round(img / max(float(img.max()), 1e-6) * 255), 0, 255).astype(np.uint8)
    else:
        data = img.astype(np.float32)

    # Truth: visible pixel counts per cell (open, in image, in grid) vs full square area.
    vis_count = np.bincount(cell[open_ & in_grid].ravel(), minlength=ncell)
    squares = []
    k = 0
    for cid in np.nonzero(vis_count)[0]:
        a, b = divmod(int(cid), nv)
        cu, cv = (a + i0u + 0.5) * pitch + off_u, (b + i0v + 0.5) * pitch + off_v
        # back to (row, col): p = u*(ur,uc) + v*(vr,vc) since the axes are orthonormal
        cr, cc = cu * ur + cv * vr, cu * uc + cv * vc
        h = side / 2
        verts = []
        for su, sv in ((-1, -1), (-1, 1), (1, 1), (1, -1)):
            pr = cr + su * h * ur + sv * h * vr
            pc = cc + su * h * uc + sv * h * vc
            verts.append([float(pc), float(pr)])
        kind = str(kinds[cid])
        t = float(thick[cid])
        good = kind == "none" and 20.0 <= t <= 100.0
        squares.append({
            "id": k, "center": [float(cc), float(cr)], "vertices": verts, "area": float(side * side),
            "visible_fraction": float(min(1.0, vis_count[cid] / (side * side))),
            "ice_thickness_nm": t, "good": bool(good), "defect": kind,
            "why": "ice in range" if good else (kind if kind != "none" else "ice out of range"),
        })
        k += 1
    truth = {
        "kind": "atlas", "shape": list(shape), "pixel_size_nm": None, "seed": int(seed),
        "params": {"generator": FOREIGN_VERSION, "look": look, "bar_level": bar_level, "display": display,
                   "format": cfg["out"], "vignette": cfg["vignette"]},
        "i0": None if cfg["out"] != "tif" else i0,
        "grid": {"angle_deg": angle, "pitch_px": pitch, "bar_fraction": bar_frac},
        "squares": squares,
    }
    return ForeignImage(data, truth, encoded)


# ------------------------------------------------------------------------------------------
# square images (holes)
# ------------------------------------------------------------------------------------------

_SQUARE_DEFAULTS = {
    # hole diameter px, pitch/diameter ratio, shape, film/hole contrast, output
    "soft_edges": dict(diam=(30, 60), ratio=(1.8, 2.2), shape=(1024, 1440), contrast=(0.15, 0.3),
                       edge_sigma=(0.15, 0.3), out="png", noise=0.04),
    "fresnel_rim": dict(diam=(40, 80), ratio=(1.6, 2.0), shape=(1024, 1440), contrast=(0.0, 0.02),
                        rim=(0.15, 0.3), out="png", noise=0.03),
    "jpeg_low_contrast": dict(diam=(30, 60), ratio=(1.8, 2.4), shape=(959, 927), contrast=(0.03, 0.05),
                              out="jpg", jpeg_q=(30, 50), noise=0.01),
    "large_holes": dict(diam=(120, 140), ratio=(1.9, 2.1), shape=(1024, 1024), contrast=(0.3, 0.5),
                        out="jpg", jpeg_q=(70, 90), noise=0.08),
    "tiny_holes_epu": dict(diam=(5, 8), ratio=(1.9, 2.3), shape=(364, 512), contrast=(0.25, 0.4),
                           out="jpg", jpeg_q=(75, 90), noise=0.03, window=True),
    "ice_gradient": dict(diam=(30, 60), ratio=(1.8, 2.2), shape=(1024, 1440), contrast=(0.15, 0.25),
                         gradient=(2.0, 3.0), out="png", noise=0.03),
    "heavy_contamination": dict(diam=(30, 60), ratio=(1.8, 2.2), shape=(1024, 1440), contrast=(0.2, 0.3),
                                contamination=(0.2, 0.3), out="png", noise=0.03),
    "lacey": dict(diam=(30, 60), ratio=(1.8, 2.2), shape=(1024, 1440), contrast=(0.2, 0.3), out="png",
                  noise=0.03),
    "rectangular": dict(diam=(25, 45), ratio=(1.8, 2.2), shape=(512, 1600), contrast=(0.15, 0.3),
                        out="png", noise=0.04),
}


def foreign_square_image(seed: int, look: str, **overrides):
    """Render one medium-mag (square) image of a foreign ``look``.

    Parameters
    ----------
    seed : int
        Everything is drawn from ``np.random.default_rng(seed)``.
    look : str
        One of :data:`SQUARE_LOOKS`.
    **overrides
        Replace entries of the look's defaults.

    Returns
    -------
    ForeignImage
        ``data`` as the file decodes (uint8) and ``truth`` in the square simulator's schema.
        ``lacey`` has no lattice: its truth lists no holes (every detection is a false
        positive; the finder should return few or no confident targets).
    """
    if look not in _SQUARE_DEFAULTS:
        raise ValueError(f"unknown square-image look {look!r}")
    cfg = dict(_SQUARE_DEFAULTS[look])
    cfg.update(overrides)
    rng = np.random.default_rng(seed)

    def draw(v):
        return float(rng.uniform(*v)) if isinstance(v, tuple) else v

    shape = tuple(cfg["shape"])
    diam = draw(cfg["diam"])
    rad = diam / 2
    pitch = diam * draw(cfg["ratio"])
    contrast = draw(cfg["contrast"])
    angle = float(rng.uniform(0.0, 90.0))
    th = math.radians(angle)
    r, c = _coords(shape)
    film_t = rng.uniform(30, 60)  # nm-equivalent of film + ice
    film = np.full(shape, math.exp(-film_t / LAMBDA_NM) * (1 - contrast), np.float32)
    if "gradient" in cfg:
        g = draw(cfg["gradient"])
        gdir = rng.uniform(0, 2 * math.pi)
        ramp = ((r - shape[0] / 2) * math.sin(gdir) + (c - shape[1] / 2) * math.cos(gdir)) / max(shape)
        grad_t = 250.0 * (ramp + 0.5) * (g - 1)  # extra ice thickness in nm across the image
    else:
        grad_t = np.zeros(shape, np.float32)

    holes = []
    lattice_info = None
    cont_mask = np.zeros(shape, bool)
    hole_img = np.zeros(shape, np.float32)  # 0 film, 1 hole (soft)
    rim_img = np.zeros(shape, np.float32)
    t_in = np.zeros(shape, np.float32)
    window = np.ones(shape, bool)
    if cfg.get("window"):
        # EPU thumbnail: one whole grid square (rotated) inside dark bars
        half = min(shape) * rng.uniform(0.42, 0.48)
        wa = math.radians(rng.uniform(0, 90))
        cy, cx = shape[0] / 2, shape[1] / 2
        du = (r - cy) * math.sin(wa) + (c - cx) * math.cos(wa)
        dv = (r - cy) * math.cos(wa) - (c - cx) * math.sin(wa)
        window = (np.abs(du) < half) & (np.abs(dv) < half)

    if look == "lacey":
        # irregular holes from a thresholded smooth field: no lattice at all
        f = _smooth_noise(rng, shape, rad / 2)
        hole_img = ndi.gaussian_filter((f > 0.6).astype(np.float32), 1.5)
        t_in = np.full(shape, rng.uniform(20, 80), np.float32)
    else:
        b1 = np.array([math.sin(th), math.cos(th)]) * pitch  # (row, col)
        b2 = np.array([math.cos(th), -math.sin(th)]) * pitch
        origin = np.array([rng.uniform(0, shape[0]), rng.uniform(0, shape[1])])
        lattice_info = {"kind": "square",
                        "basis": [[float(b1[1]), float(b1[0])], [float(b2[1]), float(b2[0])]],
                        "origin": [float(origin[1]), float(origin[0])], "tilt_deg": 0.0}
        n = int(math.ceil(math.hypot(*shape) / pitch)) + 2
        ii, jj = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij")
        centres = origin[None, :] + ii.ravel()[:, None] * b1 + jj.ravel()[:, None] * b2
        keep = ((centres[:, 0] > -rad) & (centres[:, 0] < shape[0] + rad)
                & (centres[:, 1] > -rad) & (centres[:, 1] < shape[1] + rad))
        centres = centres[keep]
        # nearest lattice node per pixel → distance map (exact for radius < pitch/2)
        pr = r - origin[0]
        pc = c - origin[1]
        binv = np.linalg.inv(np.stack([b1, b2], axis=1))
        a = binv[0, 0] * pr + binv[0, 1] * pc
        b = binv[1, 0] * pr + binv[1, 1] * pc
        ai, bi = np.round(a), np.round(b)
        dr = pr - (ai * b1[0] + bi * b2[0])
        dc = pc - (ai * b1[1] + bi * b2[1])
        dist = np.sqrt(dr * dr + dc * dc)
        # per-hole properties keyed by lattice index
        nh = len(centres)
        kinds = rng.choice(["none", "empty", "thick", "contaminated"], size=nh, p=[0.75, 0.08, 0.12, 0.05])
        ht = np.where(kinds == "thick", rng.uniform(150, 300, nh), rng.uniform(15, 110, nh))
        ht = np.where(kinds == "empty", 0.0, ht)
        idx_a = np.round(np.linalg.solve(np.stack([b1, b2], axis=1), (centres - origin).T)).astype(int)
        key = (ai.astype(np.int64) + 10000) * 100000 + (bi.astype(np.int64) + 10000)
        keys = (idx_a[0].astype(np.int64) + 10000) * 100000 + (idx_a[1].astype(np.int64) + 10000)
        order = np.argsort(keys)
        pos = np.searchsorted(keys[order], key.ravel()).clip(0, nh - 1)
        hit = keys[order][pos] == key.ravel()
        hid = np.where(hit, order[pos], -1).reshape(shape)
        t_in = np.where(hid >= 0, ht[np.maximum(hid, 0)], 0.0).astype(np.float32)
        if "edge_sigma" in cfg:
            sig = max(1.0, draw(cfg["edge_sigma"]) * rad)
            hole_img = 1.0 / (1.0 + np.exp((dist - rad) / (0.5 * sig)))
        else:
            hole_img = np.clip(rad + 0.5 - dist, 0, 1).astype(np.float32)  # sharp, 1-px anti-aliased
        if "rim" in cfg:
            rim_img = draw(cfg["rim"]) * np.exp(-0.5 * ((dist - rad + 1.5) / 1.5) ** 2) \
                - 0.5 * draw(cfg["rim"]) * np.exp(-0.5 * ((dist - rad - 3.0) / 2.0) ** 2)
        # contaminated holes: dark blobs inside
        if np.any(kinds == "contaminated"):
            blobs = _smooth_noise(rng, shape, max(1.0, rad / 4))
            cont_mask = (hid >= 0) & (kinds[np.maximum(hid, 0)] == "contaminated") & (blobs > 0.8)
        cover = None
        if look == "heavy_contamination":
            frac = draw(cfg["contamination"])
            f = _smooth_noise(rng, shape, rad * 0.6)
            cover = f > np.quantile(f, 1 - frac)
            cover_factor = rng.uniform(0.15, 0.35)
        # visibility: sample 97 points in each disc, inside image and window
        sr, sc = np.mgrid[-6:7, -6:7] / 6.0
        inside_disc = (sr ** 2 + sc ** 2) <= 1.0
        sr, sc = sr[inside_disc] * rad, sc[inside_disc] * rad
        for k, (cr, cc) in enumerate(centres):
            pr_ = cr + sr
            pc_ = cc + sc
            ok = (pr_ >= 0) & (pr_ < shape[0]) & (pc_ >= 0) & (pc_ < shape[1])
            if cfg.get("window") and ok.any():
                ok[ok] = window[pr_[ok].astype(int), pc_[ok].astype(int)]
            if cover is not None and ok.any():
                # a hole mostly under thick contamination is not visible: optional in the metric
                ok[ok] = ~cover[pr_[ok].astype(int), pc_[ok].astype(int)]
            vis = float(ok.mean())
            if vis <= 0:
                continue
            kind = str(kinds[k])
            t = float(ht[k])
            good = kind == "none" and 20.0 <= t <= 100.0
            in_image = bool(0 <= cr < shape[0] and 0 <= cc < shape[1])
            if cfg.get("window"):
                in_image = in_image and bool(window[int(min(max(cr, 0), shape[0] - 1)),
                                                    int(min(max(cc, 0), shape[1] - 1))])
            holes.append({
                "id": len(holes), "center": [float(cc), float(cr)], "radius": float(rad),
                "ellipse": {"a": float(rad), "b": float(rad), "angle_deg": 0.0},
                "visible_fraction": vis, "in_image": in_image, "ice_thickness_nm": t, "good": bool(good),
                "defect": kind,
                "why": "ice in range" if good else (kind if kind != "none" else "ice out of range"),
            })
    # compose intensities: film level outside holes, Beer-Lambert inside
    i0 = 1.0
    hole_level = i0 * np.exp(-(t_in + grad_t) / LAMBDA_NM)
    film_level = film * np.exp(-grad_t / LAMBDA_NM)
    if look == "fresnel_rim":
        # hole fill almost equal to the film: the rim carries the contrast
        hole_level = film_level * (1 + contrast)
    elif look == "jpeg_low_contrast":
        # carbon film, a few % between hole and film whatever the ice (thick holes a few % darker)
        hole_level = film_level * np.where(t_in > 140, 1 - contrast, 1 + contrast)
    img = film_level * (1 - hole_img) + hole_level * hole_img + rim_img * film_level
    if look != "lacey":
        img = np.where(cont_mask, img * 0.3, img)
    if look == "heavy_contamination":
        img = np.where(cover, img * cover_factor, img)
    img = np.where(window, img, 0.01)
    img = img * _vignette(shape, 0.15, rng)
    img = img + cfg["noise"] * float(np.median(img)) * rng.standard_normal(shape).astype(np.float32)
    img = np.clip(img, 0, None).astype(np.float32)
    img01 = img / max(float(np.quantile(img, 0.999)), 1e-6)
    encoded = None
    if cfg["out"] == "jpg":
        data, encoded = _jpeg(np.clip(img01, 0, 1), int(draw(cfg["jpeg_q"])))
    else:
        data = np.clip(np.round(img01 * 255), 0, 255).astype(np.uint8)
    truth = {
        "kind": "square", "shape": list(shape), "pixel_size_nm": None, "seed": int(seed),
        "params": {"generator": FOREIGN_VERSION, "look": look, "diameter_px": diam, "pitch_px": pitch,
                   "contrast": contrast, "format": cfg["out"]},
        "i0": None, "film": "carbon", "contrast": "low" if contrast < 0.05 else "normal",
        "lattice": lattice_info, "holes": holes, "bar": {"window": True} if cfg.get("window") else None,
    }
    return ForeignImage(data, truth, encoded)


def write_foreign(img: ForeignImage, stem) -> Path:
    """Write ``<stem>.<jpg|png|tif>`` and ``<stem>.json``; returns the image path."""
    from PIL import Image as PILImage

    data, truth = img.data, img.truth
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    fmt = truth["params"]["format"]
    path = stem.with_suffix("." + fmt)
    if fmt == "jpg":
        path.write_bytes(img.encoded)
    elif fmt == "png":
        PILImage.fromarray(data).save(path, format="PNG")
    else:
        import tifffile

        tifffile.imwrite(path, data.astype(np.float32))
    stem.with_suffix(".json").write_text(json.dumps(truth))
    return path
