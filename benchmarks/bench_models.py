"""Learned-models benchmark: held-out AUCs (interpretable vs CNN vs U-Net), Table 3, Table 4, latency.

Usage: ``python benchmarks/bench_models.py [--per-class N] [--atlases N] [--no-write]``.

Held-out data (never used for training; training images use seeds >= 100000 and
the ranges of ``ptolemy_core.train.simdata``):

- square images: ``suite.square_image_sessions("held-out", N)`` (seeds 5000+,
  the holes engineer's held-out ranges);
- atlases: ``suite.atlas_sessions("held-out", N)`` when the suite defines it,
  else seeds 7000+ with the simulator's default ranges.

Scores are compared on the squares/holes the finders report, matched to the
truth (a detection inside a truth square/hole takes its ``good`` label;
unmatched detections are left out). Prints markdown and writes it under
"## Learned models" in ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import suite  # noqa: E402
from readme_section import update_section  # noqa: E402  (benchmarks/ is on sys.path)

from ptolemy_core.metrics import (  # noqa: E402
    DetectionScores,
    average_precision,
    mean_scores,
    points_in_ellipses,
    points_in_polygons,
    roc_auc,
    score_detections,
)
from ptolemy_core.models import api  # noqa: E402
from ptolemy_core.models import crops as C  # noqa: E402
from ptolemy_core.models.registry import load_model, read_manifest  # noqa: E402


def _hole_truth(truth: dict):
    holes = truth["holes"]
    c = np.array([h["center"][::-1] for h in holes], float).reshape(-1, 2)
    ax = np.array([[h["ellipse"]["a"], h["ellipse"]["b"]] for h in holes], float).reshape(-1, 2)
    ang = np.radians(90.0 - np.array([h["ellipse"]["angle_deg"] for h in holes], float))
    opt = np.array([h["visible_fraction"] < 0.5 or not h.get("in_image", True) for h in holes], bool)
    good = np.array([bool(h["good"]) for h in holes], bool)
    return c, ax, ang, opt, good


def _detect(truth_t, det: np.ndarray) -> DetectionScores:
    c, ax, ang, opt, _ = truth_t
    if len(c) == 0:
        return DetectionScores(0, len(det), 0)
    return score_detections(points_in_ellipses(c, ax, ang, np.asarray(det, float).reshape(-1, 2)), opt)


def _labels(truth_t, targets) -> tuple[np.ndarray, np.ndarray]:
    """Index of matched targets and their truth good label (targets in exactly one truth hole)."""
    c, ax, ang, opt, good = truth_t
    det = np.array([t.center for t in targets], float).reshape(-1, 2)
    if len(c) == 0 or len(det) == 0:
        return np.zeros(0, int), np.zeros(0, bool)
    inside = points_in_ellipses(c, ax, ang, det)           # (truth, det)
    one = inside.sum(axis=0) == 1
    idx = np.flatnonzero(one)
    owner = inside[:, idx].argmax(axis=0)
    keep = ~opt[owner]
    return idx[keep], good[owner[keep]]


def bench_holes(per_class: int) -> tuple[list[str], dict]:
    from ptolemy_core.holes import find_holes
    from ptolemy_core.synth.square_image import simulate_square_image

    by_class: dict[str, dict[str, list]] = {}
    loc: dict[str, list[DetectionScores]] = {k: [] for k in ("ours", "unet", "unet_lat", "unet_lat_thr")}
    latency = []
    for name, seed, kw in suite.square_image_sessions("held-out", per_class):
        sim = simulate_square_image(seed, **kw)
        truth_t = _hole_truth(sim.truth)
        res = find_holes(sim.data, scorer="interpretable")
        s = float(res.working_scale)
        work = C.to_working(sim.data, s)
        t0 = time.perf_counter()
        prob2 = api.unet_probability(work, "both")
        if prob2 is not None and kw.get("shape", (1024, 1440)) == (1024, 1440):
            latency.append((time.perf_counter() - t0, work.shape))
        idx, y = _labels(truth_t, res.targets)
        tg = [res.targets[i] for i in idx]
        row = by_class.setdefault(name, {k: [] for k in ("y", "interp", "cnn", "unet")})
        row["y"].append(y)
        row["interp"].append(np.array([t.score for t in tg]))
        cnn = api.hole_cnn_scores(sim.data, tg, s, i0=res.i0, work=work)
        row["cnn"].append(cnn if cnn is not None else np.full(len(tg), np.nan))
        un = api.unet_hole_scores(work, tg, s, prob_good=prob2[1]) if prob2 is not None else None
        row["unet"].append(un if un is not None else np.full(len(tg), np.nan))
        # Table 3: localisers (all detections in full-res pixels).
        loc["ours"].append(_detect(truth_t, np.array([t.center for t in res.targets]).reshape(-1, 2)))
        if prob2 is not None:
            cen = api.unet_hole_centres(prob=prob2[0])
            loc["unet"].append(_detect(truth_t, C.work_to_full(cen, s)))
            fit = api.unet_lattice(prob=prob2[0])
            nodes = fit.nodes if fit is not None else np.zeros((0, 2))
            keep = fit.node_prob > api.NODE_PROB_THRESHOLD if fit is not None else np.zeros(0, bool)
            loc["unet_lat"].append(_detect(truth_t, C.work_to_full(nodes, s)))
            loc["unet_lat_thr"].append(_detect(truth_t, C.work_to_full(nodes[keep], s)))
    return _hole_tables(by_class, loc, latency)


def _auc(scores: list, ys: list) -> str:
    s = np.concatenate(scores) if scores else np.zeros(0)
    y = np.concatenate(ys) if ys else np.zeros(0, bool)
    if len(s) == 0 or np.isnan(s).all():
        return "—"
    a = roc_auc(s, y)
    return "n/a" if np.isnan(a) else f"{a:.3f}"


def _hole_tables(by_class, loc, latency) -> tuple[list[str], dict]:
    lines = ["### Hole rankers: held-out ROC AUC of score vs good, per class", "",
             "| class | holes | good | interpretable | hole CNN | U-Net summed prob |",
             "|---|---|---|---|---|---|"]
    all_rows = {k: [] for k in ("y", "interp", "cnn", "unet")}
    summary = {}
    for name, row in by_class.items():
        y = np.concatenate(row["y"])
        lines.append(f"| {name} | {len(y)} | {int(y.sum())} | {_auc(row['interp'], row['y'])} | "
                     f"{_auc(row['cnn'], row['y'])} | {_auc(row['unet'], row['y'])} |")
        for k in all_rows:
            all_rows[k] += row[k]
    y_all = np.concatenate(all_rows["y"])
    lines.append(f"| **all** | {len(y_all)} | {int(y_all.sum())} | "
                 f"{_auc(all_rows['interp'], all_rows['y'])} | "
                 f"{_auc(all_rows['cnn'], all_rows['y'])} | {_auc(all_rows['unet'], all_rows['y'])} |")
    lines += ["", "### Hole rankers (like the paper's Table 4), all held-out holes", "",
              "| model | accuracy (score > 0.5) | ROC AUC | average precision |", "|---|---|---|---|"]
    for key, label in (("cnn", "hole CNN (mean+max pooling, unpadded)"),
                       ("unet", "U-Net summed probability"), ("interp", "interpretable (holes engineer)")):
        s = np.concatenate(all_rows[key])
        if np.isnan(s).all():
            lines.append(f"| {label} | — | — | — |")
            continue
        acc = float(np.mean((s > 0.5) == y_all))
        lines.append(f"| {label} | {acc:.3f} | {roc_auc(s, y_all):.3f} | {average_precision(s, y_all):.3f} |")
        summary[f"holes_auc_{key}"] = round(roc_auc(s, y_all), 4)
    lines += ["", "### Hole localisers (like the paper's Table 3), against ALL truth holes",
              "(the paper scored against operator-selected holes; here every hole ≥ half visible must be",
              "found, holes less than half visible are optional; mean over sessions)", "",
              "| method | precision | recall | F1 |", "|---|---|---|---|"]
    for key, label in (("ours", "ours (lattice finder, `find_holes`)"), ("unet", "U-Net centroids"),
                       ("unet_lat", "U-Net + lattice fit"),
                       ("unet_lat_thr",
                        f"U-Net + lattice + probability threshold ({api.NODE_PROB_THRESHOLD})")):
        if not loc[key]:
            lines.append(f"| {label} | — | — | — |")
            continue
        m = mean_scores(loc[key])
        lines.append(f"| {label} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} |")
        summary[f"loc_f1_{key}"] = round(m["f1"], 4)
    if latency:
        t = np.array([x[0] for x in latency])
        shapes = sorted({x[1] for x in latency})
        lines += ["", f"U-Net inference inside the run (one call per 1024×1440 image, working sizes "
                      f"{shapes[0]}–{shapes[-1]}): median {1000 * np.median(t):.0f} ms, "
                      f"max {1000 * t.max():.0f} ms over {len(t)} images."]
        summary["unet_latency_ms_median"] = round(1000 * float(np.median(t)), 1)
    lat = unet_latency()
    if lat is not None:
        lines += ["", lat[0]]
        summary["unet_latency_ms_min"] = lat[1]
    lines += ["", UNET_RANKER_NOTE]
    return lines, summary


UNET_RANKER_NOTE = (
    "Why the U-Net ranks holes poorly here: its \"good\" channel is trained on simulator truth of every "
    "hole (good = ice in the 20-100 nm window, no defect), but it sees the image z-scored as a whole, "
    "so the absolute ice thickness (what decides good vs not in our sessions) is not in its input; "
    "the paper's U-Net instead learned where *operators* clicked, which follows local appearance. "
    "Its \"hole\" channel localises well (Table 3), so it stays the `method=\"unet\"` localiser, and "
    "ranking stays with the interpretable scorer (default) or the hole CNN.")


def unet_latency(repeats: int = 7) -> tuple[str, float] | None:
    """Min/median of repeated U-Net calls on one 1024×1440 held-out image at the finder's working scale
    and at working scale 1 (the worst case: small holes, no reduction); wall and process CPU time."""
    from ptolemy_core.holes import find_holes
    from ptolemy_core.synth.square_image import simulate_square_image

    if load_model("unet") is None:
        return None
    name, seed, kw = suite.square_image_sessions("held-out", 1)[1]
    sim = simulate_square_image(seed, **kw)
    s = float(find_holes(sim.data, scorer="interpretable").working_scale)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    parts, first = [], None
    for scale in (s, 1.0):  # the finder's choice, and the worst case (small holes: no reduction)
        work = C.to_working(sim.data, scale)
        api.unet_probability(work, "both")  # warm-up (first call allocates)
        t, cpu = [], []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            api.unet_probability(work, "both")
            t.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        t, cpu = np.array(t), np.array(cpu)
        first = first if first is not None else round(1000 * float(t.min()), 1)
        parts.append(f"working scale {scale:g} ({work.shape[0]}×{work.shape[1]}): "
                     f"wall min {1000 * t.min():.0f} ms, median {1000 * np.median(t):.0f} ms "
                     f"(CPU min {1000 * cpu.min():.0f} ms)")
    text = (f"U-Net latency, {repeats} repeated calls after a warm-up on one 1024×1440 image ({name}, seed "
            f"{seed}), {_threads()} torch thread(s) as `set_threads()` sets them, 1-min load average "
            f"{load:.1f} on {os.cpu_count()} CPUs: finder's " + "; worst case ".join(parts) + ".")
    return text, first


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def atlas_sessions(n: int):
    if hasattr(suite, "atlas_sessions"):
        try:
            return list(suite.atlas_sessions("held-out", n))
        except TypeError:
            pass
    return [("single" if k % 2 else "montage", 7000 + k, {"montage": bool(k % 2 == 0)}) for k in range(n)]


def bench_squares(n: int) -> tuple[list[str], dict]:
    from ptolemy_core.squares import find_squares
    from ptolemy_core.synth.atlas import simulate_atlas

    rows: dict[str, dict[str, list]] = {}
    for sess in atlas_sessions(n):
        name, seed, kw = sess[0], sess[1], dict(sess[2]) if len(sess) > 2 else {}
        sim = simulate_atlas(seed, **kw)
        res = find_squares(sim.data, scorer="interpretable")
        sq = sim.truth["squares"]
        polys = [np.asarray(s["vertices"], float)[:, ::-1] for s in sq]
        det = np.array([t.center for t in res.targets], float).reshape(-1, 2)
        if not len(det) or not polys:
            continue
        inside = points_in_polygons(polys, det)
        one = inside.sum(axis=0) == 1
        idx = np.flatnonzero(one)
        owner = inside[:, idx].argmax(axis=0)
        y = np.array([bool(sq[o]["good"]) for o in owner])
        tg = [res.targets[i] for i in idx]
        # Normalisation over ALL squares the finder reported (the paper's), then pick the matched ones.
        cnn_all = api.square_cnn_scores(sim.data, res.targets, i0=res.i0)
        r = rows.setdefault(name, {"y": [], "interp": [], "cnn": []})
        r["y"].append(y)
        r["interp"].append(np.array([t.score for t in tg]))
        r["cnn"].append(cnn_all[idx] if cnn_all is not None else np.full(len(tg), np.nan))
    lines = ["### Square rankers: held-out ROC AUC of score vs good", "",
             "| atlases | squares | good | interpretable (squares engineer) | square CNN |",
             "|---|---|---|---|---|"]
    ys, si, sc = [], [], []
    for name, r in rows.items():
        y = np.concatenate(r["y"])
        lines.append(f"| {name} | {len(y)} | {int(y.sum())} | {_auc(r['interp'], r['y'])} | "
                     f"{_auc(r['cnn'], r['y'])} |")
        ys += r["y"]
        si += r["interp"]
        sc += r["cnn"]
    summary = {}
    if ys:
        y = np.concatenate(ys)
        lines.append(f"| **all** | {len(y)} | {int(y.sum())} | {_auc(si, ys)} | {_auc(sc, ys)} |")
        summary = {"squares_auc_interp": _auc(si, ys), "squares_auc_cnn": _auc(sc, ys)}
    return lines, summary


def robustness_lines() -> list[str]:
    """CNN rankers on truth targets under other image sources (``eval_cnn_robust.py``)."""
    import eval_cnn_robust as R
    from foreign import ATLAS_LOOKS

    res = R.run(None, 2, 4)
    rows = ["held-out", "held-out, I0 given", "dose x0.2 + offset", "8-bit gamma", "foreign (all looks)"]
    lines = ["### CNN rankers under other image sources (truth targets; `benchmarks/eval_cnn_robust.py`)", "",
             "ROC AUC of the shipped CNNs on the truth squares/holes of held-out sessions (2 square images "
             "per class without 4096², 4 single + 4 montage atlases), the same images times 0.2 plus an "
             "offset, as 8-bit gamma displays, and on every foreign look (`benchmarks/foreign.py`, seeds "
             "101-102). I0 is not given except in its row.", "",
             "| images | square CNN | hole CNN |", "|---|---|---|"]
    for r in rows:
        cells = []
        for kind in ("squares", "holes"):
            a, n = res[kind].get(r, (float("nan"), 0))
            cells.append(f"{a:.3f} ({n})" if n else "—")
        lines.append(f"| {r} | {cells[0]} | {cells[1]} |")
    looks = sorted({k for kind in res for k in res[kind] if k.startswith("foreign ") and "all" not in k})
    lines += ["", "Per foreign look: " + "; ".join(
        f"{k[8:]} {res['squares' if k[8:] in ATLAS_LOOKS else 'holes'][k][0]:.2f}" for k in looks) + "."]
    return lines


def write_readme(text: str) -> None:
    update_section("bench_models", text, heading="## Learned models")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=3, help="held-out square images per class (default 3)")
    ap.add_argument("--atlases", type=int, default=12, help="held-out atlases (default 12)")
    ap.add_argument("--no-write", action="store_true", help="print only, do not update README.md")
    args = ap.parse_args(argv)
    from ptolemy_core.models.registry import set_threads

    set_threads()
    t0 = time.perf_counter()
    shipped = {k: load_model(k) is not None for k in ("square_cnn", "hole_cnn", "unet")}
    hole_lines, hs = bench_holes(args.per_class)
    sq_lines, ss = bench_squares(args.atlases)
    man = read_manifest()
    head = [f"`python benchmarks/bench_models.py --per-class {args.per_class} --atlases {args.atlases}` "
            f"on {platform.node()} ({os.cpu_count()} CPUs, shared with other jobs: times are inflated), "
            f"{time.perf_counter() - t0:.0f} s. Weights shipped: "
            + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in shipped.items())
            + ". Training: seeds ≥ 100000 with `ptolemy_core.train.simdata` ranges; held-out: "
              "`benchmarks/suite.py` held-out seeds/ranges.", ""]
    for k in ("square_cnn", "hole_cnn", "unet"):
        if k in man:
            head.append(f"- `{k}`: `{man[k].get('training_command', '?')}`")
    rob_lines = robustness_lines()
    text = "\n".join(head + [""] + sq_lines + [""] + hole_lines + [""] + rob_lines)
    print(text)
    if not args.no_write:
        write_readme(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
