"""Square finder benchmark: detection, box IoU, ranking and speed on the fixed atlas suite.

Run: ``.venv/bin/python benchmarks/bench_squares.py [--quick] [--no-readme]``

- Sessions: :func:`suite.atlas_sessions` (``tuning`` and ``held-out``; other seeds AND other
  parameter ranges), simulated once into ``benchmarks/_data/atlas/`` (MRC + truth JSON).
- Each atlas goes through the CLI code path (:func:`ptolemy_core.cli.lowmag.find`: reads the
  MRC with ``read_image``, then ``find_squares``).
- Metrics (Ptolemy's definitions, :mod:`ptolemy_core.metrics`): per-session precision /
  recall / F1 (a square is found when exactly one detection lies in it; squares less than
  half visible, and opaque squares — no signal, indistinguishable from bars — are
  optional), then the mean over sessions; IoU of the boxes of matched, fully visible
  squares; ROC AUC / AP of the score against the truth's ``good`` over all matched
  squares of the split (interpretable scorer, and ``auto`` = whatever is shipped).
- Timing: in-process ``find_squares`` on 1k²…8k² atlases (wall and CPU seconds; the CPU
  time is what the call costs when the machine is not shared).

Prints a markdown report and writes it under "## Squares" in ``benchmarks/README.md``.
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
DATA = HERE / "_data" / "atlas"


def _generate(split: str, sessions) -> list[tuple[str, int, Path, Path]]:
    from ptolemy_core.synth.atlas import simulate_atlas

    DATA.mkdir(parents=True, exist_ok=True)
    out = []
    for name, seed, kw in sessions:
        stem = DATA / f"{split}_{seed}"
        mrc, js = stem.with_suffix(".mrc"), stem.with_suffix(".json")
        if not (mrc.exists() and js.exists()):
            kw = dict(kw)
            shape = kw.pop("shape")
            montage = kw.pop("montage")
            simulate_atlas(seed, shape=shape, montage=montage, **kw).save(stem)
        out.append((name, seed, mrc, js))
    return out


def _evaluate(result, truth):
    from ptolemy_core.metrics import points_in_polygons, polygon_iou, score_detections

    squares = truth["squares"]
    polys = [np.asarray(q["vertices"], float)[:, ::-1] for q in squares]
    pts = np.array([t.center for t in result.targets]).reshape(-1, 2)
    inside = points_in_polygons(polys, pts) if polys else np.zeros((0, len(pts)), bool)
    optional = np.array([q["visible_fraction"] < 0.5 or q["defect"] == "opaque" for q in squares], bool)
    det = score_detections(inside, optional)
    ious, matched = [], []
    for m, q in enumerate(squares):
        hits = np.nonzero(inside[m])[0]
        if len(hits) != 1:
            continue
        t = result.targets[hits[0]]
        matched.append((hits[0], bool(q["good"])))
        if q["visible_fraction"] >= 0.999:
            ious.append(polygon_iou(polys[m], t.vertices_array()))
    return det, ious, matched


def _run_split(split: str, quick: bool):
    import suite

    from ptolemy_core.cli import lowmag
    from ptolemy_core.metrics import average_precision, mean_scores, roc_auc
    from ptolemy_core.squares import score

    sessions = suite.atlas_sessions(split, per_class=2 if quick else 4, large=1 if quick else 3)
    files = _generate(split, sessions)
    model = score.load_interpretable()
    rows = {}
    pooled = {"auto": ([], []), "interpretable": ([], [])}
    scorer_used = set()
    for name, seed, mrc, js in files:
        truth = json.loads(js.read_text())
        per_method = {}
        for method in ("robust", "ptolemy"):
            # (The baseline is only scored for localisation: no need to run a scorer on it.)
            args = argparse.Namespace(path=str(mrc), frame=None, pixel_size=None,
                                      scorer="auto" if method == "robust" else "none",
                                      method=method, format="json", output=None)
            start = time.perf_counter()
            res = lowmag.find(args)
            secs = time.perf_counter() - start
            det, ious, matched = _evaluate(res, truth)
            per_method[method] = (det, ious, secs)
            if method == "robust":
                scorer_used.add(res.scorer)
                interp = (score.logistic_scores(score.features_from_targets(res.targets), model)
                          if model is not None and res.targets else np.zeros(len(res.targets)))
                for k, good in matched:
                    pooled["auto"][0].append(res.targets[k].score)
                    pooled["auto"][1].append(good)
                    pooled["interpretable"][0].append(float(interp[k]))
                    pooled["interpretable"][1].append(good)
        rows.setdefault(name, []).append((seed, truth["shape"], per_method))
    lines = []
    for method in ("robust", "ptolemy"):
        for name, items in rows.items():
            dets = [pm[method][0] for _, _, pm in items]
            ms = mean_scores(dets)
            ious = np.concatenate([np.asarray(pm[method][1], float) for _, _, pm in items])
            secs = np.mean([pm[method][2] for _, _, pm in items])
            n_sq = sum(d.tp + d.fn for d in dets)
            lines.append(f"| {split} | {method} | {name} | {len(items)} | {n_sq} | {ms['precision']:.3f} | "
                         f"{ms['recall']:.3f} | {ms['f1']:.3f} | "
                         f"{(ious.mean() if len(ious) else float('nan')):.3f} | "
                         f"{(np.percentile(ious, 5) if len(ious) else float('nan')):.3f} | {secs:.2f} |")
    ranking = []
    for key, (s, y) in pooled.items():
        label = key if key == "interpretable" else f"auto ({'/'.join(sorted(scorer_used))})"
        ranking.append(f"| {split} | {label} | {len(y)} | {int(np.sum(y))} | {roc_auc(s, y):.3f} | "
                       f"{average_precision(s, y):.3f} |")
    return lines, ranking


#: Held-out ROC AUC of the interpretable scorer on the same 27 atlases before the centre-level /
#: neighbourhood / edge-window features (commit 0b2af4e), for the before -> after column.
BEFORE_27 = {"single": 0.679, "montage": 0.793, "4k-8k": 0.866, "all": 0.807}


def _ranking_breakdown() -> list[str]:
    """Held-out ranking on bench_models' atlas set (``suite.atlas_sessions("held-out", 12, 3)``,
    a superset of this benchmark's held-out sessions), by class and by why a square is bad,
    plus how well the visible fraction of edge-cut squares is measured."""
    import suite

    from ptolemy_core.metrics import points_in_polygons, roc_auc
    from ptolemy_core.squares import find_squares
    from ptolemy_core.synth.atlas import simulate_atlas

    recs = []
    vis_err = []
    for name, seed, kw in suite.atlas_sessions("held-out", 12, 3):
        sim = simulate_atlas(seed, **kw)
        res = find_squares(sim.data, scorer="interpretable")
        sq = sim.truth["squares"]
        polys = [np.asarray(q["vertices"], float)[:, ::-1] for q in sq]
        pts = np.array([t.center for t in res.targets], float).reshape(-1, 2)
        inside = points_in_polygons(polys, pts)
        for n, t in enumerate(res.targets):
            hits = np.nonzero(inside[:, n])[0]
            if len(hits) == 1 and inside[hits[0]].sum() == 1:
                q = sq[hits[0]]
                recs.append((name, t.score, bool(q["good"]), q["defect"], q["visible_fraction"]))
                if q["visible_fraction"] < 0.97:
                    vis_err.append(abs(t.features["visible_fraction"] - q["visible_fraction"]))
    cls = np.array([r[0] for r in recs])
    s = np.array([r[1] for r in recs])
    y = np.array([r[2] for r in recs])
    defect = np.array([r[3] for r in recs])
    vis = np.array([r[4] for r in recs])
    lines = ["| class | atlases | squares | good | ROC AUC before | ROC AUC now |",
             "|---|---|---|---|---|---|"]
    n_at = {c: len([1 for x in suite.atlas_sessions("held-out", 12, 3) if x[0] == c]) for c in BEFORE_27}
    for c in ("single", "montage", "4k-8k", "all"):
        m = np.ones(len(y), bool) if c == "all" else cls == c
        n_atlas = sum(v for k, v in n_at.items() if k != "all") if c == "all" else n_at[c]
        lines.append(f"| {c} | {n_atlas} | {int(m.sum())} | {int(y[m].sum())} | {BEFORE_27[c]:.3f} | "
                     f"{roc_auc(s[m], y[m]):.3f} |")
    lines += ["", "Good squares against each kind of bad square (AUC of good vs that group; thick/thin = "
              "intact film with ice outside 20–100 nm, or a thick defect):", "",
              "| bad group | squares | AUC good vs group | mean score of group |", "|---|---|---|---|"]
    groups = [(d, (defect == d) & ~y & (vis >= 0.5)) for d in
              ("broken", "cracked", "contaminated", "empty", "opaque", "thick", "thin")]
    groups.append(("< half visible", (vis < 0.5) & ~y))
    for d, m in groups:
        if m.any():
            sel = y | m
            lines.append(f"| {d} | {int(m.sum())} | {roc_auc(s[sel], y[sel]):.3f} | {s[m].mean():.2f} |")
    e = np.asarray(vis_err)
    lines += ["", f"Edge-cut squares (truth visible fraction < 0.97): {len(e)}; |visible_fraction − truth| "
              f"median {np.median(e):.3f}, 95th percentile {np.percentile(e, 95):.3f}, max {e.max():.3f}."]
    return lines


def _timing():
    from ptolemy_core.squares import find_squares
    from ptolemy_core.synth.atlas import simulate_atlas

    rows = []
    for n in (1024, 2048, 4096, 8192):
        sim = simulate_atlas(424242, shape=(n, n), montage=False, mesh=300, pixel_size_nm=400.0)
        data = sim.data.astype(np.float32)
        res = find_squares(data, scorer="interpretable")
        best = {}
        for scorer in ("interpretable", "auto"):
            find_squares(data, scorer=scorer)  # warm caches (weights, torch)
            walls, cpus = [], []
            for _ in range(3):
                w, c = time.perf_counter(), time.process_time()
                res = find_squares(data, scorer=scorer)
                walls.append(time.perf_counter() - w)
                cpus.append(time.process_time() - c)
            best[scorer] = (min(walls), min(cpus), res.scorer)
        wi, ci, _ = best["interpretable"]
        wa, ca, used = best["auto"]
        rows.append(f"| {n}² | {len(res.targets)} | {res.working_scale} | {wi:.3f} | {ci:.3f} | "
                    f"{ci / (n * n) * 1e9:.1f} | {used}: {wa:.3f} / {ca:.3f} |")
    return rows


#: Large-pitch atlases (pitch 260–400 px at 1024²) cut into 576² tiles, as Leginon runs the
#: finder once per atlas tile: fewer than two squares across each tile.
TILE_SEEDS = (0, 5, 8, 17, 23, 30)
TILE_CORNERS = ((0, 0), (0, 448), (448, 0), (448, 448), (224, 224))


def _tiles() -> list[str]:
    """Tiles of large-pitch atlases: complete squares found exactly once, duplicates, junk."""
    from ptolemy_core.metrics import points_in_polygons
    from ptolemy_core.squares import find_squares
    from ptolemy_core.synth.atlas import simulate_atlas

    n_tiles = complete = once = dup = junk = dets = 0
    for seed in TILE_SEEDS:
        sim = simulate_atlas(seed, shape=(1024, 1024))
        for r0, c0 in TILE_CORNERS:
            res = find_squares(sim.data[r0: r0 + 576, c0: c0 + 576])
            polys = [np.asarray(q["vertices"], float)[:, ::-1] - (r0, c0) for q in sim.truth["squares"]]
            pts = np.array([t.center for t in res.targets]).reshape(-1, 2)
            inside = points_in_polygons(polys, pts)
            grown = [p.mean(axis=0) + 1.05 * (p - p.mean(axis=0)) for p in polys]
            for m, (p, q) in enumerate(zip(polys, sim.truth["squares"], strict=True)):
                if p.min() >= 0 and p.max() < 576 and q["defect"] != "opaque":
                    complete += 1
                    once += int(inside[m].sum() == 1)
            dup += int(np.maximum(inside.sum(axis=1) - 1, 0).sum())
            for t, ok in zip(res.targets, inside.any(axis=0), strict=True):
                clipped = np.clip(t.vertices_array(), 0, 575).mean(axis=0)[None]
                junk += int(not ok and not points_in_polygons(grown, clipped).any())
            n_tiles += 1
            dets += len(res.targets)
    return [f"| {n_tiles} | {complete} | {once} | {dup} | {junk} | {dets / n_tiles:.1f} |"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer sessions")
    parser.add_argument("--no-readme", action="store_true", help="do not update benchmarks/README.md")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    det_lines, rank_lines = [], []
    for split in ("tuning", "held-out"):
        d, r = _run_split(split, args.quick)
        det_lines += d
        rank_lines += r
    timing = _timing()
    tiles = _tiles()
    breakdown = [] if args.quick else _ranking_breakdown()
    import os

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    text = "\n".join([
        "Command: `.venv/bin/python benchmarks/bench_squares.py`"
        + (" --quick" if args.quick else "") + f" (took {time.perf_counter() - start:.0f} s; "
        f"load average {load:.1f} on {os.cpu_count()} cores while it ran — wall times are inflated "
        "when the machine is shared, CPU times are not).",
        "",
        "Detection (Ptolemy's definitions; squares < half visible and opaque squares optional; "
        "IoU over matched fully visible squares; seconds = whole CLI code path incl. reading the MRC):",
        "",
        "| split | method | class | sessions | squares | precision | recall | F1 | IoU mean | IoU p5 "
        "| s/image |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *det_lines,
        "",
        "Ranking (score vs truth `good` = intact film, 20–100 nm ice, ≥ half visible; "
        "pooled matched squares):",
        "",
        "| split | scorer | squares | good | ROC AUC | AP |",
        "|---|---|---|---|---|---|",
        *rank_lines,
        "",
        *(["Held-out ranking by class on bench_models' atlas set "
           "(`suite.atlas_sessions(\"held-out\", 12, 3)`: 12 single, 12 montage, 3 4k–8k atlases; "
           "scorer = interpretable; before = commit 0b2af4e):", "",
           *breakdown, ""] if breakdown else []),
        "Speed of one in-process `find_squares` call (single-frame 300-mesh atlas at 400 nm/px; best of 3; "
        "finder = localisation + measurements + interpretable score; last column: `scorer=\"auto\"`, "
        "i.e. with the shipped CNN when present, wall / CPU s):",
        "",
        "| size | squares | working scale | wall s | CPU s | CPU ns / pixel | auto scorer |",
        "|---|---|---|---|---|---|---|",
        *timing,
        "",
        "Atlas tiles (Leginon runs the finder per atlas tile): 576² tiles of 1024² atlases with a "
        f"260–400 px pitch (seeds {', '.join(map(str, TILE_SEEDS))}; 5 tiles each), fewer than two squares "
        "across; complete = non-opaque squares wholly inside a tile; junk = detections in no square "
        "(edge slivers of a square count as that square):",
        "",
        "| tiles | complete squares | found exactly once | duplicates | junk | detections / tile |",
        "|---|---|---|---|---|---|",
        *tiles,
    ])
    print(text)
    if not args.no_readme:
        _write_readme(text)
    return 0


def _write_readme(text: str) -> None:
    from ptolemy_core.atomic import write_atomic

    path = HERE / "README.md"
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    section = "## Squares\n\n" + text.strip() + "\n"
    if "## Squares\n" in old:
        head, rest = old.split("## Squares\n", 1)
        # The section ends at the next heading or at another script's marker comment.
        ends = [i for i in (rest.find("\n## "), rest.find("\n<!--")) if i >= 0]
        nxt = min(ends) if ends else -1
        tail = rest[nxt + 1:] if nxt >= 0 else ""
        new = head + section + ("\n" + tail if tail else "")
    else:
        new = old.rstrip("\n") + "\n\n" + section
    write_atomic(path, new)


if __name__ == "__main__":
    sys.exit(main())
