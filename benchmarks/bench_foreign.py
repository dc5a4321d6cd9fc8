"""Robustness bench: the square and hole finders on *foreign* looks (``benchmarks/foreign.py``).

The images come from an independent generator (not ``ptolemy_core.synth``) that imitates other
sources: 8-bit JPEG with mid-grey bars, gamma/log display, vignetting, 10–300 px squares, a grid
rim, float HDR; soft-edged, Fresnel-rimmed, large and tiny holes, ice gradients, contamination,
lacey carbon, non-square frames. Nothing was tuned on them. Each image is written to
``benchmarks/_data/foreign/`` and read back exactly as the CLI does (``read_image`` +
``find_squares`` / ``find_holes``). Precision/recall/F1 are Ptolemy's definitions
(``ptolemy_core.metrics``), per image, then averaged per look.

    python benchmarks/bench_foreign.py            # prints the tables, updates README.md
    python benchmarks/bench_foreign.py --no-readme --seeds 1
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from readme_section import update_section  # noqa: E402  (benchmarks/ is on sys.path)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
DATA = HERE / "_data" / "foreign"
#: Fixed seeds per look (the same for every look; the look decides the rest).
SEEDS = (101, 102)


def _path_for(kind: str, look: str, seed: int):
    import foreign

    return DATA / f"{foreign.FOREIGN_VERSION}_{kind}_{look}_{seed}"


def _generate(kind: str, look: str, seed: int) -> tuple[Path, dict]:
    import json

    import foreign

    stem = _path_for(kind, look, seed)
    js = stem.with_suffix(".json")
    if js.exists():
        truth = json.loads(js.read_text())
        img = stem.with_suffix("." + truth["params"]["format"])
        if img.exists():
            return img, truth
    fi = foreign.foreign_atlas(seed, look) if kind == "atlas" else foreign.foreign_square_image(seed, look)
    return fi.save(stem), fi.truth


def eval_squares(truth: dict, targets) -> dict:
    """Ptolemy metrics for squares (truth boxes as polygons; < half visible or opaque = optional)."""
    from ptolemy_core.metrics import points_in_polygons, polygon_iou, score_detections

    squares = truth["squares"]
    polys = [np.asarray(q["vertices"], float)[:, ::-1] for q in squares]
    pts = np.array([t.center for t in targets], float).reshape(-1, 2)
    inside = points_in_polygons(polys, pts) if polys else np.zeros((0, len(pts)), bool)
    optional = np.array([q["visible_fraction"] < 0.5 or q["defect"] == "opaque" for q in squares], bool)
    det = score_detections(inside, optional)
    ious, pairs = [], []
    for m, q in enumerate(squares):
        hits = np.nonzero(inside[m])[0]
        if len(hits) == 1 and not optional[m]:
            pairs.append((targets[hits[0]].score, bool(q["good"])))
        if len(hits) == 1 and q["visible_fraction"] >= 0.999:
            ious.append(polygon_iou(polys[m], targets[hits[0]].vertices_array()))
    return dict(det=det, iou=float(np.median(ious)) if ious else float("nan"),
                required=int((~optional).sum()), found=len(targets), err=float("nan"), pairs=pairs)


def eval_holes(truth: dict, targets) -> dict:
    """Ptolemy metrics for holes (ellipses; < half visible or centre outside = optional)."""
    from ptolemy_core.metrics import DetectionScores, points_in_ellipses, score_detections, truth_hole_regions

    holes = truth["holes"]
    det = np.array([t.center for t in targets], float).reshape(-1, 2)
    if not holes:
        return dict(det=DetectionScores(0, len(det), 0), iou=float("nan"), required=0,
                    found=len(targets), err=float("nan"), pairs=[])
    c, ax, ang, opt = truth_hole_regions(truth)
    inside = points_in_ellipses(c, ax, ang, det)
    sc = score_detections(inside, opt)
    errs, pairs = [], []
    for i in np.nonzero(~opt & (inside.sum(axis=1) == 1))[0]:
        j = int(np.nonzero(inside[i])[0][0])
        errs.append(float(np.linalg.norm(det[j] - c[i])) / max(float(ax[i].mean()), 1e-9))
        pairs.append((targets[j].score, bool(holes[i]["good"])))
    return dict(det=sc, iou=float("nan"), required=int((~opt).sum()), found=len(targets),
                err=float(np.median(errs)) if errs else float("nan"), pairs=pairs)


def run(seeds=SEEDS) -> list[dict]:
    """Generate (cached), find and score every (kind, look, seed); one row per image."""
    import foreign

    from ptolemy_core import find_holes, find_squares, read_image

    rows = []
    jobs = [("atlas", look) for look in foreign.ATLAS_LOOKS]
    jobs += [("square", look) for look in foreign.SQUARE_LOOKS]
    for kind, look in jobs:
        for seed in seeds:
            path, truth = _generate(kind, look, seed)
            t0, c0 = time.perf_counter(), time.process_time()
            image = read_image(path)
            try:
                res = find_squares(image) if kind == "atlas" else find_holes(image)
                error = None
            except Exception as exc:  # a crash on a foreign look is a finding, not a bench failure
                res, error = None, f"{type(exc).__name__}: {exc}"
            secs, cpu = time.perf_counter() - t0, time.process_time() - c0
            targets = res.targets if res is not None else []
            ev = (eval_squares if kind == "atlas" else eval_holes)(truth, targets)
            confident = sum(1 for t in targets if t.score >= 0.5)
            rows.append(dict(kind=kind, look=look, seed=seed, path=str(path.relative_to(HERE.parent)),
                             shape=tuple(truth["shape"]), secs=secs, cpu=cpu, confident=confident,
                             error=error, notes=list(res.notes) if res is not None else [], **ev))
            d = ev["det"]
            print(f"  {kind:6s} {look:20s} seed {seed}: P {d.precision:.3f} R {d.recall:.3f} F1 {d.f1:.3f} "
                  f"found {ev['found']} / required {ev['required']} ({secs:.2f} s, cpu {cpu:.2f} s)"
                  + (f" ERROR {error}" if error else ""), flush=True)
    return rows


def table(rows: list[dict], wall: float) -> str:
    """Markdown: per-look means, then per-image rows (the reproductions)."""
    import subprocess

    from ptolemy_core.metrics import mean_scores, roc_auc

    try:
        rev = subprocess.run(["git", "log", "-1", "--format=%h", "--", "ptolemy_core/squares",
                              "ptolemy_core/holes", "weights"],
                             cwd=HERE.parent, capture_output=True, text=True).stdout.strip()
    except OSError:
        rev = "?"

    lines = [
        f"`python benchmarks/bench_foreign.py` on {platform.node()} ({os.cpu_count()} CPUs, shared with "
        f"other jobs: times are inflated), {wall:.0f} s in all, finders at commit `{rev or '?'}`. "
        "Images from `benchmarks/foreign.py` "
        "(an independent generator, not `ptolemy_core.synth`; nothing was tuned on it), written to "
        "`benchmarks/_data/foreign/` and read back as the CLI does "
        "(`read_image` + `find_squares`/`find_holes`). "
        "P/R/F1 = Ptolemy's definitions per image (squares: < half visible or opaque = optional; holes: "
        "< half visible or centre outside = optional), mean over the images of a look. IoU = median over "
        "fully visible matched squares; centre err = median distance of matched hole detections to the "
        "true centre, in hole radii. AUC = score vs truth `good` over matched required targets. `lacey` has "
        "no lattice and no true holes: every detection is a false positive; *conf.* counts targets with "
        "score ≥ 0.5 (should be ~0 there). cpu s = process time of read + find (less inflated than wall).",
        "",
        "| finder | look | images | P | R | F1 | min F1 | IoU / centre err | AUC | found / required "
        "| conf. | wall s | cpu s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = []
    for r in rows:
        if (r["kind"], r["look"]) not in order:
            order.append((r["kind"], r["look"]))
    for kind, look in order:
        rs = [r for r in rows if r["kind"] == kind and r["look"] == look]
        m = mean_scores([r["det"] for r in rs])
        geo = [r["iou"] if kind == "atlas" else r["err"] for r in rs]
        geo = [g for g in geo if np.isfinite(g)]
        geo_s = f"{np.mean(geo):.2f}" if geo else "–"
        pairs = [p for r in rs for p in r["pairs"]]
        auc = roc_auc([p[0] for p in pairs], [p[1] for p in pairs]) if pairs else float("nan")
        auc_s = "–" if not np.isfinite(auc) else f"{auc:.2f}"
        crashed = sum(r["error"] is not None for r in rs)
        label = f"{look} ({crashed} crashed)" if crashed else look
        lines.append(
            f"| {'squares' if kind == 'atlas' else 'holes'} | {label} "
            f"| {len(rs)} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | "
            f"{min(r['det'].f1 for r in rs):.3f} | {geo_s} | {auc_s} | "
            f"{sum(r['found'] for r in rs)} / {sum(r['required'] for r in rs)} | "
            f"{sum(r['confident'] for r in rs)} | {np.mean([r['secs'] for r in rs]):.2f} | "
            f"{np.mean([r['cpu'] for r in rs]):.2f} |")
    lines += ["", "Per image (reproduce with `foreign_atlas(seed, look)` / "
              "`foreign_square_image(seed, look)`; file = `<version>_<kind>_<look>_<seed>`):", "",
              "| file | shape | TP | FP | FN | F1 | note |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        d = r["det"]
        note = r["error"] or "; ".join(n for n in r["notes"] if "I0" not in n and "ice thickness" not in n)
        lines.append(f"| `{Path(r['path']).name}` | {r['shape'][0]}×{r['shape'][1]} | {d.tp} | {d.fp} "
                     f"| {d.fn} | {d.f1:.3f} | {note[:90]} |")
    return "\n".join(lines) + "\n"


def update_readme(text: str) -> None:
    """Replace only the text between this bench's markers (other sections belong to others)."""
    update_section("foreign", text, heading="## Foreign looks (robustness)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=len(SEEDS), help="how many of the fixed seeds per look")
    ap.add_argument("--no-readme", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    rows = run(SEEDS[: max(1, args.seeds)])
    text = table(rows, time.perf_counter() - t0)
    print(text)
    if not args.no_readme:
        update_readme(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
