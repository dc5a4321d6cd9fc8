"""Focused ranker check of the square/hole CNNs on held-out sessions, display looks and foreign looks.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/eval_cnn_robust.py [--weights DIR] [--per-class N]
        [--atlases N] [--json OUT]

Unlike ``bench_models.py`` this scores the *truth* squares/holes (no finder run), so the
figure measures the ranker alone, does not move when the finders change, and is quick.

Rows (ROC AUC of the CNN score vs truth ``good``):

- ``held-out``: ``benchmarks/suite.py`` held-out sessions (square images without the 4096²
  class; single/montage atlases), raw counts, I0 not given;
- ``held-out, I0 given``: the same with the simulator's vacuum intensity passed;
- ``dose x0.2 + offset``: the same images times 0.2 plus a detector offset (a multiplicative
  dose/gain change and an additive offset: physics says nothing about the sample changed);
- ``8-bit gamma``: the same images as an 8-bit display would save them (0.5-99.5 percentile
  stretch, gamma 0.6 or 1.7 alternating, 30 + 200·v, rounded to uint8);
- ``foreign``: every look of ``benchmarks/foreign.py`` (seeds 101, 102), as the file decodes.

Working scale for holes: the hole finder's rule ``max(1, int(pitch / 32))`` from the truth
lattice. Squares: every truth square at least half visible (the CNN's dose normalisation runs
over exactly these).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import suite  # noqa: E402

from ptolemy_core.metrics import roc_auc  # noqa: E402
from ptolemy_core.models import api  # noqa: E402
from ptolemy_core.models.registry import load_model, set_threads  # noqa: E402
from ptolemy_core.targets import Target  # noqa: E402

CACHE = HERE / "_data" / "models_eval"
FOREIGN_SEEDS = (101, 102)


def looks(data: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Raw data and its physically/visually equivalent variants (deterministic in ``k``)."""
    d = np.asarray(data, np.float32)
    lo, hi = np.percentile(d, [0.5, 99.5])
    v = np.clip((d - lo) / max(hi - lo, 1e-6), 0, 1) ** (0.6 if k % 2 == 0 else 1.7)
    return {"held-out": d,
            "dose x0.2 + offset": d * 0.2 + 0.3 * float(np.median(d)) + 37.0,
            "8-bit gamma": np.round(30 + 200 * v).astype(np.uint8).astype(np.float32)}


def _cached(kind: str, seed: int, kw: dict):
    CACHE.mkdir(parents=True, exist_ok=True)
    f = CACHE / f"{kind}_{seed}.npz"
    if f.exists():
        z = np.load(f, allow_pickle=False)
        return z["data"], json.loads(str(z["truth"]))
    from ptolemy_core import synth

    sim = synth.simulate_square_image(seed, **kw) if kind == "square" else synth.simulate_atlas(seed, **kw)
    np.savez(f, data=sim.data.astype(np.float32), truth=json.dumps(sim.truth))
    return sim.data.astype(np.float32), sim.truth


def _foreign(kind: str, look: str, seed: int):
    sys.path.insert(0, str(HERE))
    from bench_foreign import _generate

    from ptolemy_core import read_image

    path, truth = _generate(kind, look, seed)
    return read_image(path).data, truth


# ------------------------------------------------------------------------------------- holes
def hole_targets(truth: dict) -> tuple[list[Target], np.ndarray, float] | None:
    holes = [h for h in truth["holes"] if h["visible_fraction"] >= 0.5 and h.get("in_image", True)]
    lat = truth.get("lattice") or {}
    if not holes or not lat.get("basis"):
        return None
    pitch = float(np.linalg.norm(np.asarray(lat["basis"], float), axis=1).min())
    scale = float(max(1, int(pitch / 32)))
    tg = []
    for h in holes:
        r, c = float(h["center"][1]), float(h["center"][0])
        rad = float(h["radius"])
        box = ((r - rad, c - rad), (r - rad, c + rad), (r + rad, c + rad), (r + rad, c - rad))
        tg.append(Target("hole", (r, c), box, np.pi * rad * rad, features={"radius": rad}))
    return tg, np.array([bool(h["good"]) for h in holes]), scale


def hole_scores(model, data, tg, scale, i0=None):
    return api.hole_cnn_scores(data, tg, scale, i0=i0, model=model)


# ------------------------------------------------------------------------------------- squares
def square_targets(truth: dict) -> tuple[list[Target], np.ndarray] | None:
    sq = [s for s in truth["squares"] if s["visible_fraction"] >= 0.5 and s["defect"] != "opaque"]
    if not sq:
        return None
    tg = []
    for s in sq:
        v = tuple((float(p[1]), float(p[0])) for p in s["vertices"])
        tg.append(Target("square", (float(s["center"][1]), float(s["center"][0])), v,
                         float(s["area"]) * float(s["visible_fraction"])))
    return tg, np.array([bool(s["good"]) for s in sq])


def square_scores(model, data, tg, i0=None):
    return api.square_cnn_scores(data, tg, i0=i0, model=model)


def _auc(rows: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, int]:
    if not rows:
        return float("nan"), 0
    s = np.concatenate([r[0] for r in rows])
    y = np.concatenate([r[1] for r in rows])
    return float(roc_auc(s, y)), int(len(y))


def run(weights: Path | None, per_class: int, atlases: int, foreign_looks: bool = True) -> dict:
    set_threads()
    out: dict[str, dict] = {"holes": {}, "squares": {}}
    hm = load_model("hole_cnn", weights)
    sm = load_model("square_cnn", weights)
    import foreign

    # ---- holes
    acc: dict[str, list] = {}
    sessions = [s for s in suite.square_image_sessions("held-out", per_class) if "shape" not in
                suite.SQUARE_IMAGE_CLASSES[s[0]]]
    for k, (_name, seed, kw) in enumerate(sessions):
        data, truth = _cached("square", seed, kw)
        t = hole_targets(truth)
        if t is None:
            continue
        tg, y, scale = t
        for look, d in looks(data, k).items():
            acc.setdefault(look, []).append((hole_scores(hm, d, tg, scale), y))
        acc.setdefault("held-out, I0 given", []).append(
            (hole_scores(hm, data, tg, scale, i0=float(truth["i0"])), y))
    if foreign_looks:
        for look in foreign.SQUARE_LOOKS:
            for seed in FOREIGN_SEEDS:
                data, truth = _foreign("square", look, seed)
                t = hole_targets(truth)
                if t is None or len(set(t[1].tolist())) < 2 and look == "lacey":
                    continue
                tg, y, scale = t
                r = (hole_scores(hm, data, tg, scale), y)
                acc.setdefault(f"foreign {look}", []).append(r)
                acc.setdefault("foreign (all looks)", []).append(r)
    out["holes"] = {k: _auc(v) for k, v in acc.items()}

    # ---- squares
    acc = {}
    sess = [s for s in suite.atlas_sessions("held-out", atlases, large=0)]
    for k, (_name, seed, kw) in enumerate(sess):
        data, truth = _cached("atlas", seed, kw)
        t = square_targets(truth)
        if t is None:
            continue
        tg, y = t
        for look, d in looks(data, k).items():
            acc.setdefault(look, []).append((square_scores(sm, d, tg), y))
        i0 = float(truth["i0"]) + float(truth.get("offset", 0.0))
        acc.setdefault("held-out, I0 given", []).append((square_scores(sm, data, tg, i0=i0), y))
    if foreign_looks:
        for look in foreign.ATLAS_LOOKS:
            for seed in FOREIGN_SEEDS:
                data, truth = _foreign("atlas", look, seed)
                t = square_targets(truth)
                if t is None:
                    continue
                tg, y = t
                r = (square_scores(sm, data.astype(np.float32), tg), y)
                acc.setdefault(f"foreign {look}", []).append(r)
                acc.setdefault("foreign (all looks)", []).append(r)
    out["squares"] = {k: _auc(v) for k, v in acc.items()}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=None, help="weights folder (default: shipped)")
    ap.add_argument("--per-class", type=int, default=2)
    ap.add_argument("--atlases", type=int, default=4, help="held-out atlases per class (single, montage)")
    ap.add_argument("--no-foreign", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    res = run(args.weights, args.per_class, args.atlases, not args.no_foreign)
    for kind in ("squares", "holes"):
        print(f"\n{kind}: ROC AUC (n)")
        for k, (a, n) in res[kind].items():
            print(f"  {k:32s} {a:.3f} ({n})")
    print(f"\n{time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
