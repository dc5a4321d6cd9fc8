"""``ptolemy simulate``: write simulated atlases / square images with ground truth.

Each image is written as ``<kind>_<seed>.mrc`` with ``<kind>_<seed>.json`` beside it
(truth with ``[x, y] = [column, row]`` pixel coordinates).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import PtolemyInputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=("atlas", "square"),
                        help="atlas = low-mag grid atlas; square = medium-mag image of one square")
    parser.add_argument("-n", "--count", type=int, default=1, help="number of images (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="first seed; image i uses seed+i (default 0)")
    parser.add_argument("-o", "--out", default="simulated", metavar="DIR",
                        help="output folder (created; default ./simulated)")
    parser.add_argument("--shape", type=int, nargs=2, metavar=("ROWS", "COLS"), default=None,
                        help="image size in pixels (default 1024 1024 for atlas, 1024 1440 for square)")
    parser.add_argument("--montage", choices=("yes", "no", "random"), default="random",
                        help="atlas only: assemble from tiles (default: drawn from the seed)")
    parser.add_argument("--film", choices=("gold", "carbon"), default=None, help="square only")
    parser.add_argument("--contrast", choices=("normal", "low", "inverted"), default=None,
                        help="square only (carbon film)")
    parser.add_argument("--lattice", choices=("square", "oblique", "hex"), default=None, help="square only")


def run(args: argparse.Namespace) -> int:
    from .. import synth

    if args.count < 1:
        raise PtolemyInputError("--count must be at least 1")
    if args.shape is not None and min(args.shape) < 64:
        raise PtolemyInputError("--shape must be at least 64 x 64 pixels")
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PtolemyInputError(f"cannot create output folder {out}: {exc.strerror or exc}") from None
    for i in range(args.count):
        seed = args.seed + i
        if args.kind == "atlas":
            montage = {"yes": True, "no": False, "random": None}[args.montage]
            kwargs = {"montage": montage}
            if args.shape:
                kwargs["shape"] = tuple(args.shape)
            sample = synth.simulate_atlas(seed, **kwargs)
        else:
            kwargs = {"film": args.film, "contrast": args.contrast, "lattice": args.lattice}
            if args.shape:
                kwargs["shape"] = tuple(args.shape)
            sample = synth.simulate_square_image(seed, **kwargs)
        mrc, truth = sample.save(out / f"{args.kind}_{seed}")
        n_obj = len(sample.truth.get("squares", sample.truth.get("holes", [])))
        noun = "squares" if args.kind == "atlas" else "holes"
        print(f"[{i + 1}/{args.count}] {mrc}  ({sample.data.shape[0]}x{sample.data.shape[1]}, "
              f"{n_obj} {noun}; truth {truth.name})", file=sys.stderr if args.count > 1 else sys.stdout)
    if args.count > 1:
        print(f"wrote {args.count} images to {out}")
    return 0
