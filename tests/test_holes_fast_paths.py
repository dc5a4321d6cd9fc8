"""The hole finder's fast paths give the same numbers as the straightforward code they replace.

Speed work on ``holes/lattice.py`` (batched folds, the row-block Gaussian, in-place background
subtraction, vectorised peak refinement) is meant to be output-preserving bit for bit; these
tests compare each fast path with a reference written the plain way (scipy / one basis at a time).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage as ndi

from ptolemy_core.holes import lattice as lat


def _lattice_image(shape=(300, 420), seed=0):
    """Faint discs on an oblique lattice plus noise, flattened like the finder's analysed crops."""
    rng = np.random.default_rng(seed)
    basis = np.array([[17.3, 4.1], [-6.2, 19.7]])
    rr, cc = np.mgrid[0:shape[0], 0:shape[1]].astype(float)
    frac = np.linalg.solve(basis.T, np.stack([rr.ravel(), cc.ravel()]))
    d = (frac - np.rint(frac)).T @ basis
    img = 100.0 + 3.0 * (np.hypot(d[:, 0], d[:, 1]) < 5.0).reshape(shape)
    img = img + rng.normal(0, 2.0, shape)
    return lat.flatten(img.astype(np.float32), max(shape) / 8.0), basis


def _fold_cell_reference(flat, basis, m=24, max_px=200_000):
    """fold_cell as first written: one basis, separate smoothing of counts, sums and squares."""
    h, w = flat.shape
    kmat = np.linalg.inv(basis.T)
    st = max(1, int(math.ceil(math.sqrt(h * w / max_px))))
    rows = np.arange(0, h, st, dtype=np.float32)[:, None]
    cols = np.arange(0, w, st, dtype=np.float32)[None, :]
    u = kmat[0, 0] * rows + kmat[0, 1] * cols
    v = kmat[1, 0] * rows + kmat[1, 1] * cols
    idx = ((np.floor((u - np.floor(u)) * m).astype(np.int64) % m) * m
           + np.floor((v - np.floor(v)) * m).astype(np.int64) % m).ravel()
    vals = flat[::st, ::st].ravel().astype(np.float64)

    def smooth(x):
        return ndi.gaussian_filter(x.reshape(m, m), 1.0, mode="wrap")

    n = smooth(np.bincount(idx, minlength=m * m).astype(np.float64))
    if (n < 3).mean() > 0.2:
        return None
    cell = smooth(np.bincount(idx, vals, minlength=m * m)) / np.maximum(n, 1e-9)
    var = smooth(np.bincount(idx, vals * vals, minlength=m * m)) / np.maximum(n, 1e-9) - cell ** 2
    noise = math.sqrt(max(float(np.median(var)), 1e-12) / max(float(np.median(n)), 1.0)) / 2.0
    return cell, noise


def test_batched_folds_equal_one_at_a_time():
    flat, basis = _lattice_image()
    rng = np.random.default_rng(1)
    bases = [basis, np.array([[14.5, 2.5], [-2.5, 14.5]]), 2 * basis]
    for _ in range(25):
        a, th = rng.uniform(6, 60), rng.uniform(0, math.pi)
        th2, r = th + rng.uniform(0.7, 2.4), rng.uniform(0.7, 1.4)
        bases.append(np.array([[a * math.sin(th), a * math.cos(th)],
                               [a * r * math.sin(th2), a * r * math.cos(th2)]]))
    for max_px in (200_000, 25_000):
        ref = [_fold_cell_reference(flat, b, max_px=max_px) for b in bases]
        snr_ref = [0.0 if c is None else float(np.abs(c[0] - np.median(c[0])).max() / c[1]) for c in ref]
        assert lat.fold_snrs(flat, bases, max_px=max_px) == snr_ref
        for b, c in zip(bases, ref, strict=True):
            got = lat.fold_cell(flat, b, max_px=max_px)
            assert (got is None) == (c is None)
            if c is not None:
                assert np.array_equal(got[0], c[0]) and got[1] == c[1]
    # the true lattice folds far better than a random cell
    assert snr_ref[0] > 3 * np.median(snr_ref[3:])


@pytest.mark.parametrize("shape,sigma", [((700, 640), 0.7), ((1024, 130), 1.4), ((300, 1000), 2.3),
                                         ((60, 60), 0.7)])
def test_gaussian_filter2_is_scipys(shape, sigma):
    x = np.random.default_rng(2).normal(100, 10, shape).astype(np.float32)
    x[:7] = 0.0  # a dark band at the border (reflect mode)
    got = lat.gaussian_filter2(x, sigma)
    assert got.dtype == np.float32
    assert np.array_equal(got, ndi.gaussian_filter(x, sigma))


@pytest.mark.parametrize("sigma", [3.0, 17.3, 64.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_background_subtracted_in_place_equals_smooth_background(sigma, dtype):
    a = np.random.default_rng(3).normal(0, 1, (333, 517)).astype(dtype)
    want = a - lat.smooth_background(a, sigma)
    got = a.copy()
    lat._subtract_background(got, sigma)
    assert got.dtype == want.dtype and np.array_equal(got, want)


def test_fold_consistency_separates_lattice_from_noise():
    flat, basis = _lattice_image(seed=4)
    assert lat.fold_consistency(flat, basis) > 0.8
    noise = lat.flatten(np.random.default_rng(5).normal(0, 1, flat.shape).astype(np.float32), 50.0)
    assert abs(lat.fold_consistency(noise, basis)) < 0.3


def test_subpixel_many_equals_one_peak_at_a_time():
    # the vectorised peak refinement (ACF and spectrum) against the scalar parabola fit, on
    # float32 maps like the ACF/spectra, including flat and one-sided neighbourhoods
    rng = np.random.default_rng(6)
    a = ndi.gaussian_filter(rng.normal(0, 1, (60, 70)), 1.5).astype(np.float32)
    a[10:13, 20:23] = 1.0  # den == 0: no sub-pixel shift
    r = rng.integers(1, 59, 300)
    c = rng.integers(1, 69, 300)
    r[:2], c[:2] = 11, 21
    sr, sc = lat._subpixel_many(a, r, c)
    want = np.array([lat._subpixel(a, int(i), int(j)) for i, j in zip(r, c, strict=True)])
    assert np.array_equal(sr, want[:, 0]) and np.array_equal(sc, want[:, 1])
    assert np.array_equal(want[:2], [[11.0, 21.0], [11.0, 21.0]])
    # peaks: the shift stays within half a pixel
    assert np.abs(sr - r).max() <= 0.5 and np.abs(sc - c).max() <= 0.5
