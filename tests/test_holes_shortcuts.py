"""The lattice search's shortcuts (round 7) skip work without changing the lattice found.

``estimate_basis`` skips the weak-lattice trial folds, the gradient-energy channel and the
extra ACF refinement crop when what it has already found is coherent and well sampled. Each
test runs the search with the shortcuts and with them disabled (thresholds set out of reach) and
checks that the expected shortcut fired (no refinement crop, no gradient-energy image) and that
the lattice is the same within 1 % (and the true one within the few % the finder's fit removes).
The trial-fold skip (TRIAL_SKIP_*) fires on neither image: the trial folds run on 1202 with and
without it, and the demo square never reaches them.
"""

from __future__ import annotations

import numpy as np
import pytest

from ptolemy_core.holes import lattice as lat
from ptolemy_core.synth.square_image import simulate_square_image

_OFF = dict(REFINE_SAMPLED_PITCH=np.inf, TRIAL_SKIP_SNR=np.inf, ENERGY_SKIP_SNR=np.inf)


def _truth_basis(truth):
    return np.array([[v[1], v[0]] for v in truth["lattice"]["basis"]], float)


def _same(b1, b2, tol):
    """Same lattice: every vector of b1 an integer combination of b2 (relative tol) and equal areas."""
    coef = np.linalg.solve(np.asarray(b2).T, np.asarray(b1).T).T
    a1, a2 = abs(np.linalg.det(b1)), abs(np.linalg.det(b2))
    return np.abs(coef - np.rint(coef)).max() <= tol and abs(a1 - a2) <= tol * a2


@pytest.mark.parametrize("seed,kw,crops,energy", [
    # tuning-range carbon low (the `benchmarks/suite.py` draw of tuning 1202): the lattice is
    # sampled finely enough at the scale it was found on (refinement crop skipped)
    (1202, dict(film="carbon", contrast="low", hole_px=21.19, dose=42.91, angle_deg=5.55), (2, 3), (1, 1)),
    # `ptolemy demo`'s inverted R2/1 square: the intensity alone is coherent (energy channel
    # skipped) and finely sampled (refinement crop skipped)
    (501725625, dict(film="carbon", contrast="inverted"), (1, 2), (0, 1)),
])
def test_shortcuts_keep_the_lattice(seed, kw, crops, energy, mocker):
    s = simulate_square_image(seed, shape=(1024, 1440), lattice="square", **kw)
    data = s.data.astype(np.float32)
    crop = mocker.spy(lat, "_central_crop")
    grad = mocker.spy(lat, "gradient_energy")
    fast = lat.estimate_basis(data)
    n_fast = (crop.call_count, grad.call_count)
    crop.reset_mock()
    grad.reset_mock()
    for name, value in _OFF.items():
        mocker.patch.object(lat, name, value)
    full = lat.estimate_basis(data)
    n_full = (crop.call_count, grad.call_count)
    assert fast is not None and full is not None
    # (analysed crops, gradient-energy images) with the shortcuts and without
    assert (n_fast[0], n_full[0]) == crops
    assert (n_fast[1], n_full[1]) == energy
    assert _same(fast[0], full[0], 0.01)
    # the estimate seeds the finder's own lattice fit: the true lattice within a few %
    assert _same(fast[0], _truth_basis(s.truth), 0.03)
