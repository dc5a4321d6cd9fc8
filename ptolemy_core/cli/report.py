"""``ptolemy report``: one self-contained HTML page for a session folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import PtolemyInputError


def _layout_help() -> str:
    # The layout is documented once, in the library module's docstring.
    from ..review import report

    doc = report.__doc__ or ""
    return doc[doc.index("SESSION_DIR layout"):] if "SESSION_DIR layout" in doc else ""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = (
        "One self-contained HTML page (inline PNG images, inline CSS and SVG histograms; no "
        "JavaScript, no external files) for a session: per grid the atlas with its ranked squares, "
        "each square image with its holes, tables of the numbers, score and ice-thickness histograms.")
    parser.epilog = _layout_help()
    parser.add_argument("session", metavar="SESSION_DIR", help="session folder (layout below)")
    parser.add_argument("-o", "--output", default="report.html", metavar="OUT.html",
                        help="HTML file to write (default ./report.html)")
    parser.add_argument("--no-find", action="store_true",
                        help="do not run the finders for images without a targets file")
    parser.add_argument("--rows", type=int, default=50, metavar="N",
                        help="rows per targets table, best first (default 50)")
    parser.add_argument("--top", type=int, default=20, metavar="N",
                        help="rank numbers on the best N (default 20)")
    parser.add_argument("--title", default=None, help="page title")


def run(args: argparse.Namespace) -> int:
    from ..review.report import write_report

    if args.rows < 1:
        raise PtolemyInputError(f"--rows must be at least 1, got {args.rows}")

    def progress(item) -> None:
        state = f"error: {item.error}" if item.error else f"{len(item.targets or [])} targets"
        print(f"ptolemy report: {item.grid}/{item.path.name}: {state}", file=sys.stderr)

    out = write_report(args.session, Path(args.output), run_finders=not args.no_find, title=args.title,
                       max_rows=args.rows, top_n=args.top, progress=progress)
    print(out)
    return 0
