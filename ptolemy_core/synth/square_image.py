"""Medium-magnification images of one grid square: holey film on a lattice.

Physics (see the project's imaging notes and :mod:`.physics`):

- The film is amorphous carbon (10–25 nm, with a thin ice layer on it) or gold
  (~50 nm, effectively opaque at medium magnification). Holes carry vitreous
  ice; every layer attenuates by Beer–Lambert, ``I = I0·exp(-Σ t/λ)``.
- Carbon film contrast: ``ln(I_hole/I_film) = t_C/λ_C + (t_film_ice - t_hole_ice)/λ_ice``.
  The simulator draws the wanted hole/film contrast (normal 4–25 %, low
  0.8–3 %, inverted −1…−10 %) and the hole ice, then solves for the ice on the
  film, so contrast and thickness stay physically consistent.
- Holes sit on a square or hexagonal lattice named by the product
  (``R<diameter>/<gap>`` in µm: pitch = diameter + gap); a stage tilt
  compresses one axis by ``cos(tilt)`` (oblique lattice, elliptical holes).
- Defects per hole: ``empty`` (no ice), ``broken`` (torn film: vacuum patch
  across the hole edge), ``thick`` (≥ 150 nm), ``crystalline`` (speckle),
  ``cracked`` (bright crack line), ``contaminated`` (dark blobs on/near the
  hole; film blobs landing on a hole also count), ``cut`` (image edge or bar).
- A grid-bar edge may enter the image: opaque, with a soft glow of scattered
  electrons on the open side and thicker ice (meniscus) near it.
- Ice thickness varies smoothly across the square (gradient).
- Detector: Poisson counts at a low dose (tens of e⁻/px), gain variation,
  vignetting, Gaussian PSF; stored as int16, uint16 or float32.

Rendering is memory-bounded: the per-pixel pass is vectorised over row bands
(each pixel finds its lattice cell by rounding its fractional lattice
coordinates), and rare defects are drawn into local patches only.

Ground truth (``truth["holes"]``): every hole with any visible part, with
``visible_fraction`` (holes less than half visible are optional for metrics;
holes hidden under the bar are omitted). A hole is **good** when it is fully
visible (``visible_fraction ≥ 0.999``), has no defect and its ice is within
:data:`GOOD_ICE_NM` (20–100 nm, the useful range for single-particle work).
Coordinates are ``[x, y] = [col, row]``. The ellipse ``angle_deg`` is the
angle of semi-axis ``a`` from the +x (column) axis towards +y (row).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from .physics import LAMBDA_NM, quantise
from .sample import SimulatedImage

#: Products: name -> (hole diameter µm, pitch µm).
PRODUCTS: dict[str, tuple[float, float]] = {
    "R1.2/1.3": (1.2, 2.5),
    "R2/1": (2.0, 3.0),
    "R2/2": (2.0, 4.0),
    "R1/1": (1.0, 2.0),
    "R0.6/1": (0.6, 1.6),
    "R1.2/1.3-hex": (1.2, 2.5),
    "HexAuFoil": (0.29, 0.6),
}

#: Ice thickness range (nm) of a good hole.
GOOD_ICE_NM = (20.0, 100.0)

DEFECTS = ("empty", "broken", "thick", "crystalline", "cracked", "contaminated")

_BAND_ROWS = 512


def _reduce_basis(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lagrange–Gauss reduction: the two shortest independent lattice vectors."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a @ a > b @ b:
        a, b = b, a
    for _ in range(64):
        mu = round(float(a @ b) / float(a @ a))
        if mu == 0:
            break
        b = b - mu * a
        if b @ b < a @ a:
            a, b = b, a
    return a, b


class _Gradient:
    """Smooth ice-thickness field (nm) evaluated at any (row, col): plane + a few slow waves."""

    def __init__(self, shape, amplitude_nm: float, rng: np.random.Generator):
        self.scale = float(max(shape))
        self.centre = np.array(shape, float) / 2.0
        self.amp = amplitude_nm
        self.plane = rng.normal(0, 1, 2) / math.sqrt(2)
        self.k = rng.normal(0, 1.5, (3, 2))
        self.phase = rng.uniform(0, 2 * math.pi, 3)
        self.w = rng.normal(0, 0.5, 3)

    def __call__(self, rows, cols):
        u = (np.asarray(rows, np.float32) - self.centre[0]) / self.scale
        v = (np.asarray(cols, np.float32) - self.centre[1]) / self.scale
        out = self.plane[0] * u + self.plane[1] * v
        for (kr, kc), ph, w in zip(self.k, self.phase, self.w, strict=True):
            out = out + w * np.cos(2 * math.pi * (kr * u + kc * v) + ph)
        return (self.amp * out).astype(np.float32)


class _Bar:
    """A grid-bar edge: bar where the signed distance ``s`` > 0 (px)."""

    def __init__(self, shape, rng: np.random.Generator, pitch_px: float):
        h, w = shape
        theta = rng.uniform(0, 2 * math.pi)
        self.normal = np.array([math.sin(theta), math.cos(theta)])  # (row, col), points into the bar
        # the edge line passes at 55–90 % of the way from the centre to the image boundary along the normal
        reach = abs(self.normal[0]) * h / 2 + abs(self.normal[1]) * w / 2
        self.point = np.array([h / 2, w / 2]) + self.normal * reach * rng.uniform(0.35, 0.8)
        self.rough_amp = rng.uniform(0.0, 0.08) * pitch_px
        self.rough_k = rng.uniform(0.5, 3.0, 2) / max(pitch_px, 1.0)
        self.rough_ph = rng.uniform(0, 2 * math.pi, 2)
        self.glow = rng.uniform(0.02, 0.12)
        self.glow_len = rng.uniform(0.3, 1.5) * pitch_px
        self.meniscus_nm = rng.uniform(0, 80)
        self.meniscus_len = rng.uniform(0.5, 3.0) * pitch_px

    def signed(self, rows, cols):
        dr = np.asarray(rows, np.float32) - np.float32(self.point[0])
        dc = np.asarray(cols, np.float32) - np.float32(self.point[1])
        s = dr * np.float32(self.normal[0]) + dc * np.float32(self.normal[1])
        along = -dr * np.float32(self.normal[1]) + dc * np.float32(self.normal[0])
        rough = sum(
            np.sin(2 * math.pi * k * along + ph) for k, ph in zip(self.rough_k, self.rough_ph, strict=True)
        )
        return s + np.float32(self.rough_amp / 2) * rough

    def to_json(self) -> dict[str, Any]:
        return {
            "normal": [float(self.normal[1]), float(self.normal[0])],
            "point": [float(self.point[1]), float(self.point[0])],
            "roughness_px": float(self.rough_amp),
            "glow": float(self.glow),
            "definition": "bar where (p - point)·normal + roughness > 0; [x, y]",
        }


def _draw_params(rng: np.random.Generator, shape, film, contrast, lattice, ov: dict) -> dict[str, Any]:
    """All session parameters; any key can be overridden."""
    p: dict[str, Any] = {}

    def take(key, default_fn):
        p[key] = ov.pop(key) if key in ov else default_fn()
        return p[key]

    film = film or ("gold" if rng.random() < 0.35 else "carbon")
    if film not in ("gold", "carbon"):
        raise ValueError(f"film must be 'gold' or 'carbon', got {film!r}")
    contrast = "normal" if film == "gold" else (contrast or str(rng.choice(["normal", "low", "inverted"],
                                                                           p=[0.5, 0.25, 0.25])))
    if contrast not in ("normal", "low", "inverted"):
        raise ValueError(f"contrast must be normal, low or inverted, got {contrast!r}")
    lattice = lattice or str(rng.choice(["square", "oblique", "hex"], p=[0.6, 0.2, 0.2]))
    if lattice not in ("square", "oblique", "hex"):
        raise ValueError(f"lattice must be square, oblique or hex, got {lattice!r}")
    p.update(film=film, contrast=contrast, lattice=lattice)
    names = [n for n in PRODUCTS if ("hex" in n.lower()) == (lattice == "hex")]
    take("product", lambda: str(rng.choice(names)))
    d_um, pitch_um = PRODUCTS[p["product"]]
    hole_px = take("hole_px", lambda: float(np.exp(rng.uniform(np.log(18), np.log(110)))))
    take("pixel_size_nm", lambda: float(np.clip(d_um * 1000.0 / hole_px, 5.0, 200.0)))
    p["hole_diameter_px"] = d_um * 1000.0 / p["pixel_size_nm"]
    p["pitch_px"] = pitch_um * 1000.0 / p["pixel_size_nm"]
    take("angle_deg", lambda: float(rng.uniform(0, 180)))
    take("tilt_deg", lambda: float(rng.uniform(20, 45)) if lattice == "oblique" else 0.0)
    take("tilt_axis_deg", lambda: float(rng.uniform(0, 180)))
    take("dose", lambda: float(np.exp(rng.uniform(np.log(15), np.log(120)))))
    take("ice_nm", lambda: float(rng.uniform(25, 90)))
    take("gradient_nm", lambda: float(rng.uniform(0, 25)))
    take("hole_ice_sd_nm", lambda: float(rng.uniform(2, 12)))
    take("carbon_nm", lambda: float(rng.uniform(10, 25)))
    take("gold_nm", lambda: float(rng.uniform(40, 60)))
    lo_hi = {"normal": (0.04, 0.25), "low": (0.008, 0.03), "inverted": (-0.10, -0.01)}[contrast]
    take("contrast_value", lambda: float(rng.uniform(*lo_hi)))
    take("rim_od", lambda: float(rng.uniform(0, 0.06)) if rng.random() < 0.6 else 0.0)
    take("rim_px", lambda: float(rng.uniform(0.8, 2.5)))
    take("meniscus_nm", lambda: float(rng.uniform(0, 20)))
    take("jitter_px", lambda: float(min(rng.uniform(0, 12) / p["pixel_size_nm"], 0.02 * p["pitch_px"])))
    take("radius_sd", lambda: float(rng.uniform(0, 0.015)))
    take("defect_rate", lambda: float(rng.uniform(0.03, 0.25)))
    take("film_blobs_per_cell", lambda: float(rng.uniform(0, 0.04)))
    take("bar", lambda: bool(rng.random() < 0.35))
    take("psf_sigma_px", lambda: float(rng.uniform(0.4, 1.5)))
    take("gain_sigma", lambda: float(rng.uniform(0.0, 0.04)))
    take("falloff", lambda: float(rng.uniform(0.0, 0.15)))
    take("dtype", lambda: str(rng.choice(["int16", "uint16", "float32"])))
    take("header_pixel_size", lambda: bool(rng.random() < 0.5))
    if ov:
        raise ValueError(f"unknown simulate_square_image override(s): {sorted(ov)}")
    return p


def simulate_square_image(
    seed: int,
    *,
    shape: tuple[int, int] = (1024, 1440),
    film: str | None = None,
    contrast: str | None = None,
    lattice: str | None = None,
    **overrides: Any,
) -> SimulatedImage:
    """Simulate a medium-magnification image of one square with exact truth.

    Parameters
    ----------
    seed : int
        Everything is drawn from ``numpy.random.default_rng(seed)``.
    shape : (rows, cols)
        Image size (up to 8192² is fine: rendering is banded).
    film : {"gold", "carbon"}, optional
    contrast : {"normal", "low", "inverted"}, optional
        Carbon only (gold is always "normal": holes much brighter).
    lattice : {"square", "oblique", "hex"}, optional
    **overrides
        Any session parameter (see ``truth["params"]``): ``product``,
        ``hole_px``, ``pixel_size_nm``, ``angle_deg``, ``tilt_deg``,
        ``tilt_axis_deg``, ``dose``, ``ice_nm``, ``contrast_value``,
        ``defect_rate``, ``bar``, ``dtype``, ...

    Returns
    -------
    SimulatedImage
        ``kind="square"``; ``truth`` as documented in the module docstring.
    """
    rng = np.random.default_rng(seed)
    shape = (int(shape[0]), int(shape[1]))
    h, w = shape
    p = _draw_params(rng, shape, film, contrast, lattice, dict(overrides))
    lam_ice = LAMBDA_NM["ice"]

    # --- geometry (row, col) -------------------------------------------------
    pitch = p["pitch_px"]
    r0 = p["hole_diameter_px"] / 2.0
    ang = math.radians(p["angle_deg"])
    rot = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
    if p["lattice"] == "hex":
        b0 = np.array([[0.0, pitch * math.sqrt(3) / 2], [pitch, pitch / 2]])
    else:
        b0 = np.array([[0.0, pitch], [pitch, 0.0]])
    tilt = math.radians(p["tilt_deg"])
    ta = math.radians(p["tilt_axis_deg"])
    n = np.array([math.sin(ta + math.pi / 2), math.cos(ta + math.pi / 2)])  # compressed direction
    comp = np.eye(2) - (1 - math.cos(tilt)) * np.outer(n, n)
    basis = comp @ rot @ b0  # columns are lattice vectors (row, col)
    a_vec, b_vec = _reduce_basis(basis[:, 0], basis[:, 1])
    basis = np.column_stack([a_vec, b_vec])
    kmat = np.linalg.inv(basis)  # fractional = kmat @ (x - origin)
    centre = np.array([(h - 1) / 2.0, (w - 1) / 2.0])
    origin = centre + basis @ rng.uniform(-0.5, 0.5, 2)
    # hole ellipse: unit circle mapped by comp·r; quadratic form q = d^T Q d, rho² = q
    minv = np.linalg.inv(comp * r0)
    qmat = minv.T @ minv
    ell_a, ell_b = r0, r0 * math.cos(tilt)
    # direction of the a axis = tilt axis (perpendicular to n), in (row, col)
    axis_a = np.array([n[1], -n[0]]) if tilt > 0 else np.array([0.0, 1.0])
    ell_angle = math.degrees(math.atan2(axis_a[0], axis_a[1])) % 180.0  # from +x towards +y
    r_eff = math.sqrt(ell_a * ell_b)

    # --- lattice nodes covering the image --------------------------------------
    corners = np.array([[-pitch, -pitch], [-pitch, w + pitch], [h + pitch, -pitch], [h + pitch, w + pitch]])
    frac = (kmat @ (corners - origin).T).T
    imin, jmin = np.floor(frac.min(axis=0)).astype(int) - 1
    imax, jmax = np.ceil(frac.max(axis=0)).astype(int) + 1
    ni, nj = imax - imin + 1, jmax - jmin + 1
    ii, jj = np.meshgrid(np.arange(imin, imax + 1), np.arange(jmin, jmax + 1), indexing="ij")
    nodes = origin[None, None, :] + ii[..., None] * basis[:, 0] + jj[..., None] * basis[:, 1]
    jitter = rng.normal(0, 1, nodes.shape) * p["jitter_px"]
    centres = (nodes + jitter).astype(np.float64)
    rscale = (1.0 + p["radius_sd"] * rng.standard_normal((ni, nj))).clip(0.9, 1.1)

    # --- ice ------------------------------------------------------------------
    grad = _Gradient(shape, p["gradient_nm"], rng)
    bar = _Bar(shape, rng, pitch) if p["bar"] else None
    t_hole = (p["ice_nm"] + grad(centres[..., 0], centres[..., 1])
              + p["hole_ice_sd_nm"] * rng.standard_normal((ni, nj))).astype(np.float64)
    if bar is not None:
        s_c = bar.signed(centres[..., 0], centres[..., 1])
        t_hole += bar.meniscus_nm * np.exp(np.minimum(s_c, 0) / bar.meniscus_len)
    t_hole = np.clip(t_hole, 5.0, None)
    # film: choose the film ice so the hole/film contrast is the wanted one (at the session mean ice)
    if p["film"] == "carbon":
        film_od_fixed = p["carbon_nm"] / LAMBDA_NM["carbon"]
        t_film_ice = p["ice_nm"] + lam_ice * (math.log1p(p["contrast_value"]) - film_od_fixed)
        if t_film_ice < 0:  # cannot be that bright with this carbon: thinner carbon instead
            film_od_fixed = max(film_od_fixed + t_film_ice / lam_ice, 0.0)
            p["carbon_nm"] = film_od_fixed * LAMBDA_NM["carbon"]
            t_film_ice = 0.0
    else:
        film_od_fixed = p["gold_nm"] / LAMBDA_NM["gold"]
        t_film_ice = float(rng.uniform(5, 30))
    p["film_ice_nm"] = float(t_film_ice)

    # --- defects ------------------------------------------------------------------
    defect = np.full((ni, nj), "none", dtype=object)
    draw = rng.random((ni, nj)) < p["defect_rate"]
    kinds = rng.choice(DEFECTS, size=(ni, nj), p=[0.2, 0.1, 0.25, 0.15, 0.1, 0.2])
    defect[draw] = kinds[draw]
    t_hole[defect == "thick"] = rng.uniform(150, 350, size=int((defect == "thick").sum()))
    empty = (defect == "empty") | (defect == "broken")
    t_hole[empty] = 0.0
    men = np.where(empty, 0.0, p["meniscus_nm"])

    # --- per-pixel pass: optical depth, banded ------------------------------------
    od = np.empty(shape, np.float32)
    f32 = np.float32
    kq = kmat.astype(np.float32)
    q = qmat.astype(np.float32)
    cr, cc = centres[..., 0].astype(np.float32), centres[..., 1].astype(np.float32)
    t_h32, men32, rs32 = t_hole.astype(np.float32), men.astype(np.float32), rscale.astype(np.float32)
    cols = np.arange(w, dtype=np.float32)[None, :]
    for r0b in range(0, h, _BAND_ROWS):
        r1b = min(h, r0b + _BAND_ROWS)
        rows = np.arange(r0b, r1b, dtype=np.float32)[:, None]
        dr0, dc0 = rows - f32(origin[0]), cols - f32(origin[1])
        fi = np.rint(kq[0, 0] * dr0 + kq[0, 1] * dc0).astype(np.int32) - imin
        fj = np.rint(kq[1, 0] * dr0 + kq[1, 1] * dc0).astype(np.int32) - jmin
        np.clip(fi, 0, ni - 1, out=fi)
        np.clip(fj, 0, nj - 1, out=fj)
        dr = rows - cr[fi, fj]
        dc = cols - cc[fi, fj]
        rho = np.sqrt(q[0, 0] * dr * dr + 2 * q[0, 1] * dr * dc + q[1, 1] * dc * dc) / rs32[fi, fj]
        cover = np.clip(f32(0.5) + (f32(1) - rho) * f32(r_eff), 0, 1)
        t_film = f32(t_film_ice) + grad(rows, cols)
        t_in = t_h32[fi, fj] + men32[fi, fj] * np.minimum(rho, 1) ** 6
        film_od = f32(film_od_fixed) + np.maximum(t_film, 0) / f32(lam_ice)
        band = cover * t_in / f32(lam_ice) + (1 - cover) * film_od
        if p["rim_od"] > 0:
            out = np.maximum(rho - 1, 0) * f32(r_eff)
            band += (1 - cover) * f32(p["rim_od"]) * np.exp(-out / f32(p["rim_px"]))
        if bar is not None:
            s = bar.signed(rows, cols)
            band += np.where(s < 0, bar.meniscus_nm * np.exp(np.minimum(s, 0) / f32(bar.meniscus_len)), 0) \
                / f32(lam_ice) * (1 - cover)
            band[s > 0] = 30.0  # opaque
        od[r0b:r1b] = band

    # --- local defects -------------------------------------------------------
    ext = int(math.ceil(r0 * 1.1 + 3))

    def patch(ci, cj, extra=0.0):
        """Index window around hole (ci, cj) and its pixel coordinates / rho."""
        rc, ccn = centres[ci, cj]
        e = int(ext + extra)
        ra, rb = max(0, int(rc) - e), min(h, int(rc) + e + 1)
        ca, cb = max(0, int(ccn) - e), min(w, int(ccn) + e + 1)
        if ra >= rb or ca >= cb:
            return None
        yy, xx = np.mgrid[ra:rb, ca:cb].astype(np.float32)
        dr, dc = yy - f32(rc), xx - f32(ccn)
        rho = np.sqrt(q[0, 0] * dr * dr + 2 * q[0, 1] * dr * dc + q[1, 1] * dc * dc) / f32(rscale[ci, cj])
        return (slice(ra, rb), slice(ca, cb)), dr, dc, rho

    def blob(sl, dr, dc, br, bc, rad, depth):
        d2 = ((dr - br) ** 2 + (dc - bc) ** 2) / (rad * rad)
        od[sl] += f32(depth) * np.clip(1.2 - d2, 0, 1).astype(np.float32) ** 0.5

    for ci, cj in zip(*np.nonzero(draw), strict=True):
        kind = defect[ci, cj]
        if kind in ("empty", "thick"):
            continue
        pt = patch(ci, cj, extra=r0 * 0.8 if kind in ("broken", "contaminated") else 0.0)
        if pt is None:
            continue
        sl, dr, dc, rho = pt
        if kind == "broken":
            # torn film: a vacuum lobe across the hole edge
            phi = rng.uniform(0, 2 * math.pi)
            br, bc = r0 * 1.1 * math.sin(phi), r0 * 1.1 * math.cos(phi)
            rad = r0 * rng.uniform(0.4, 0.8)
            lobe = ((dr - br) ** 2 + (dc - bc) ** 2) < rad * rad
            od[sl][lobe & (od[sl] < 29)] = 0.0
            od[sl][(rho < 1) & (od[sl] < 29)] = 0.0
        elif kind == "crystalline":
            speck = ndi.gaussian_filter(rng.standard_normal(rho.shape).astype(np.float32), 0.8)
            speck /= speck.std() + 1e-6
            inside = rho < 1
            od[sl][inside] *= np.clip(1 + 0.6 * speck[inside], 0.2, None)
            od[sl][inside] += np.clip(speck[inside] - 1.5, 0, None) * 0.3
        elif kind == "cracked":
            phi = rng.uniform(0, math.pi)
            off = rng.uniform(-0.4, 0.4) * r0
            dist = np.abs(dr * math.cos(phi) - dc * math.sin(phi) - off)
            width = rng.uniform(0.8, 2.0)
            od[sl][(dist < width) & (rho < 1)] *= 0.1
        elif kind == "contaminated":
            for _ in range(int(rng.integers(1, 5))):
                rad = r0 * rng.uniform(0.12, 0.45)
                dist, phi = r0 * rng.uniform(0, 1.3), rng.uniform(0, 2 * math.pi)
                blob(sl, dr, dc, dist * math.sin(phi), dist * math.cos(phi), rad, rng.uniform(1.0, 3.5))

    # contamination on the film: blobs; those touching a hole make it contaminated
    n_blobs = rng.poisson(p["film_blobs_per_cell"] * h * w / abs(np.linalg.det(basis)))
    for _ in range(int(n_blobs)):
        br, bc = rng.uniform(0, h), rng.uniform(0, w)
        rad = r0 * rng.uniform(0.1, 0.4)
        fi, fj = np.rint(kmat @ (np.array([br, bc]) - origin)).astype(int) - (imin, jmin)
        if not (0 <= fi < ni and 0 <= fj < nj):
            continue
        e = int(rad * 1.2 + 2)
        ra, rb = max(0, int(br) - e), min(h, int(br) + e + 1)
        ca, cb = max(0, int(bc) - e), min(w, int(bc) + e + 1)
        if ra >= rb or ca >= cb:
            continue
        yy, xx = np.mgrid[ra:rb, ca:cb].astype(np.float32)
        blob((slice(ra, rb), slice(ca, cb)), yy - f32(br), xx - f32(bc), 0.0, 0.0, rad, rng.uniform(1.0, 3.5))
        d = np.array([br, bc]) - centres[fi, fj]
        if math.sqrt(d @ qmat @ d) * r0 < r0 + rad * 0.8 and defect[fi, fj] == "none":
            defect[fi, fj] = "contaminated"

    # --- expose (banded) ------------------------------------------------------
    data = np.empty(shape, np.dtype(p["dtype"]))
    psf = p["psf_sigma_px"]
    halo = int(math.ceil(4 * psf)) + 1
    ill_c = rng.uniform(-0.15, 0.15, size=2)
    for r0b in range(0, h, _BAND_ROWS):
        r1b = min(h, r0b + _BAND_ROWS)
        ra, rb = max(0, r0b - halo), min(h, r1b + halo)
        trans = np.exp(-od[ra:rb])
        if bar is not None:  # scattered electrons: a soft glow on the open side of the bar
            s = bar.signed(np.arange(ra, rb, dtype=np.float32)[:, None], cols)
            trans += np.where(s < 0, f32(bar.glow) * np.exp(np.minimum(s, 0) / f32(bar.glow_len)), 0)
        if psf > 0:
            trans = ndi.gaussian_filter(trans, psf, mode="nearest")
        trans = trans[r0b - ra: r0b - ra + (r1b - r0b)]
        ill = _illumination(np.arange(r0b, r1b), np.arange(w), shape, p["falloff"], ill_c)
        gain = 1.0 + p["gain_sigma"] * rng.standard_normal(trans.shape, dtype=np.float32)
        lam = np.clip(p["dose"] * trans * ill * gain, 0, None)
        data[r0b:r1b] = quantise(rng.poisson(lam).astype(np.float32), p["dtype"])

    # --- truth -------------------------------------------------------------------
    vis = _visible_fraction(centres.reshape(-1, 2), minv, rscale.reshape(-1), shape, bar).reshape(ni, nj)
    holes = []
    ill_at = _illumination_points(centres[..., 0], centres[..., 1], shape, p["falloff"], ill_c)
    hid = 0
    for ci in range(ni):
        for cj in range(nj):
            vf = float(vis[ci, cj])
            if vf <= 0:
                continue
            d = str(defect[ci, cj])
            t = float(t_hole[ci, cj])
            if d == "none" and vf < 0.999:
                d = "cut"
            if d == "none" and t > 150:
                d = "thick"
            good = d == "none" and GOOD_ICE_NM[0] <= t <= GOOD_ICE_NM[1]
            why = _why(d, t, vf, good)
            rc, ccn = centres[ci, cj]
            rs = float(rscale[ci, cj])
            holes.append({
                "id": hid,
                "center": [float(ccn), float(rc)],
                "radius": float(r_eff * rs),
                "ellipse": {"a": float(ell_a * rs), "b": float(ell_b * rs), "angle_deg": float(ell_angle)},
                "visible_fraction": round(vf, 4),
                "ice_thickness_nm": round(t, 3),
                "good": bool(good),
                "defect": d,
                "why": why,
                "index": [int(ci + imin), int(cj + jmin)],
                "in_image": bool(-0.5 <= rc <= h - 0.5 and -0.5 <= ccn <= w - 0.5),
                "illumination": round(float(ill_at[ci, cj]), 5),
            })
            hid += 1

    params = {k: (float(v) if isinstance(v, (np.floating, float)) else v) for k, v in p.items()}
    params["illumination_centre"] = [float(ill_c[0]), float(ill_c[1])]
    truth = {
        "kind": "square",
        "shape": [h, w],
        "pixel_size_nm": float(p["pixel_size_nm"]),
        "seed": int(seed),
        "params": params,
        "i0": float(p["dose"]),
        "film": p["film"],
        "contrast": p["contrast"],
        "lattice": {
            "kind": p["lattice"],
            "basis": [[float(basis[1, 0]), float(basis[0, 0])], [float(basis[1, 1]), float(basis[0, 1])]],
            "origin": [float(origin[1]), float(origin[0])],
            "tilt_deg": float(p["tilt_deg"]),
            "pitch_px": float(pitch),
        },
        "holes": holes,
        "bar": bar.to_json() if bar is not None else None,
        "good_definition": (
            f"fully visible (visible_fraction >= 0.999), defect 'none', ice {GOOD_ICE_NM[0]:g}-"
            f"{GOOD_ICE_NM[1]:g} nm"
        ),
    }
    return SimulatedImage(data=data, pixel_size_nm=float(p["pixel_size_nm"]), truth=truth, kind="square",
                          header_pixel_size=bool(p["header_pixel_size"]))


def _why(defect: str, t: float, vf: float, good: bool) -> str:
    if good:
        return f"intact, ice {t:.0f} nm"
    return {
        "empty": "no ice (vacuum)",
        "broken": "film torn, no ice",
        "thick": f"thick ice {t:.0f} nm",
        "crystalline": "crystalline ice (speckle)",
        "cracked": "cracked ice",
        "contaminated": "contamination on or next to the hole",
        "cut": f"cut by the image edge or a grid bar ({vf:.0%} visible)",
    }.get(defect, f"ice {t:.0f} nm outside {GOOD_ICE_NM[0]:g}-{GOOD_ICE_NM[1]:g} nm")


def _illumination(rows, cols, shape, falloff, centre):
    """Vignetting as :func:`physics.illumination`, for a band of rows (float32)."""
    u = np.linspace(-1, 1, shape[0], dtype=np.float32)[rows][:, None] - np.float32(centre[0])
    v = np.linspace(-1, 1, shape[1], dtype=np.float32)[cols][None, :] - np.float32(centre[1])
    return (1.0 - falloff * np.clip((u * u + v * v) / 2.0, 0, 1.5)).astype(np.float32)


def _illumination_points(rows, cols, shape, falloff, centre):
    u = -1 + 2 * np.asarray(rows, float) / max(shape[0] - 1, 1) - centre[0]
    v = -1 + 2 * np.asarray(cols, float) / max(shape[1] - 1, 1) - centre[1]
    return 1.0 - falloff * np.clip((u * u + v * v) / 2.0, 0, 1.5)


def _disk_samples(n_ring: int = 8) -> np.ndarray:
    """Points uniform in area in the unit disk (centre + rings), (K, 2)."""
    pts = [np.zeros((1, 2))]
    for k in range(1, n_ring + 1):
        rad = (k - 0.5) / n_ring
        m = 6 * k
        a = np.arange(m) * 2 * math.pi / m + k * 0.37
        pts.append(np.column_stack([rad * np.sin(a), rad * np.cos(a)]))
    return np.concatenate(pts)[1:]


def _visible_fraction(centres, minv, rscale, shape, bar) -> np.ndarray:
    """Fraction of each ellipse inside the image and off the bar (sampled)."""
    h, w = shape
    unit = _disk_samples()
    m = np.linalg.inv(minv)  # unit disk -> ellipse
    local = unit @ m.T
    out = np.ones(len(centres))
    reach = float(np.abs(m).sum(axis=1).max()) * 1.15
    near = ((centres[:, 0] < reach) | (centres[:, 0] > h - 1 - reach)
            | (centres[:, 1] < reach) | (centres[:, 1] > w - 1 - reach))
    if bar is not None:
        s = bar.signed(centres[:, 0], centres[:, 1])
        near |= s > -reach - bar.rough_amp
    idx = np.nonzero(near)[0]
    for start in range(0, len(idx), 4096):
        sel = idx[start:start + 4096]
        pts = centres[sel, None, :] + local[None] * rscale[sel, None, None]
        ok = ((pts[..., 0] >= -0.5) & (pts[..., 0] <= h - 0.5)
              & (pts[..., 1] >= -0.5) & (pts[..., 1] <= w - 0.5))
        if bar is not None:
            ok &= bar.signed(pts[..., 0], pts[..., 1]) < 0
        out[sel] = ok.mean(axis=1)
    return out
