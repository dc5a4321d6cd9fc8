"""``ptolemy demo``: simulate a small multi-grid example and run the finders on it.

For each grid it writes, into the output folder::

    grid<k>/atlas.mrc, atlas.truth.json        simulated atlas + ground truth
    grid<k>/atlas.targets.json                 ranked squares (Ptolemy JSON line)
    grid<k>/atlas.review.png                   squares outlined, coloured by score
    grid<k>/square<j>.mrc, .truth.json, .targets.json, .review.png   the same for holes

and prints what was found against the truth.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..errors import PtolemyInputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--out", default="ptolemy-demo", metavar="DIR",
                        help="output folder (created; default ./ptolemy-demo)")
    parser.add_argument("--grids", type=int, default=2, help="number of grids in the cassette (default 2)")
    parser.add_argument("--squares", type=int, default=2, help="square images per grid (default 2)")
    parser.add_argument("--seed", type=int, default=2026, help="seed of the whole example (default 2026)")


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    if not 1 <= args.grids <= 12 or not 0 <= args.squares <= 12:
        raise PtolemyInputError("--grids must be 1..12 and --squares 0..12")
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PtolemyInputError(f"cannot create output folder {out}: {exc.strerror or exc}") from None
    start = time.perf_counter()
    print(f"ptolemy demo: simulating {args.grids} grid(s) into {out}/ ...", file=sys.stderr)
    run_demo(out, grids=args.grids, squares=args.squares, seed=args.seed,
             progress=lambda line: print(line, flush=True))
    print(f"done in {time.perf_counter() - start:.1f} s; summary: {out / 'summary.json'}; "
          f"open the *.review.png pictures to see the ranked targets")
    return 0
