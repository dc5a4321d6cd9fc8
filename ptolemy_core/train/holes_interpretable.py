"""Fit the provisional interpretable hole score on simulated training sessions.

``python -m ptolemy_core.train.holes_interpretable [--images N] [--seed0 S] [-o OUT.json]``

Training images are :func:`ptolemy_core.train.simdata.simulate_training_image` square
images (seeds ``>= simdata.TRAIN_SEED0``, the wider training ranges of ice and defects),
never the benchmark's seeds. For each image the lattice finder runs (with the true I0 for
every other image, so both a caller's I0 and the estimate from empty holes are seen); each
detection is labelled by the one truth hole it lies in (holes less than half visible or
centred outside the image are left out, as in the benchmarks). Every image contributes its
rows twice: once with the thickness the finder measured, once with the thickness unknown,
so the relative-thickness branch of :data:`ptolemy_core.holes.score.FEATURES` is fitted on
all images too. A logistic regression (L2, C = 1) is fitted on the rows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from ..holes import find_holes
from ..holes.score import FEATURES, WEIGHTS_PATH, feature_matrix
from ..metrics import points_in_ellipses, roc_auc, truth_hole_regions
from .simdata import TRAIN_SEED0, simulate_training_image

#: Target.features keys the score reads (see :func:`ptolemy_core.holes.score.feature_matrix`).
_KEYS = {"rel_brightness": "relative_brightness", "noise_excess": "noise_excess", "dark_od": "dark_od",
         "ring_dark_fraction": "ring_dark_fraction", "visible_fraction": "visible_fraction",
         "edge_clearance": "edge_clearance"}


def labelled_rows(truth: dict, targets) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the targets inside exactly one required truth hole, and that hole's ``good``."""
    holes = truth["holes"]
    if not holes or not targets:
        return np.zeros(0, int), np.zeros(0, bool)
    c, ax, ang, opt = truth_hole_regions(truth)
    det = np.array([t.center for t in targets], float)
    inside = points_in_ellipses(c, ax, ang, det)
    one = np.flatnonzero(inside.sum(axis=0) == 1)
    owner = inside[:, one].argmax(axis=0)
    keep = ~opt[owner]
    good = np.array([h["good"] for h in holes], bool)
    return one[keep], good[owner[keep]]


def target_features(targets) -> dict:
    """The measurement dict of :func:`~ptolemy_core.holes.measure.measure_holes` from targets."""
    return {k: np.array([t.features[v] for t in targets], float) for k, v in _KEYS.items()}


def collect(n_images: int, seed0: int, progress=None):
    """Design rows and good/bad labels from ``n_images`` simulated training images."""
    xs, ys = [], []
    for k in range(n_images):
        sim = simulate_training_image("square", seed0 + k)
        res = find_holes(sim.data, i0=sim.truth["i0"] if k % 2 == 0 else None)
        idx, y = labelled_rows(sim.truth, res.targets)
        if len(idx) == 0:
            continue
        tg = [res.targets[i] for i in idx]
        feats = target_features(tg)
        xs.append(feature_matrix(feats, [t.features["ice_thickness_nm"] for t in tg]))
        xs.append(feature_matrix(feats, [None] * len(tg)))
        ys += [y, y]
        if progress:
            progress(f"image {k + 1}/{n_images}: {len(tg)} holes, {int(y.sum())} good")
    return np.vstack(xs), np.concatenate(ys)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="fit the interpretable hole score on simulated training images")
    ap.add_argument("--images", type=int, default=80)
    ap.add_argument("--seed0", type=int, default=TRAIN_SEED0 + 5000)
    ap.add_argument("-o", "--output", default=str(WEIGHTS_PATH))
    args = ap.parse_args(argv)
    if args.seed0 < TRAIN_SEED0:
        ap.error(f"--seed0 must be >= {TRAIN_SEED0} (lower seeds belong to the benchmarks)")
    from sklearn.linear_model import LogisticRegression

    t0 = time.time()
    x, y = collect(args.images, args.seed0, progress=lambda m: print(m, file=sys.stderr, flush=True))
    model = LogisticRegression(C=1.0, max_iter=5000)
    model.fit(x, y)
    auc = roc_auc(model.predict_proba(x)[:, 1], y)
    out = {
        "features": list(FEATURES),
        "coef": [round(float(v), 6) for v in model.coef_[0]],
        "intercept": round(float(model.intercept_[0]), 6),
        "training": {
            "command": f"python -m ptolemy_core.train.holes_interpretable --images {args.images} "
                       f"--seed0 {args.seed0}",
            "rows": int(len(y)),
            "positives": int(y.sum()),
            "train_auc": round(float(auc), 4),
            "seconds": round(time.time() - t0, 1),
            "data": "ptolemy_core.train.simdata square training images (seeds >= 100000, training ranges); "
                    "each image's holes twice: measured thickness and thickness unknown",
        },
    }
    Path(args.output).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.output}: {len(y)} rows, {int(y.sum())} good, training AUC {auc:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
