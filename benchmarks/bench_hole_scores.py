"""Hole-score bench: held-out ROC AUC of the default hole score vs truth ``good``, per class.

Fast and focused (no learned models): the held-out medium-mag sessions of
``benchmarks/suite.py`` (``square_image_sessions("held-out", N)``) run through
``find_holes`` twice — as a caller without I0 would (I0 estimated from empty holes, the
benchmark default) and with the session's true I0 given — plus the square-image looks of
the independent generator ``benchmarks/foreign.py`` (seeds 101, 102, read back from files
as the CLI does). AUC is over detections lying in exactly one required truth hole (holes
less than half visible or centred outside the image are optional and left out), i.e. on the
holes that were matched: a class whose lattice is missed contributes few holes.
Finally the time of one ``find_holes`` call (min / median of 3) with the load average.

    python benchmarks/bench_hole_scores.py [--per-class 3] [--no-foreign] [--readme]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import suite  # noqa: E402

from ptolemy_core.holes import find_holes  # noqa: E402
from ptolemy_core.metrics import roc_auc  # noqa: E402
from ptolemy_core.synth.square_image import simulate_square_image  # noqa: E402
from ptolemy_core.train.holes_interpretable import labelled_rows  # noqa: E402


def _pairs(truth, targets):
    idx, y = labelled_rows(truth, targets)
    return np.array([targets[i].score for i in idx], float), y


def _auc(parts) -> tuple[float, int, int]:
    if not parts:
        return float("nan"), 0, 0
    s = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts]).astype(bool)
    a = roc_auc(s, y) if 0 < y.sum() < len(y) else float("nan")
    return float(a), int(len(y)), int(y.sum())


def held_out(per_class: int) -> dict:
    """{class: {"est": [(scores, y)], "true": [...]}} over the held-out sessions."""
    out: dict = {}
    for name, seed, kw in suite.square_image_sessions("held-out", per_class):
        sim = simulate_square_image(seed, **kw)
        row = out.setdefault(name, {"est": [], "true": []})
        row["est"].append(_pairs(sim.truth, find_holes(sim.data).targets))
        row["true"].append(_pairs(sim.truth, find_holes(sim.data, i0=sim.truth["i0"]).targets))
        print(f"  held-out {name} seed {seed}", file=sys.stderr, flush=True)
    return out


def foreign_looks(seeds=(101, 102)) -> dict:
    """{look: [(scores, y)]} on the foreign square looks (files cached in benchmarks/_data)."""
    import foreign
    from bench_foreign import _generate

    from ptolemy_core import read_image

    out: dict = {}
    for look in foreign.SQUARE_LOOKS:
        for seed in seeds:
            path, truth = _generate("square", look, seed)
            res = find_holes(read_image(path))
            out.setdefault(look, []).append(_pairs(truth, res.targets))
    return out


def timing(shape=(1024, 1440), repeats: int = 3) -> tuple[float, float, int]:
    sim = simulate_square_image(77, shape=shape, film="carbon", contrast="normal", hole_px=40, dose=40)
    find_holes(sim.data[:512, :512])  # imports and caches out of the timing
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = find_holes(sim.data)
        ts.append(time.perf_counter() - t0)
    return min(ts), float(np.median(ts)), len(res.targets)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-class", type=int, default=3)
    ap.add_argument("--no-foreign", action="store_true")
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--readme", action="store_true", help="write the section into benchmarks/README.md")
    args = ap.parse_args(argv)
    t0 = time.time()
    lines = ["| class | holes | good | AUC, I0 estimated (default) | AUC, true I0 given |",
             "|---|---|---|---|---|"]
    ho = held_out(args.per_class)
    allest, alltrue = [], []
    for name, row in ho.items():
        a, n, g = _auc(row["est"])
        b, _, _ = _auc(row["true"])
        allest += row["est"]
        alltrue += row["true"]
        lines.append(f"| {name} | {n} | {g} | {a:.3f} | {b:.3f} |")
    a, n, g = _auc(allest)
    b, _, _ = _auc(alltrue)
    lines.append(f"| **all** | {n} | {g} | {a:.3f} | {b:.3f} |")
    if not args.no_foreign:
        lines += ["", "| foreign look | holes | good | AUC |", "|---|---|---|---|"]
        fo = foreign_looks()
        allf = []
        for look, parts in fo.items():
            a, n, g = _auc(parts)
            allf += parts
            lines.append(f"| {look} | {n} | {g} | {a:.3f} |" if n else f"| {look} | 0 | 0 | – |")
        a, n, g = _auc(allf)
        lines.append(f"| **all** | {n} | {g} | {a:.3f} |")
    if not args.no_timing:
        load = os.getloadavg()[0]
        tmin, tmed, nh = timing()
        lines += ["", f"`find_holes` 1024×1440 ({nh} holes): min {tmin:.3f} s, median {tmed:.3f} s of 3 "
                      f"(load average {load:.1f} on {os.cpu_count()} CPUs)"]
    head = (f"`python benchmarks/bench_hole_scores.py --per-class {args.per_class}` "
            f"({time.time() - t0:.0f} s). "
            "Held-out sessions of `benchmarks/suite.py`; AUC of the default score (`scorer=\"auto\"` = "
            "interpretable) vs truth `good` over matched required holes.")
    text = head + "\n\n" + "\n".join(lines)
    print(text)
    if args.readme:
        from readme_section import update_section

        update_section("hole_scores", text, heading="## Hole scores (interpretable model)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
