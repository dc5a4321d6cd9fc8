"""``ptolemy lowmag``: find, measure and rank grid squares on an atlas (Ptolemy's ``lowmag_cli.py``).

``-f json`` prints one line: a list sorted by score, each item ``center`` [x, y],
``vertices`` 4 × [x, y], ``area``, ``brightness``, ``score`` (x = column, y = row, pixels
of the input), then our extra fields. ``-f txt`` prints Ptolemy's ``x_coord<TAB>y_coord``
table. A constant image (or one without squares) gives ``[]`` and exit 0.
"""

from __future__ import annotations

import argparse

from .common import add_image_arguments, add_output_arguments, emit, print_notes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_image_arguments(parser)
    add_output_arguments(parser)
    parser.add_argument("--scorer", choices=("auto", "interpretable", "cnn", "none"), default="auto",
                        help="square scorer (default auto: the CNN when its weights are installed, "
                             "else the interpretable model)")
    parser.add_argument("--method", choices=("robust", "ptolemy"), default="robust",
                        help="localisation: robust (default) or the published Ptolemy baseline")


def find(args: argparse.Namespace):
    """Read the image named by ``args`` and run the square finder (shared with benchmarks)."""
    from .. import squares

    image = _load(args)
    return squares.find_squares(image, scorer=getattr(args, "scorer", "auto"),
                                method=getattr(args, "method", "robust"))


def render(result, fmt: str) -> str:
    """The text the command prints for a :class:`~ptolemy_core.squares.SquareResult`."""
    from ..formats import to_json_line, to_txt

    return to_json_line(result.targets) if fmt == "json" else to_txt(result.targets)


def run(args: argparse.Namespace) -> int:
    result = find(args)
    # The finder's remarks (not an atlas, no credible mesh period, blobs dropped ...) go to
    # stderr: stdout stays the drop-in Ptolemy output.
    print_notes(result.notes)
    emit(render(result, args.format), args.output)
    return 0


def _load(args: argparse.Namespace):
    from . import common

    if hasattr(common, "load_image_arg"):
        return common.load_image_arg(args)
    from ..io import read_image  # pragma: no cover - older checkouts

    image = read_image(args.path, frame=args.frame, pixel_size_nm=args.pixel_size)
    print_notes(image.notes)
    return image
