"""``ptolemy leginon``: helpers for a Leginon installation.

``ptolemy leginon scripts DIR`` copies the drop-in scripts ``sq_finding.sh``
and ``hole_finding.sh`` into DIR (with this Python baked in as the default
interpreter) and prints their paths; ``ptolemy leginon scripts --print sq|hole``
prints one script. Point Leginon's ``scoring script`` (Square Targeting) and
``script`` (Exposure Targeting) settings at the copied files.
"""

from __future__ import annotations

import argparse
import sys

SCRIPT_NAMES = {"sq": "sq_finding.sh", "hole": "hole_finding.sh"}
PLACEHOLDER = "@PTOLEMY_PYTHON@"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="leginon_command", metavar="ACTION")
    p = sub.add_parser(
        "scripts",
        help="copy (or print) the drop-in scripts for Leginon's score finders",
        description="Copy sq_finding.sh and hole_finding.sh into DIR (or print one).",
    )
    p.add_argument("dir", nargs="?", metavar="DIR", help="folder to copy the scripts into")
    p.add_argument(
        "--print",
        dest="print_one",
        choices=sorted(SCRIPT_NAMES),
        default=None,
        help="print one script to stdout instead of copying",
    )
    p.add_argument(
        "--python",
        default=None,
        metavar="PY",
        help="interpreter the scripts use by default (default: this one)",
    )


def script_text(which: str, python: str | None = None) -> str:
    """The script ``which`` ('sq' | 'hole') with the default interpreter filled in."""
    import shlex
    from importlib import resources

    text = resources.files("ptolemy_leginon.scripts").joinpath(SCRIPT_NAMES[which]).read_text()
    template = f'__py="${{PTOLEMY_PYTHON:-{PLACEHOLDER}}}"'
    # single-quoted by shlex: any character in the interpreter's path is safe
    baked = (
        f"__py={shlex.quote(python or sys.executable)}  # baked in by `ptolemy leginon scripts`\n"
        '    __py="${PTOLEMY_PYTHON:-$__py}"'
    )
    if template not in text:  # pragma: no cover - the packaged scripts always have it
        raise RuntimeError(f"{SCRIPT_NAMES[which]}: interpreter line not found")
    return text.replace(template, baked)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..atomic import write_atomic
    from ..errors import PtolemyInputError

    if getattr(args, "leginon_command", None) != "scripts":
        raise PtolemyInputError(
            "usage: ptolemy leginon scripts DIR | ptolemy leginon scripts --print sq|hole"
        )
    if args.print_one:
        sys.stdout.write(script_text(args.print_one, args.python))
        return 0
    if not args.dir:
        raise PtolemyInputError("give a folder to copy the scripts into, or --print sq|hole")
    folder = Path(args.dir)
    if not folder.is_dir():
        raise PtolemyInputError(f"{folder} is not a folder")
    for which, name in SCRIPT_NAMES.items():
        dest = folder / name
        try:
            write_atomic(dest, script_text(which, args.python))
            dest.chmod(0o755)
        except OSError as exc:
            raise PtolemyInputError(f"cannot write {dest}: {exc.strerror or exc}") from None
        print(dest.resolve())
    return 0
