"""`ptolemy medmag PATH [-f txt|json] [-o OUT] [--pixel-size NM] [--i0 VALUE] [--frame K] [--method ...]`.

Drop-in for Ptolemy's ``medmag_cli.py``: ``-f json`` prints one line, a list
sorted by score with ``center`` [x, y], ``vertices``, ``area``, ``score`` as
Ptolemy, then extras (``radius``, ``ellipse``, ``ice_thickness_nm``, ``cut``,
``lattice_index`` ...). The image's lattice is attached to every hole as
``lattice`` = ``{"kind", "basis": [[x, y], [x, y]], "origin": [x, y]}`` so each
line stays self-contained.
"""

from __future__ import annotations

import argparse

from . import common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_image_arguments(parser)
    common.add_output_arguments(parser)
    parser.add_argument("--i0", type=float, default=None, metavar="VALUE",
                        help="vacuum intensity (counts) for ice thickness; "
                             "default: estimated from empty holes")
    parser.add_argument("--method", choices=("lattice", "unet"), default="lattice",
                        help="hole localisation: lattice (default) or unet (needs model weights)")


def run(args: argparse.Namespace) -> int:
    from ..formats import to_json_line, to_txt
    from ..holes import find_holes

    if hasattr(common, "load_image_arg"):
        image = common.load_image_arg(args)
    else:  # pragma: no cover - older common.py
        from ..io import read_image

        image = read_image(args.path, frame=args.frame, pixel_size_nm=args.pixel_size)
    result = find_holes(image, i0=args.i0, method=args.method)
    common.print_notes([n for n in result.notes if n not in image.notes])
    targets = result.targets
    if result.lattice is not None:
        lattice = result.lattice.to_json()
        for t in targets:
            t.features["lattice"] = lattice
    text = to_json_line(targets) if args.format == "json" else to_txt(targets)
    common.emit(text, args.output)
    return 0
