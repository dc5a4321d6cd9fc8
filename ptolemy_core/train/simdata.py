"""Write a training folder from the simulators (format: see :mod:`ptolemy_core.train`).

Training data are kept apart from the benchmarks' held-out data in two ways:

- **Seeds**: training images use seeds ``>= TRAIN_SEED0`` (100000); the
  benchmarks (``benchmarks/suite.py``) use seeds below it.
- **Parameter ranges**: some session parameters are drawn here from ranges
  that differ from the simulators' defaults (which the benchmarks use):
  wider ice ranges (thin and thick sessions, so the models see both sides of
  the 20-100 nm window) and more defects (more negatives to learn from). See
  :data:`SQUARE_IMAGE_RANGES` and :data:`ATLAS_RANGES`.

Usage::

    python -m ptolemy_core.train.simdata square 160 /tmp/train_holes
    python -m ptolemy_core.train.simdata atlas 80 /tmp/train_squares
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PtolemyInputError

#: First seed of training images (benchmarks use seeds below this).
TRAIN_SEED0 = 100_000

#: Square-image training ranges (simulator defaults: ice 25-90 nm, defect rate 0.03-0.25).
SQUARE_IMAGE_RANGES = {"ice_nm": (12.0, 125.0), "defect_rate": (0.08, 0.40)}
#: Atlas training ranges (simulator defaults: ice mean 35-95 nm, defect total 0.08-0.45).
ATLAS_RANGES = {"ice_mean_nm": (15.0, 220.0), "defect_total": (0.15, 0.5)}


def training_overrides(kind: str, seed: int) -> dict[str, Any]:
    """Simulator overrides for training image ``seed`` (deterministic)."""
    rng = np.random.default_rng([seed, 7])
    if kind == "square":
        return {k: float(rng.uniform(*v)) for k, v in SQUARE_IMAGE_RANGES.items()}
    if kind == "atlas":
        total = float(rng.uniform(*ATLAS_RANGES["defect_total"]))
        w = rng.dirichlet(np.ones(6))
        kinds = ("broken", "empty", "thick", "opaque", "cracked", "contaminated")
        return {"ice_mean_nm": float(rng.uniform(*ATLAS_RANGES["ice_mean_nm"])),
                "defect_rates": {k: total * float(x) for k, x in zip(kinds, w, strict=True)}}
    raise PtolemyInputError(f"kind must be 'atlas' or 'square', got {kind!r}")


def simulate_training_image(kind: str, seed: int, shape: tuple[int, int] | None = None):
    """One simulated training image (:class:`~ptolemy_core.synth.SimulatedImage`)."""
    from .. import synth

    ov = training_overrides(kind, seed)
    if kind == "square":
        return synth.simulate_square_image(seed, shape=shape or (1024, 1440), **ov)
    return synth.simulate_atlas(seed, shape=shape or (1024, 1024), **ov)


def write_training_folder(kind: str, count: int, out: str | Path, *, seed0: int = TRAIN_SEED0,
                          shape: tuple[int, int] | None = None, progress=None) -> list[Path]:
    """Simulate ``count`` training images into ``out`` (``<kind>_<seed>.mrc`` + ``.json``).

    Parameters
    ----------
    kind : {"atlas", "square"}
    count : int
    out : path
        Created when missing.
    seed0 : int
        First seed (must be ≥ :data:`TRAIN_SEED0`).
    shape : (rows, cols), optional
        Image size (simulator default when None).
    progress : callable, optional
        Called with a one-line message per image.

    Returns
    -------
    list of Path
        The image files written.
    """
    if seed0 < TRAIN_SEED0:
        raise PtolemyInputError(f"training seeds must be >= {TRAIN_SEED0} (benchmarks use lower seeds)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        seed = seed0 + i
        sim = simulate_training_image(kind, seed, shape)
        mrc, _ = sim.save(out / f"{kind}_{seed}")
        paths.append(mrc)
        if progress is not None:
            progress(f"simulated {kind} {i + 1}/{count} (seed {seed})")
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ptolemy_core.train.simdata", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=("atlas", "square"))
    ap.add_argument("count", type=int)
    ap.add_argument("out")
    ap.add_argument("--seed0", type=int, default=TRAIN_SEED0)
    args = ap.parse_args(argv)
    try:
        write_training_folder(args.kind, args.count, args.out, seed0=args.seed0,
                              progress=lambda m: print(m, file=sys.stderr, flush=True))
    except PtolemyInputError as exc:
        print(f"simdata: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
