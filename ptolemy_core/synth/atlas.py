"""Low-magnification atlas simulator (grid squares on a mesh), with exact ground truth.

Physics (see ``shared/reference/imaging.md`` and :mod:`ptolemy_core.synth.physics`):

- **Mesh** from real products: 200 / 300 / 400 mesh (pitch 125 / 83 / 62 µm), bars
  25–45 % of the pitch, opaque; square windows with rounded corners; a 3.05 mm disc whose
  solid rim (and the cartridge clip ring) is opaque outside the meshed area.
- **Film and ice** per window: Beer–Lambert ``T = exp(-Σ t_i/λ_i)`` through vitreous ice
  and a holey film (carbon, or gold that is nearly opaque); where the holes are resolved
  (hole pitch ≥ 4 px) they are drawn, else their area fraction is averaged. Ice thickness
  follows a smooth gradient across the grid plus per-square jitter, thicker near the bars
  (meniscus). A soft glow of scattered electrons lies on the bars next to each window and
  a thin bright/dark rim can outline it.
- **Defects**: broken (torn film: vacuum patches, ``T = 1``), empty (no film, no ice),
  thick, opaque, cracked (vacuum lines), contaminated (dark blobs), thin; squares cut by
  the atlas edge get ``visible_fraction < 1``.
- **Detector**: counts ``~ Poisson(I0 · T⊛PSF · illumination · gain)`` + read noise +
  offset; int16 / uint16 / float32 storage.
- **Montages**: tiles (3×3 … 6×6) with their own vignetting, brightness and a small
  registration error (seams), and optionally gaps between tiles filled with 0 or the mean.

Rendering is analytic: every layer is a function of the pixel coordinates evaluated on
blocks (a vectorised signed-distance field of the rounded windows and separable bilinear
smooth fields), so a 4096² atlas takes a few seconds and memory stays bounded.

Ground truth (``SimulatedImage.truth``, ``kind="atlas"``), coordinates ``[x, y] =
[column, row]`` in pixels of the image: per square ``center``, ``vertices`` (the open
window's rectangle, aligned with the grid, around the shape), ``area`` (of that rectangle,
px², as Ptolemy's boxes), ``visible_vertices`` (the rectangle clipped by the image),
``visible_fraction``, ``ice_thickness_nm``, ``transmission`` (expected mean transmission of
the window interior without defects), ``good``, ``defect``, ``why``.

**Good** (``GOOD_ICE_NM``): the film is intact (defect ``none``), the mean ice thickness
``t`` satisfies ``20 ≤ t ≤ 100`` nm, and at least half of the square is visible. Squares
with intact film but ``t`` outside the window get defect ``thin`` / ``thick``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from .physics import LAMBDA_NM, gain_map, quantise
from .sample import SimulatedImage

#: Mesh number → pitch in µm (real products).
MESH_PITCH_UM = {200: 125.0, 300: 83.0, 400: 62.0}
#: Useful ice window (nm), inclusive: a square is good when its film is intact and its
#: mean ice thickness lies in it (and at least half of it is visible).
GOOD_ICE_NM = (20.0, 100.0)
#: Defects a square can carry (``none`` = intact film).
DEFECTS = ("none", "broken", "empty", "thick", "thin", "opaque", "cracked", "contaminated")
#: Grid disc: 3.05 mm diameter; the meshed area has this radius (µm), beyond it is solid rim.
MESH_RADIUS_UM = 1250.0

_BLOCK_PIXELS = 1 << 21  # pixels rendered at once (bounded memory: ~20 float32 temporaries)


# --------------------------------------------------------------------------- fields
class _Field:
    """Smooth zero-mean unit-variance random field over the scene, evaluable on any block.

    A coarse Gaussian-smoothed noise grid (spacing ``scale/2``) is bilinearly interpolated,
    separably (rows then columns), so a block costs ~3 operations per pixel.
    """

    def __init__(self, extent: tuple[float, float, float, float], scale_px: float,
                 rng: np.random.Generator) -> None:
        r_min, r_max, c_min, c_max = extent
        self.step = max(scale_px / 2.0, 1.0)
        self.r0, self.c0 = r_min - 2 * self.step, c_min - 2 * self.step
        nr = int(math.ceil((r_max - self.r0) / self.step)) + 4
        nc = int(math.ceil((c_max - self.c0) / self.step)) + 4
        grid = ndi.gaussian_filter(rng.standard_normal((nr, nc)), 1.0)
        grid -= grid.mean()
        sd = grid.std()
        self.grid = (grid / (sd if sd > 0 else 1.0)).astype(np.float32)

    def at(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Values on the rectilinear block ``rows × cols`` (1-D coordinate vectors)."""
        fr = (np.asarray(rows, np.float64) - self.r0) / self.step
        fc = (np.asarray(cols, np.float64) - self.c0) / self.step
        ir = np.clip(np.floor(fr).astype(int), 0, self.grid.shape[0] - 2)
        ic = np.clip(np.floor(fc).astype(int), 0, self.grid.shape[1] - 2)
        wr = np.clip(fr - ir, 0, 1).astype(np.float32)[:, None]
        wc = np.clip(fc - ic, 0, 1).astype(np.float32)[None, :]
        a = self.grid[ir] * (1 - wr) + self.grid[ir + 1] * wr
        return a[:, ic] * (1 - wc) + a[:, ic + 1] * wc

    def at_points(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Values at scattered points (bilinear)."""
        fr = (np.asarray(rows, np.float64) - self.r0) / self.step
        fc = (np.asarray(cols, np.float64) - self.c0) / self.step
        return ndi.map_coordinates(self.grid, [fr, fc], order=1, mode="nearest")


# --------------------------------------------------------------------------- parameters
def _draw_params(rng: np.random.Generator, shape: tuple[int, int], montage: bool | None) -> dict[str, Any]:
    """Every random choice of a session, drawn in a fixed order (determinism)."""
    p: dict[str, Any] = {}
    p["montage"] = bool(rng.random() < 0.5) if montage is None else bool(montage)
    # Mesh and pixel size: keep at least ~3 pitches across and windows ≥ 16 px.
    for _ in range(100):
        mesh = int(rng.choice([200, 300, 400]))
        px = float(rng.uniform(200.0, 600.0))
        pitch = MESH_PITCH_UM[mesh] * 1000.0 / px
        bar = float(rng.uniform(0.25, 0.45))
        if pitch <= min(shape) / 2.5 and pitch * (1 - bar) >= 16:
            break
    else:  # tiny images: shrink the pitch through the pixel size
        mesh, bar = 400, 0.3
        px = 600.0
    p.update(mesh=mesh, pixel_size_nm=round(px, 3), bar_fraction=round(bar, 4))
    p["angle_deg"] = float(rng.uniform(0.0, 90.0))
    p["corner_radius_frac"] = float(rng.uniform(0.04, 0.22))  # of the window width
    p["origin_frac"] = [float(v) for v in rng.uniform(0, 1, 2)]  # lattice phase
    p["grid_offset_frac"] = [float(v) for v in rng.uniform(-1, 1, 2)]  # grid centre vs image centre
    p["film"] = "gold" if rng.random() < 0.3 else "carbon"
    p["film_nm"] = float(rng.uniform(40, 60) if p["film"] == "gold" else rng.uniform(10, 25))
    p["hole_pitch_um"] = float(rng.choice([2.0, 2.5, 3.0, 4.0]))
    p["hole_fraction"] = float(rng.uniform(0.15, 0.45))
    # Ice: session mean, gradient across the grid (nm per mm), smooth variation, jitter.
    p["ice_mean_nm"] = float(rng.uniform(35.0, 95.0))
    p["ice_gradient_nm_per_mm"] = float(rng.uniform(0.0, 60.0))
    p["ice_gradient_dir_deg"] = float(rng.uniform(0, 360))
    p["ice_field_sd_nm"] = float(rng.uniform(5.0, 25.0))
    p["ice_jitter_nm"] = float(rng.uniform(2.0, 10.0))
    p["meniscus_nm"] = float(rng.uniform(0.0, 120.0))
    p["meniscus_width_frac"] = float(rng.uniform(0.03, 0.12))
    p["glow"] = float(rng.uniform(0.0, 0.12))
    p["glow_width_frac"] = float(rng.uniform(0.02, 0.08))
    p["rim"] = float(rng.uniform(-0.08, 0.12))
    total = float(rng.uniform(0.08, 0.45))
    w = rng.dirichlet(np.ones(6))
    kinds = ("broken", "empty", "thick", "opaque", "cracked", "contaminated")
    p["defect_rates"] = {k: round(total * float(v), 4) for k, v in zip(kinds, w, strict=True)}
    # Detector.
    p["dose"] = float(np.exp(rng.uniform(np.log(150.0), np.log(5000.0))))  # vacuum counts / px
    p["offset"] = float(rng.uniform(0.0, 0.5) * p["dose"] if rng.random() < 0.35 else rng.uniform(0, 10))
    p["read_noise"] = float(rng.uniform(0.0, 4.0))
    p["gain_sigma"] = float(rng.uniform(0.005, 0.03))
    p["psf_sigma_px"] = float(rng.uniform(0.6, 1.6))
    p["falloff"] = float(rng.uniform(0.0, 0.25))
    p["dtype"] = str(rng.choice(["uint16", "int16", "float32"], p=[0.4, 0.3, 0.3]))
    p["header_pixel_size"] = bool(rng.random() < 0.6)
    # Montage layout.
    n_r = int(rng.integers(3, 7))
    n_c = int(np.clip(round(n_r * shape[1] / shape[0] + rng.integers(-1, 2)), 3, 6))
    p["tiles"] = [n_r, n_c]
    p["tile_brightness_sd"] = float(rng.uniform(0.0, 0.08))
    p["tile_falloff"] = [float(v) for v in sorted(rng.uniform(0.03, 0.3, 2))]
    p["tile_shift_px"] = float(rng.uniform(0.0, 2.0))
    p["tile_gap_px"] = int(rng.integers(1, 6)) if rng.random() < 0.3 else 0
    p["gap_fill"] = str(rng.choice(["zero", "mean"]))
    return p


# --------------------------------------------------------------------------- geometry
class _Grid:
    """Lattice of windows: angle, pitch, origin, which cells exist, per-square properties."""

    def __init__(self, p: dict[str, Any], shape: tuple[int, int], rng: np.random.Generator) -> None:
        self.shape = shape
        px = p["pixel_size_nm"]
        self.pitch = MESH_PITCH_UM[p["mesh"]] * 1000.0 / px
        self.half = 0.5 * self.pitch * (1.0 - p["bar_fraction"])  # half window width
        self.corner = p["corner_radius_frac"] * 2 * self.half
        th = math.radians(p["angle_deg"])
        # Lattice axes in (row, col): a along +col rotated by θ, b perpendicular.
        self.a = np.array([math.sin(th), math.cos(th)])
        self.b = np.array([math.cos(th), -math.sin(th)])
        ctr = np.array([(shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0])
        self.origin = ctr + self.pitch * (np.asarray(p["origin_frac"]) - 0.5) @ np.array([self.a, self.b])
        # Grid disc: place its centre so the atlas mostly lies on the mesh.
        self.radius = MESH_RADIUS_UM * 1000.0 / px
        slack = max(0.0, self.radius - 0.3 * min(shape))
        self.disc_center = ctr + np.asarray(p["grid_offset_frac"]) * slack / math.sqrt(2)
        # Candidate cells: all lattice cells whose centre lies within a pitch of the image.
        corners = np.array([[0, 0], [0, shape[1]], [shape[0], 0], [shape[0], shape[1]]], float)
        uv = (corners - self.origin) @ np.array([self.a, self.b]).T / self.pitch
        i_lo, i_hi = int(np.floor(uv[:, 0].min())) - 1, int(np.ceil(uv[:, 0].max())) + 1
        j_lo, j_hi = int(np.floor(uv[:, 1].min())) - 1, int(np.ceil(uv[:, 1].max())) + 1
        ii, jj = np.meshgrid(np.arange(i_lo, i_hi + 1), np.arange(j_lo, j_hi + 1), indexing="ij")
        centers = self.origin + self.pitch * (ii[..., None] * self.a + jj[..., None] * self.b)
        in_disc = np.hypot(*(centers - self.disc_center).transpose(2, 0, 1)) + self.half * math.sqrt(2) \
            <= self.radius
        near = ((centers[..., 0] > -self.pitch) & (centers[..., 0] < shape[0] + self.pitch)
                & (centers[..., 1] > -self.pitch) & (centers[..., 1] < shape[1] + self.pitch))
        exists = in_disc & near
        self.i_lo, self.j_lo = i_lo, j_lo
        self.index = np.full(ii.shape, -1, dtype=np.int64)
        self.index[exists] = np.arange(int(exists.sum()))
        self.cells = np.stack([ii[exists], jj[exists]], axis=1)
        self.centers = centers[exists]  # (n, 2) (row, col)
        self.n = len(self.centers)

    def local(self, rows: np.ndarray, cols: np.ndarray):
        """Per pixel of the block: square index (-1 none), signed distance to its window (px, <0 inside)."""
        r = (rows[:, None] - self.origin[0]).astype(np.float32)
        c = (cols[None, :] - self.origin[1]).astype(np.float32)
        u = (r * np.float32(self.a[0]) + c * np.float32(self.a[1])) / np.float32(self.pitch)
        v = (r * np.float32(self.b[0]) + c * np.float32(self.b[1])) / np.float32(self.pitch)
        iu = np.rint(u)
        iv = np.rint(v)
        du = np.abs(u - iu) * np.float32(self.pitch)
        dv = np.abs(v - iv) * np.float32(self.pitch)
        ci = np.clip(iu.astype(np.int64) - self.i_lo, 0, self.index.shape[0] - 1)
        cj = np.clip(iv.astype(np.int64) - self.j_lo, 0, self.index.shape[1] - 1)
        sq = self.index[ci, cj]
        # Signed distance of a rounded square (half width h, corner radius rc).
        inner = np.float32(self.half - self.corner)
        qu = du - inner
        qv = dv - inner
        outside = np.hypot(np.maximum(qu, 0), np.maximum(qv, 0))
        sd = outside + np.minimum(np.maximum(qu, qv), 0) - np.float32(self.corner)
        return sq, sd

    def rectangle(self, k: int) -> np.ndarray:
        """Window rectangle of square ``k``: (4, 2) (row, col), around the shape."""
        c = self.centers[k]
        h = self.half
        return np.array([c - h * self.a - h * self.b, c + h * self.a - h * self.b,
                         c + h * self.a + h * self.b, c - h * self.a + h * self.b])


def _clip_to_image(poly: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Sutherland–Hodgman clip of a (K, 2) (row, col) polygon by the image's pixel area."""
    bounds = [(0, -0.5, 1), (0, shape[0] - 0.5, -1), (1, -0.5, 1), (1, shape[1] - 0.5, -1)]
    out = [tuple(p) for p in poly]
    for axis, limit, sign in bounds:
        inp, out = out, []
        if not inp:
            break
        prev = inp[-1]
        for cur in inp:
            cin = sign * (cur[axis] - limit) >= 0
            pin = sign * (prev[axis] - limit) >= 0
            if cin != pin:
                t = (limit - prev[axis]) / (cur[axis] - prev[axis])
                out.append((prev[0] + t * (cur[0] - prev[0]), prev[1] + t * (cur[1] - prev[1])))
            if cin:
                out.append(tuple(cur))
            prev = cur
    return np.asarray(out, float).reshape(-1, 2)


def _poly_area(poly: np.ndarray) -> float:
    if len(poly) < 3:
        return 0.0
    y, x = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


# --------------------------------------------------------------------------- the scene
class _Scene:
    """Transmission of the whole grid as a function of pixel coordinates."""

    def __init__(self, p: dict[str, Any], shape: tuple[int, int], rng: np.random.Generator) -> None:
        self.p = p
        g = self.grid = _Grid(p, shape, rng)
        px = p["pixel_size_nm"]
        m = 8.0
        extent = (-m, shape[0] + m, -m, shape[1] + m)
        w = 2 * g.half
        # Fields (fixed draw order).
        self.f_ice = _Field(extent, 5 * g.pitch, rng)
        self.f_local = _Field(extent, max(w / 3, 4), rng)       # intra-square ice variation
        self.f_broken = _Field(extent, max(w / 2.5, 4), rng)    # torn-film patches
        self.f_crack = _Field(extent, max(w / 1.5, 6), rng)     # crack lines (zero crossings)
        self.f_crack2 = _Field(extent, max(w / 1.2, 6), rng)
        self.f_blob = _Field(extent, max(w / 14, 2.5), rng)     # contamination blobs
        # Per-square ice: gradient + smooth field + jitter.
        n = g.n
        c_mm = (g.centers - g.disc_center) * px * 1e-6
        d = math.radians(p["ice_gradient_dir_deg"])
        grad = p["ice_gradient_nm_per_mm"] * (c_mm[:, 0] * math.sin(d) + c_mm[:, 1] * math.cos(d))
        smooth = p["ice_field_sd_nm"] * (self.f_ice.at_points(g.centers[:, 0], g.centers[:, 1])
                                         if n else np.zeros(0))
        t = p["ice_mean_nm"] + grad + smooth + p["ice_jitter_nm"] * rng.standard_normal(n)
        t = np.clip(t, 2.0, None)
        # Defects.
        rates = p["defect_rates"]
        names = list(rates)
        probs = np.array([rates[k] for k in names], float)
        u = rng.random(n)
        cum = np.cumsum(probs)
        defect = np.array(["none"] * n, dtype=object)
        for k, name in enumerate(names):
            lo = cum[k - 1] if k else 0.0
            defect[(u >= lo) & (u < cum[k])] = name
        thick_t = rng.uniform(150.0, 600.0, n)
        opaque_t = rng.uniform(900.0, 2000.0, n)
        t = np.where(defect == "thick", thick_t, t)
        t = np.where(defect == "opaque", opaque_t, t)
        t = np.where(defect == "empty", 0.0, t)
        lo_ok, hi_ok = GOOD_ICE_NM
        intact = defect == "none"
        defect[intact & (t > hi_ok)] = "thick"
        defect[intact & (t < lo_ok)] = "thin"
        self.defect = defect
        self.t = t.astype(np.float64)
        self.broken_level = rng.uniform(-0.3, 1.0, n)  # vacuum where f_broken > level
        self.crack_width = rng.uniform(0.04, 0.10, n)
        self.blob_level = rng.uniform(1.0, 1.8, n)
        self.blob_depth = rng.uniform(1.5, 4.0, n)
        self.meniscus = p["meniscus_nm"] * rng.uniform(0.5, 1.5, n)
        # Film: area fraction of holes; hole lattice drawn where resolved.
        self.hole_pitch_px = p["hole_pitch_um"] * 1000.0 / px
        self.hole_fraction = p["hole_fraction"]
        self.hole_radius_px = self.hole_pitch_px * math.sqrt(self.hole_fraction / math.pi)
        self.hole_angle = math.radians(p["angle_deg"] + rng.uniform(-3, 3))
        self.hole_phase = rng.uniform(0, 1, 2)
        self.film_T = math.exp(-p["film_nm"] / LAMBDA_NM["gold" if p["film"] == "gold" else "carbon"])

    def film_mean(self) -> float:
        """Mean film transmission factor of an intact window (holes + film between holes)."""
        f = self.hole_fraction
        return f + (1 - f) * self.film_T

    def expected_transmission(self, k: int) -> float:
        """Mean transmission of the interior of square ``k`` if it had no spatial defect."""
        if self.defect[k] == "empty":
            return 1.0
        return float(self.film_mean() * math.exp(-self.t[k] / LAMBDA_NM["ice"]))

    def transmission(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Transmission on the block ``rows × cols`` (continuous pixel coordinates)."""
        g = self.grid
        p = self.p
        sq, sd = g.local(rows, cols)
        valid = sq >= 0
        k = np.where(valid, sq, 0)
        w = 2 * g.half
        lam = np.float32(LAMBDA_NM["ice"])
        inside = np.clip(np.float32(0.5) - sd, 0, 1) * valid  # antialiased window mask
        depth = np.maximum(-sd, 0)
        t = self.t.astype(np.float32)[k] if g.n else np.zeros_like(sd)
        # Meniscus: ice thicker close to the bars; small smooth variation inside.
        men_w = np.float32(p["meniscus_width_frac"] * w)
        t = t + self.meniscus.astype(np.float32)[k] * np.exp(-depth / men_w)
        t = t + np.float32(2.0) * self.f_local.at(rows, cols)  # a few nm of local variation
        t = np.maximum(t, 0)
        ice_T = np.exp(-t / lam)
        # Holey film.
        if self.hole_pitch_px >= 4.0:
            ca, sa = math.cos(self.hole_angle), math.sin(self.hole_angle)
            hp = np.float32(self.hole_pitch_px)
            r_ = rows[:, None].astype(np.float32)
            c_ = cols[None, :].astype(np.float32)
            hu = (r_ * np.float32(sa) + c_ * np.float32(ca)) / hp + np.float32(self.hole_phase[0])
            hv = (r_ * np.float32(ca) - c_ * np.float32(sa)) / hp + np.float32(self.hole_phase[1])
            dh = np.hypot(hu - np.rint(hu), hv - np.rint(hv)) * hp
            hole = np.clip(np.float32(self.hole_radius_px) - dh + np.float32(0.5), 0, 1)
            film = hole + (1 - hole) * np.float32(self.film_T)
        else:
            film = np.float32(self.film_mean())
        trans = film * ice_T
        # Spatial defects (only evaluated where such squares exist in the block).
        dname = self.defect[k]
        vac = np.zeros(sd.shape, dtype=bool)
        is_broken = valid & (dname == "broken")
        if is_broken.any():
            vac |= is_broken & (self.f_broken.at(rows, cols) > self.broken_level.astype(np.float32)[k])
        is_cracked = valid & (dname == "cracked")
        if is_cracked.any():
            cw = self.crack_width.astype(np.float32)[k]
            f1 = self.f_crack.at(rows, cols)
            f2 = self.f_crack2.at(rows, cols)
            vac |= is_cracked & ((np.abs(f1) < cw) | (np.abs(f2) < cw * 0.7))
        vac |= valid & (dname == "empty")
        trans = np.where(vac, np.float32(1.0), trans)
        is_cont = valid & (dname == "contaminated")
        if is_cont.any():
            b = np.maximum(self.f_blob.at(rows, cols) - self.blob_level.astype(np.float32)[k], 0)
            trans = np.where(is_cont, trans * np.exp(-self.blob_depth.astype(np.float32)[k] * b * 3), trans)
        # Bright/dark rim at the window edge, glow of scattered electrons on the bars.
        if p["rim"]:
            trans = trans * (1 + np.float32(p["rim"]) * np.exp(-0.5 * (depth / 1.2) ** 2))
        open_level = np.float32(self.film_mean()) * np.exp(-self.t.astype(np.float32)[k] / lam) \
            if g.n else np.zeros_like(sd)
        glow_w = np.float32(p["glow_width_frac"] * w)
        glow = np.float32(p["glow"]) * open_level * np.exp(-np.maximum(sd, 0) / glow_w)
        out = inside * trans + (1 - inside) * glow * valid
        # Outside the meshed disc: solid rim / clip ring, opaque.
        dr = rows[:, None] - g.disc_center[0]
        dc = cols[None, :] - g.disc_center[1]
        out = np.where(dr * dr + dc * dc > g.radius ** 2, np.float32(0), out)
        return out.astype(np.float32)


# --------------------------------------------------------------------------- exposure
def _illumination_block(rows: np.ndarray, cols: np.ndarray, frame: tuple[float, float, float, float],
                        falloff: float, center: np.ndarray) -> np.ndarray:
    """Radial fall-off over one exposure ``frame = (r0, r1, c0, c1)`` (as physics.illumination)."""
    r0, r1, c0, c1 = frame
    rn = 2 * (rows - r0) / max(r1 - r0, 1) - 1
    cn = 2 * (cols - c0) / max(c1 - c0, 1) - 1
    r2 = ((rn[:, None] - center[0]) ** 2 + (cn[None, :] - center[1]) ** 2) / 2.0
    return (1.0 - falloff * np.clip(r2, 0, 1.5)).astype(np.float32)


def _expose_block(scene: _Scene, rows: np.ndarray, cols: np.ndarray, p: dict[str, Any],
                  rng: np.random.Generator, illum: np.ndarray, halo: int) -> np.ndarray:
    """Counts for a block; ``rows``/``cols`` include ``halo`` pixels each side for the PSF."""
    trans = scene.transmission(rows, cols)
    if p["psf_sigma_px"] > 0:
        trans = ndi.gaussian_filter(trans, p["psf_sigma_px"], mode="nearest")
    if halo:
        trans = trans[halo:-halo, halo:-halo]
    mean = p["dose"] * trans * illum * gain_map(trans.shape, p["gain_sigma"], rng)
    counts = rng.poisson(np.clip(mean, 0, None)).astype(np.float32)
    if p["read_noise"] > 0:
        counts += rng.normal(0.0, p["read_noise"], size=counts.shape).astype(np.float32)
    return counts + np.float32(p["offset"])


def _render(scene: _Scene, p: dict[str, Any], shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    out = np.empty(shape, dtype=np.float32)
    halo = int(math.ceil(4 * p["psf_sigma_px"])) + 1
    if not p["montage"]:
        center = rng.uniform(-0.15, 0.15, 2)
        step = max(_BLOCK_PIXELS // shape[1], 32)
        frame = (0.0, shape[0] - 1.0, 0.0, shape[1] - 1.0)
        for r0 in range(0, shape[0], step):
            r1 = min(r0 + step, shape[0])
            rows = np.arange(r0 - halo, r1 + halo, dtype=np.float64)
            cols = np.arange(-halo, shape[1] + halo, dtype=np.float64)
            illum = _illumination_block(rows[halo:-halo], cols[halo:-halo], frame, p["falloff"], center)
            out[r0:r1] = _expose_block(scene, rows, cols, p, rng, illum, halo)
        return out
    n_r, n_c = p["tiles"]
    rb = np.linspace(0, shape[0], n_r + 1).round().astype(int)
    cb = np.linspace(0, shape[1], n_c + 1).round().astype(int)
    gap = p["tile_gap_px"]
    gaps = []
    for ti in range(n_r):
        for tj in range(n_c):
            r0, r1, c0, c1 = rb[ti], rb[ti + 1], cb[tj], cb[tj + 1]
            bright = 1.0 + p["tile_brightness_sd"] * rng.standard_normal()
            fall = rng.uniform(*p["tile_falloff"])
            center = rng.uniform(-0.2, 0.2, 2)
            shift = rng.uniform(-1, 1, 2) * p["tile_shift_px"]
            # The tile was exposed over a slightly larger frame (overlap with neighbours).
            ov_r, ov_c = 0.06 * (r1 - r0), 0.06 * (c1 - c0)
            frame = (r0 - ov_r, r1 - 1 + ov_r, c0 - ov_c, c1 - 1 + ov_c)
            rows = np.arange(r0 - halo, r1 + halo, dtype=np.float64) + shift[0]
            cols = np.arange(c0 - halo, c1 + halo, dtype=np.float64) + shift[1]
            illum = _illumination_block(np.arange(r0, r1, dtype=float), np.arange(c0, c1, dtype=float),
                                        frame, fall, center) * np.float32(bright)
            out[r0:r1, c0:c1] = _expose_block(scene, rows, cols, p, rng, illum, halo)
            if gap and ti < n_r - 1:
                gaps.append((slice(r1 - gap, r1), slice(c0, c1)))
            if gap and tj < n_c - 1:
                gaps.append((slice(r0, r1), slice(c1 - gap, c1)))
    if gaps:
        fill = np.float32(0.0 if p["gap_fill"] == "zero" else float(out.mean()))
        for sl in gaps:
            out[sl] = fill
    return out


# --------------------------------------------------------------------------- truth
def _why(defect: str, t: float, visible: float) -> tuple[bool, str]:
    lo, hi = GOOD_ICE_NM
    reasons = {
        "broken": "torn film: bright vacuum patches",
        "empty": "no film and no ice (dry): uniform vacuum",
        "thick": f"ice too thick ({t:.0f} nm > {hi:.0f} nm)",
        "thin": f"ice too thin ({t:.0f} nm < {lo:.0f} nm)",
        "opaque": f"opaque ({t:.0f} nm of ice, no signal)",
        "cracked": "cracked film: vacuum cracks",
        "contaminated": "contaminated: dark ice crystals / ethane blobs",
    }
    if defect != "none":
        why = reasons[defect]
        if visible < 0.5:
            why += f"; only {visible:.0%} visible (cut by the atlas edge)"
        return False, why
    if visible < 0.5:
        return False, f"only {visible:.0%} visible (cut by the atlas edge)"
    return True, f"intact film, {t:.0f} nm of ice (within {lo:.0f}-{hi:.0f} nm)"


def _truth_squares(scene: _Scene, shape: tuple[int, int]) -> list[dict[str, Any]]:
    g = scene.grid
    out = []
    full = (2 * g.half) ** 2
    for k in range(g.n):
        rect = g.rectangle(k)
        vis_poly = _clip_to_image(rect, shape)
        visible = _poly_area(vis_poly) / full
        if visible <= 1e-3:
            continue
        visible = min(1.0, visible)
        defect = str(scene.defect[k])
        t = float(scene.t[k])
        good, why = _why(defect, t, visible)
        out.append({
            "id": len(out),
            "center": [float(g.centers[k][1]), float(g.centers[k][0])],
            "vertices": [[float(c), float(r)] for r, c in rect],
            "area": float(full),
            "visible_vertices": [[float(c), float(r)] for r, c in vis_poly],
            "visible_fraction": round(float(visible), 6),
            "ice_thickness_nm": round(t, 3),
            "transmission": round(scene.expected_transmission(k), 6),
            "good": bool(good),
            "defect": defect,
            "why": why,
            "lattice_index": [int(g.cells[k][0]), int(g.cells[k][1])],
        })
    return out


# --------------------------------------------------------------------------- API
def simulate_atlas(seed: int, *, shape: tuple[int, int] = (1024, 1024), montage: bool | None = None,
                   **overrides: Any) -> SimulatedImage:
    """Simulate a low-magnification atlas with exact ground truth.

    Parameters
    ----------
    seed : int
        Everything is drawn from ``np.random.default_rng(seed)``: same seed, same image.
    shape : (int, int)
        Rows, columns (any aspect ratio, e.g. 1024² … 8192²).
    montage : bool or None
        Assemble from tiles (seams, per-tile brightness and vignetting, gaps); None draws it.
    **overrides
        Any key of ``truth["params"]`` (e.g. ``mesh=300``, ``pixel_size_nm=400``,
        ``angle_deg=10``, ``falloff=0``, ``dose=2000``, ``offset=0``, ``dtype="float32"``,
        ``defect_rates={...}``, ``tiles=[4, 4]``); applied after all random draws so the
        other parameters stay those of the seed.

    Returns
    -------
    SimulatedImage
        ``kind="atlas"``; ``truth`` as described in the module docstring.
    """
    shape = (int(shape[0]), int(shape[1]))
    if min(shape) < 16:
        raise ValueError(f"atlas shape must be at least 16 x 16, got {shape}")
    rng = np.random.default_rng(seed)
    p = _draw_params(rng, shape, montage)
    unknown = set(overrides) - set(p)
    if unknown:
        raise ValueError(f"unknown atlas parameter(s): {', '.join(sorted(unknown))}")
    p.update(overrides)
    scene = _Scene(p, shape, rng)
    counts = _render(scene, p, shape, rng)
    data = quantise(counts, p["dtype"])
    g = scene.grid
    truth = {
        "kind": "atlas",
        "shape": [shape[0], shape[1]],
        "pixel_size_nm": float(p["pixel_size_nm"]),
        "seed": int(seed),
        "params": p,
        "i0": float(p["dose"]),
        "offset": float(p["offset"]),
        "good_ice_nm": list(GOOD_ICE_NM),
        "lambda_nm": LAMBDA_NM["ice"],
        "grid": {
            "angle_deg": float(p["angle_deg"]),
            "pitch_px": float(g.pitch),
            "bar_fraction": float(p["bar_fraction"]),
            "window_px": float(2 * g.half),
            "corner_radius_px": float(g.corner),
            "disc_center": [float(g.disc_center[1]), float(g.disc_center[0])],
            "disc_radius_px": float(g.radius),
        },
        "squares": _truth_squares(scene, shape),
    }
    return SimulatedImage(data=data, pixel_size_nm=float(p["pixel_size_nm"]), truth=truth, kind="atlas",
                          header_pixel_size=bool(p["header_pixel_size"]))
