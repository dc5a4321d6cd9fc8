"""``ptolemy review``: draw ranked targets over an image (PNG), like the paper's Figs. 9 and 12."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import PtolemyInputError
from .common import add_image_arguments, load_image_arg, print_notes

EPILOG = """\
picture: squares outlined (their 4 vertices), holes circled (their radius/ellipse), colour =
score on the viridis scale (dark purple 0 .. yellow 1, colour bar on the right), rank numbers
on the best N, dashed outline = flagged (touches the edge, cut by edge/bar, defect or
contamination). The image is shown downsampled to --max-side pixels and contrast-stretched;
coordinates are exact (scaled). Without --targets the matching finder is run first.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    add_image_arguments(parser)
    parser.add_argument("--targets", default=None, metavar="JSON",
                        help="targets to draw: Ptolemy JSON (output of -f json / ptolemy batch); "
                             "default: run the finder")
    parser.add_argument("-o", "--output", default=None, metavar="OUT.png",
                        help="PNG to write (default: ./<image stem>.review.png)")
    parser.add_argument("--kind", choices=("lowmag", "medmag"), default=None,
                        help="lowmag = atlas (squares), medmag = square image (holes); "
                             "default: from the targets, else guessed from the image")
    parser.add_argument("--top", type=int, default=20, metavar="N",
                        help="number the best N targets (default 20)")
    parser.add_argument("--max-side", type=int, default=1600, metavar="PX",
                        help="longest side of the displayed image (default 1600)")
    parser.add_argument("--title", default=None, help="header text (default: the file name)")


def run(args: argparse.Namespace) -> int:
    from ..batch.finders import TARGET_KIND, guess_kind, kind_of_targets, run_finder
    from ..formats import from_json
    from ..review import render_overlay

    if args.top < 0:
        raise PtolemyInputError(f"--top must be >= 0, got {args.top}")
    if args.max_side < 64:
        raise PtolemyInputError(f"--max-side must be at least 64, got {args.max_side}")
    image = load_image_arg(args)
    if args.targets:
        try:
            text = Path(args.targets).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or exc
            raise PtolemyInputError(f"cannot read targets {args.targets}: {why}") from None
        default_kind = TARGET_KIND[args.kind] if args.kind else None
        targets = from_json(text, kind=default_kind) if text.strip() else []
        kind = args.kind or kind_of_targets(targets)
    else:
        kind = args.kind
        if kind is None:
            kind, why = guess_kind(image, args.path)
            print(f"ptolemy: note: treating {args.path} as {kind} ({why}); pass --kind to change",
                  file=sys.stderr)
        result = run_finder(image, kind)
        print_notes(getattr(result, "notes", ()))
        targets = list(result.targets)
    out = Path(args.output) if args.output else Path.cwd() / f"{Path(args.path).stem}.review.png"
    what = {"lowmag": "squares", "medmag": "holes"}.get(kind or "", "targets")
    title = args.title if args.title is not None else f"{Path(args.path).name}: {what}"
    path = render_overlay(image, targets, out, title=title, top_n=args.top, max_side=args.max_side)
    print(path)
    return 0
