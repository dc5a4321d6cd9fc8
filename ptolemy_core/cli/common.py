"""Pieces shared by the finder sub-commands (argument sets, output, notes)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..atomic import write_atomic
from ..errors import PtolemyInputError
from ..image import Image


def add_image_arguments(parser: argparse.ArgumentParser) -> None:
    """Positional PATH plus the reading options every image command takes."""
    parser.add_argument("path", metavar="PATH", help="image file: MRC, TIFF, PNG or JPEG")
    parser.add_argument("--frame", type=int, default=None, metavar="K",
                        help="frame of a multi-frame MRC/TIFF to use (0-based)")
    parser.add_argument("--pixel-size", type=float, default=None, metavar="NM",
                        help="pixel size in nm (overrides the file header)")


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """Ptolemy's ``-f txt|json`` and ``-o OUT``."""
    parser.add_argument("-f", "--format", choices=("txt", "json"), default="txt",
                        help="output format (default: txt, as Ptolemy); json = one line")
    parser.add_argument("-o", "--output", default=None, metavar="OUT",
                        help="write to this file (atomically) instead of stdout")


def check_output_path(output: str, what: str = "output") -> Path:
    """``output`` as a Path, or a one-line error when it cannot be written (checked before long work)."""
    out = Path(output)
    if out.is_dir():
        raise PtolemyInputError(f"{what} {output} is a directory")
    if not out.parent.exists():
        raise PtolemyInputError(f"{what} folder {out.parent} does not exist")
    return out


def emit(text: str, output: str | None) -> None:
    """Print to stdout, or write atomically to ``output``."""
    if not text.endswith("\n"):
        text += "\n"
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    out = check_output_path(output)
    try:
        write_atomic(out, text)
    except OSError as exc:
        raise PtolemyInputError(f"cannot write {output}: {exc.strerror or exc}") from None


def print_notes(notes) -> None:
    """Reading remarks (NaN replaced ...) go to stderr, one line each."""
    for note in notes:
        print(f"ptolemy: note: {note}", file=sys.stderr)


def load_image_arg(args: argparse.Namespace) -> Image:
    """Read the image named on the command line (``PATH``, ``--frame``, ``--pixel-size``).

    Reading notes (NaN pixels replaced ...) are printed on stderr; errors are
    :class:`PtolemyInputError` for the CLI main to print as one line.

    Returns
    -------
    Image
    """
    from ..io import read_image

    image = read_image(args.path, frame=getattr(args, "frame", None),
                       pixel_size_nm=getattr(args, "pixel_size", None))
    print_notes(image.notes)
    return image
