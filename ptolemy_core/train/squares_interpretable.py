"""Train the interpretable square scorer (logistic regression on measurements).

Run::

    python -m ptolemy_core.train.squares_interpretable [-o weights/square_interpretable.json]

Data: simulated **tuning** atlases only (seeds :data:`TRAIN_SEEDS`, the simulator's default
parameter ranges, 1024–2048 px, single frames and montages). Each atlas goes through
:func:`ptolemy_core.squares.find_squares` (so the model learns on exactly the measurements
it will score); a detection is labelled with the ``good`` flag of the one true square that
contains its centre (detections in no square or in a shared one are skipped). Sessions
are split 75/25 into fit/validation; the validation ROC AUC is recorded in the JSON.
The benchmark's held-out sessions (other seeds, other parameter ranges) are never used.

Model: ``p = sigmoid(b + Σ w_i z_i)`` with ``z`` the features of
:data:`ptolemy_core.squares.score.FEATURES` standardised by the training mean/sd, fitted
by L-BFGS on the L2-penalised log loss (numpy/scipy only; seeded; < 2 min on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

TRAIN_SEEDS = range(5000, 5048)
L2 = 1e-2


def _session(seed: int):
    """One tuning atlas: features of its detections and their labels."""
    from ..metrics import points_in_polygons
    from ..squares import find_squares, score
    from ..synth.atlas import simulate_atlas

    rng = np.random.default_rng(seed)
    side = int(rng.choice([1024, 1536, 2048]))
    aspect = float(rng.choice([1.0, 1.0, 0.75, 1.33]))
    shape = (side, int(side * aspect))
    sim = simulate_atlas(seed, shape=shape)
    res = find_squares(sim.data, scorer="none")
    if not res.targets:
        return np.zeros((0, len(score.FEATURES))), np.zeros(0, bool)
    polys = [np.asarray(q["vertices"], float)[:, ::-1] for q in sim.truth["squares"]]
    centers = np.array([t.center for t in res.targets])
    inside = points_in_polygons(polys, centers)
    x, y = [], []
    feats = score.features_from_targets(res.targets)
    for n in range(len(res.targets)):
        hits = np.nonzero(inside[:, n])[0]
        if len(hits) == 1 and inside[hits[0]].sum() == 1:
            x.append(feats[n])
            y.append(bool(sim.truth["squares"][hits[0]]["good"]))
    return np.asarray(x, float).reshape(-1, len(score.FEATURES)), np.asarray(y, bool)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = L2) -> dict:
    """Standardise, then minimise the L2-penalised mean log loss (L-BFGS)."""
    from scipy.optimize import minimize

    mu = x.mean(axis=0)
    sd = x.std(axis=0)
    sd[sd < 1e-9] = 1.0
    z = (x - mu) / sd
    t = y.astype(float)

    def loss(w):
        s = w[0] + z @ w[1:]
        # log(1 + e^s) - t s, computed stably
        ll = np.logaddexp(0, s) - t * s
        p = 1 / (1 + np.exp(-s))
        g = np.concatenate([[np.mean(p - t)], z.T @ (p - t) / len(t)])
        g[1:] += l2 * w[1:]
        return float(np.mean(ll) + 0.5 * l2 * np.sum(w[1:] ** 2)), g

    res = minimize(loss, np.zeros(z.shape[1] + 1), jac=True, method="L-BFGS-B")
    return {"intercept": float(res.x[0]), "coef": [float(v) for v in res.x[1:]],
            "mean": [float(v) for v in mu], "sd": [float(v) for v in sd]}


def train(out: Path | None = None, seeds=TRAIN_SEEDS, log=print) -> dict:
    """Simulate, fit, validate; write the model JSON when ``out`` is given."""
    from ..metrics import average_precision, roc_auc
    from ..squares import score
    from ..synth.sample import SIMULATOR_VERSION

    start = time.perf_counter()
    seeds = list(seeds)
    n_fit = int(round(0.75 * len(seeds)))
    parts = {"fit": seeds[:n_fit], "validation": seeds[n_fit:]}
    data = {}
    for name, group in parts.items():
        xs, ys = zip(*(_session(s) for s in group), strict=True)
        data[name] = (np.concatenate(xs), np.concatenate(ys))
        log(f"{name}: {len(group)} atlases, {len(data[name][1])} squares, "
            f"{int(data[name][1].sum())} good")
    model = fit_logistic(*data["fit"])
    model["features"] = list(score.FEATURES)
    xv, yv = data["validation"]
    pv = score.logistic_scores(xv, model)
    xf, yf = data["fit"]
    pf = score.logistic_scores(xf, model)
    model.update({
        "kind": "logistic",
        "target": "truth 'good' of simulated atlases (intact film, 20-100 nm ice, >= half visible)",
        "training_command": ("python -m ptolemy_core.train.squares_interpretable "
                             "-o weights/square_interpretable.json"),
        "training_seeds": [seeds[0], seeds[-1]],
        "l2": L2,
        "simulator_version": SIMULATOR_VERSION,
        "metrics": {
            "fit_auc": round(roc_auc(pf, yf), 4),
            "validation_auc": round(roc_auc(pv, yv), 4),
            "validation_ap": round(average_precision(pv, yv), 4),
            "n_fit": int(len(yf)), "n_validation": int(len(yv)),
        },
        "seconds": round(time.perf_counter() - start, 1),
    })
    log(f"validation AUC {model['metrics']['validation_auc']}, AP {model['metrics']['validation_ap']}; "
        f"coefficients " + ", ".join(f"{n}={w:+.2f}" for n, w in zip(score.FEATURES, model["coef"],
                                                                      strict=True)))
    if out is not None:
        from ..atomic import write_atomic

        write_atomic(Path(out), json.dumps(model, indent=1) + "\n")
        log(f"wrote {out}")
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", default=None, help="write the model JSON here")
    args = parser.parse_args(argv)
    train(Path(args.out) if args.out else None, log=lambda m: print(m, file=sys.stderr))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
