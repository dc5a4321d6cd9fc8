"""Fit the provisional interpretable hole score on simulated sessions.

``python -m ptolemy_core.train.holes_interpretable [--sessions N] [--seed S] [-o OUT.json]``

Seeded and quick (< 2 min on 2 cores): simulates square images with the
tuning seeds' generator (never the benchmark's held-out seeds), runs the
lattice finder (with the true I0 for half of the images so both the
with-thickness and without-thickness branches are fitted), labels each
detection by the hole it lies in (truth ``good``), and fits a logistic
regression on :data:`ptolemy_core.holes.score.FEATURES`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ..holes import find_holes
from ..holes.score import FEATURES, WEIGHTS_PATH, feature_matrix
from ..metrics import points_in_ellipses
from ..synth.square_image import simulate_square_image


def collect(n_sessions: int, seed: int):
    """Feature rows and good/bad labels from ``n_sessions`` simulated images."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for k in range(n_sessions):
        s = int(rng.integers(0, 2**31 - 1))
        sim = simulate_square_image(s, shape=(768, 1024), defect_rate=float(rng.uniform(0.1, 0.35)))
        given = sim.truth["i0"] if k % 2 == 0 else None
        res = find_holes(sim.data, i0=given)
        holes = sim.truth["holes"]
        if not res.targets or not holes:
            continue
        c = np.array([h["center"][::-1] for h in holes])
        ax = np.array([[h["ellipse"]["a"], h["ellipse"]["b"]] for h in holes])
        ang = np.radians(90.0 - np.array([h["ellipse"]["angle_deg"] for h in holes]))
        det = np.array([t.center for t in res.targets])
        inside = points_in_ellipses(c, ax, ang, det)
        feats = {
            "rel_brightness": [t.features["relative_brightness"] for t in res.targets],
            "std_rel": [t.features["std_rel"] for t in res.targets],
            "dark_fraction": [t.features["dark_fraction"] for t in res.targets],
            "ring_dark_fraction": [t.features["ring_dark_fraction"] for t in res.targets],
            "visible_fraction": [t.features["visible_fraction"] for t in res.targets],
        }
        x = feature_matrix(feats, [t.features["ice_thickness_nm"] for t in res.targets])
        for j in range(len(det)):
            hit = np.nonzero(inside[:, j])[0]
            if len(hit) != 1:
                continue
            xs.append(x[j])
            ys.append(bool(holes[hit[0]]["good"]))
    return np.array(xs), np.array(ys)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="fit the interpretable hole score on simulated data")
    ap.add_argument("--sessions", type=int, default=24)
    ap.add_argument("--seed", type=int, default=20240)
    ap.add_argument("-o", "--output", default=str(WEIGHTS_PATH))
    args = ap.parse_args(argv)
    from sklearn.linear_model import LogisticRegression

    x, y = collect(args.sessions, args.seed)
    model = LogisticRegression(C=1.0, max_iter=2000)
    model.fit(x, y)
    p = model.predict_proba(x)[:, 1]
    from ..metrics import roc_auc

    auc = roc_auc(p, y)
    out = {
        "features": list(FEATURES),
        "coef": [round(float(v), 6) for v in model.coef_[0]],
        "intercept": round(float(model.intercept_[0]), 6),
        "training": {
            "command": f"python -m ptolemy_core.train.holes_interpretable --sessions {args.sessions} "
                       f"--seed {args.seed}",
            "samples": int(len(y)),
            "positives": int(y.sum()),
            "train_auc": round(float(auc), 4),
            "data": "simulated square images (ptolemy_core.synth.square_image), not the benchmark seeds",
        },
    }
    Path(args.output).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.output}: {len(y)} holes, {int(y.sum())} good, training AUC {auc:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
