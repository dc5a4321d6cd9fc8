"""Image formation shared by the atlas and square-image simulators.

Physics (see the project's imaging notes):
- Beer–Lambert: ``I = I0 · exp(-Σ t_i / λ_i)``; the ice mean free path λ is
  ~300–400 nm at 200–300 kV; grid bars are opaque.
- The detector records Poisson counts of the dose times the transmission,
  times a per-pixel gain, after the optics blur the wave (PSF) and the
  illumination falls off towards the edges; read-out adds an offset and
  Gaussian read noise; files store int16/uint16/float32.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

#: Effective inelastic mean free paths in nm (200–300 kV, objective aperture).
LAMBDA_NM = {"ice": 350.0, "carbon": 250.0, "gold": 12.0}


def transmission(**thickness_nm: np.ndarray | float) -> np.ndarray | float:
    """Beer–Lambert transmission through stacked layers.

    Parameters
    ----------
    **thickness_nm
        Layer thickness per material (``ice=``, ``carbon=``, ``gold=``), arrays
        broadcastable to each other; materials are keys of :data:`LAMBDA_NM`.

    Returns
    -------
    ndarray or float
        ``exp(-Σ t_i / λ_i)`` in 0..1.
    """
    optical_depth = 0.0
    for material, t in thickness_nm.items():
        optical_depth = optical_depth + np.asarray(t, dtype=np.float64) / LAMBDA_NM[material]
    return np.exp(-optical_depth)


def thickness_from_intensity(intensity, i0, lam: float = LAMBDA_NM["ice"]):
    """Inverse Beer–Lambert: ``t = λ · ln(I0 / I)`` (nm)."""
    return lam * np.log(np.asarray(i0, dtype=np.float64) / np.asarray(intensity, dtype=np.float64))


def smooth_field(shape: tuple[int, int], scale_px: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-std smooth random field with correlation length ``scale_px``.

    Built on a coarse grid and interpolated, so cost does not depend on ``scale_px``.
    """
    step = max(scale_px / 2.0, 1.0)
    coarse = (int(np.ceil(shape[0] / step)) + 3, int(np.ceil(shape[1] / step)) + 3)
    field = ndi.gaussian_filter(rng.standard_normal(coarse), 1.0)
    rows = np.linspace(1, coarse[0] - 2, shape[0])
    cols = np.linspace(1, coarse[1] - 2, shape[1])
    out = ndi.map_coordinates(field, np.meshgrid(rows, cols, indexing="ij"), order=1)
    out -= out.mean()
    sd = out.std()
    return (out / sd if sd > 0 else out).astype(np.float32)


def illumination(shape: tuple[int, int], falloff: float, rng: np.random.Generator) -> np.ndarray:
    """Illumination with radial fall-off (vignetting): 1 at the beam centre, ``1-falloff`` at the corners."""
    rows = np.linspace(-1, 1, shape[0])[:, None]
    cols = np.linspace(-1, 1, shape[1])[None, :]
    r0, c0 = rng.uniform(-0.15, 0.15, size=2)
    r2 = ((rows - r0) ** 2 + (cols - c0) ** 2) / 2.0
    return (1.0 - falloff * np.clip(r2, 0, 1.5)).astype(np.float32)


def gain_map(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Detector gain: 1 ± ``sigma`` per pixel (imperfect gain reference)."""
    return (1.0 + sigma * rng.standard_normal(shape)).astype(np.float32)


def expose(
    trans: np.ndarray,
    dose: float,
    rng: np.random.Generator,
    *,
    psf_sigma_px: float = 0.7,
    falloff: float = 0.1,
    gain_sigma: float = 0.02,
    offset: float = 0.0,
    read_noise: float = 0.0,
    illum: np.ndarray | None = None,
) -> np.ndarray:
    """Turn a transmission map into recorded counts (float32).

    Parameters
    ----------
    trans : ndarray
        Transmission 0..1 per pixel.
    dose : float
        Mean electrons per pixel through vacuum (``I0``).
    rng : numpy.random.Generator
    psf_sigma_px : float
        Gaussian point-spread sigma (optics + detector), pixels.
    falloff : float
        Vignetting strength, see :func:`illumination`.
    gain_sigma : float
        Per-pixel gain variation.
    offset, read_noise : float
        Read-out offset and Gaussian read noise (counts).
    illum : ndarray, optional
        Precomputed illumination (e.g. shared by montage tiles).
    """
    signal = np.asarray(trans, dtype=np.float32)
    if psf_sigma_px > 0:
        signal = ndi.gaussian_filter(signal, psf_sigma_px)
    if illum is None:
        illum = illumination(signal.shape, falloff, rng)
    mean = np.clip(dose * signal * illum * gain_map(signal.shape, gain_sigma, rng), 0, None)
    counts = rng.poisson(mean).astype(np.float32)
    if read_noise > 0:
        counts += rng.normal(0.0, read_noise, size=counts.shape).astype(np.float32)
    return counts + np.float32(offset)


def quantise(counts: np.ndarray, dtype: str | np.dtype) -> np.ndarray:
    """Store as a camera would: clip and round to integer types, or keep float."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(counts), info.min, info.max).astype(dtype)
    return counts.astype(dtype)
