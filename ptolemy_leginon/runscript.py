"""Entry point of the drop-in scripts ``sq_finding.sh`` / ``hole_finding.sh``.

Usage::

    python -m ptolemy_leginon.runscript lowmag IMAGE OUTJSON
    python -m ptolemy_leginon.runscript medmag IMAGE OUTJSON [--score-key KEY]
    python -m ptolemy_leginon.runscript KIND --rejoin JOB WORD...   (see below)

Writes ONE line of JSON to ``OUTJSON`` atomically (temporary file in the same
folder, then rename), which is what Leginon's ``MosaicScoreTargetFinder`` /
``ScoreTargetFinder`` read:

* ``lowmag``: Ptolemy's low-mag records, ``[x, y]`` in pixels of the tile.
* ``medmag``: Ptolemy's medium-mag records with ``center`` / ``vertices`` in
  **Leginon's shrunk frame** (the image binned to <= 1440 px, see
  :mod:`ptolemy_leginon.convert`), because ``ScoreTargetFinder`` uses them as
  coordinates on its shrunk image; ``full_center`` keeps the full-resolution
  ``[x, y]``. (``ptolemy medmag`` keeps full-resolution pixels.) The score is
  also stored under ``--score-key`` (Leginon's ``score key`` setting;
  default ``$PTOLEMY_SCORE_KEY`` or ``score``).

With fewer than two holes nothing is written and the exit status is 0:
Leginon's ``setLatticeMatrix`` raises on a list of 0 or 1 holes, while a
missing file is read as "no holes" with one warning.

First the resident worker (``ptolemy serve``) is asked; when none answers the
finder runs in this process (``PTOLEMY_NO_WORKER=1`` skips the worker,
``PTOLEMY_START_WORKER=1`` starts one in the background for the next calls).

``--rejoin``: Leginon builds ``source SCRIPT JOB IMAGE OUTDIR`` without quotes,
so a space in the session's image path splits IMAGE and OUTDIR into several
words. The scripts then pass the words here; IMAGE is rebuilt as the words up
to one ending in ``.mrc`` whose folder is the rest.

Exit status: 0 written; 2 bad input (one line on stderr); 70 internal error.
A failure never leaves a partial or stale output file.
"""

from __future__ import annotations

import argparse
import os
import sys

from ptolemy_core.cli.main import guarded
from ptolemy_core.errors import PtolemyInputError

KINDS = ("lowmag", "medmag")


def rejoin(words: list[str]) -> tuple[str, str]:
    """Rebuild ``(IMAGE, OUTDIR)`` from Leginon's unquoted, space-split words.

    Raises
    ------
    PtolemyInputError
        No split gives an IMAGE ending in ``.mrc`` inside OUTDIR.
    """
    if len(words) == 2:
        return words[0], words[1]
    for k in range(1, len(words)):
        image = " ".join(words[:k])
        outdir = " ".join(words[k:])
        if image.endswith(".mrc") and os.path.dirname(image).rstrip("/") == outdir.rstrip("/"):
            return image, outdir
    raise PtolemyInputError(f"cannot tell the image from the output folder in: {' '.join(words)}")


def _worker_line(kind: str, path: str) -> str | None:
    if os.environ.get("PTOLEMY_NO_WORKER"):
        return None
    try:
        from ptolemy_core.server.client import find_via_worker
    except ImportError:
        return None
    line = find_via_worker(kind, os.path.abspath(path))
    if line is None and os.environ.get("PTOLEMY_START_WORKER"):
        try:
            from ptolemy_core.server.client import start_worker_background

            start_worker_background()
        except Exception:  # noqa: BLE001 - starting a helper must never fail this call
            pass
    return line


def find_line(kind: str, path: str, *, score_key: str = "score") -> str | None:
    """The JSON line for Leginon (None: fewer than two holes, write nothing)."""
    from ptolemy_core.formats import from_json, to_json_line

    line = _worker_line(kind, path)
    if kind == "lowmag":
        if line is not None:
            return line.strip()
        from ptolemy_core import find_squares, read_image

        return to_json_line(find_squares(read_image(path)).targets)
    from ptolemy_core import read_image

    from .holes import leginon_json_line

    image = read_image(path)
    if line is not None:
        targets = from_json(line, kind="hole")
    else:
        from ptolemy_core import find_holes

        targets = find_holes(image).targets
    if len(targets) < 2:
        return None
    return leginon_json_line(targets, image.shape, score_key=score_key)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ptolemy_leginon.runscript",
        description="Ptolemy finder for Leginon's score-finder scripts.",
    )
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("args", nargs="+", metavar="ARG", help="IMAGE OUTJSON, or --rejoin JOB WORD...")
    parser.add_argument("--rejoin", action="store_true", help="ARGs are JOB and Leginon's space-split words")
    parser.add_argument(
        "--score-key",
        default=os.environ.get("PTOLEMY_SCORE_KEY") or "score",
        help="key Leginon's 'score key' setting reads (default: score)",
    )
    args = parser.parse_args(argv)
    prog = f"ptolemy-leginon {args.kind}"
    return guarded(prog, lambda: _run(args, prog))


def _run(args: argparse.Namespace, prog: str) -> int:
    if args.rejoin:
        if len(args.args) < 3:
            raise PtolemyInputError("--rejoin needs JOB and at least two words")
        image, outdir = rejoin(args.args[1:])
        out = os.path.join(outdir, args.args[0] + ".json")
    else:
        if len(args.args) != 2:
            raise PtolemyInputError("expected IMAGE OUTJSON")
        image, out = args.args
    folder = os.path.dirname(out) or "."
    if not os.path.isdir(folder):
        raise PtolemyInputError(f"output folder {folder} does not exist")
    if not os.path.isfile(image):
        raise PtolemyInputError(f"{image}: no such file")
    line = find_line(args.kind, image, score_key=args.score_key)
    if line is None:
        print(
            f"{prog}: note: fewer than two holes in {image}; nothing written "
            "(Leginon reads a missing result as no holes)",
            file=sys.stderr,
        )
        return 0
    from ptolemy_core.atomic import write_atomic

    try:
        write_atomic(out, line + "\n")
    except OSError as exc:
        raise PtolemyInputError(f"cannot write {out}: {exc.strerror or exc}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
