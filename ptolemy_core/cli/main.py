"""Entry points: ``ptolemy`` (sub-commands), ``ptolemy-lowmag``, ``ptolemy-medmag``.

Every sub-command lives in its own module under :mod:`ptolemy_core.cli` and
exposes ``add_arguments(parser)`` and ``run(args) -> int``. Modules import
heavy libraries (torch, scipy) inside ``run`` so ``ptolemy --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Callable

from .. import __version__
from ..errors import PtolemyInputError, PtolemyUnavailableError

#: (sub-command, module under ptolemy_core.cli, one-line help)
COMMANDS: list[tuple[str, str, str]] = [
    ("lowmag", "lowmag", "find, measure and rank grid squares on an atlas (Ptolemy lowmag_cli)"),
    ("medmag", "medmag", "find, measure and rank holes on a square image (Ptolemy medmag_cli)"),
    ("demo", "demo", "simulate a small multi-grid example and run the finders on it"),
    ("simulate", "simulate", "write simulated atlases / square images with ground truth"),
    ("review", "review", "draw ranked targets over an image (PNG)"),
    ("report", "report", "one self-contained HTML report for a session folder"),
    ("batch", "batch", "run a finder over many images (resumable, all cores, Dask)"),
    ("train", "train", "train the square / hole / U-Net models"),
    ("screen", "screen", "dry-run multi-grid screening: what would be collected"),
    ("serve", "serve", "resident worker + Leginon learning-server API (loopback)"),
    ("simulate-session", "simulate_session", "play simulated screening sessions, compare policies"),
    ("leginon", "leginon", "Leginon helpers (copy the drop-in scripts)"),
]


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ptolemy",
        description="Find, measure and rank cryo-EM grid squares and holes (Leginon targeting).",
    )
    parser.add_argument("--version", action="version", version=f"ptolemy-leginon {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module, help_text in COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only is None or only == name:
            _module(module).add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def _module(module: str):
    return importlib.import_module(f"{__package__}.{module}")


def _run(argv: list[str] | None, prog_prefix: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if prog_prefix:
        argv = prog_prefix + argv
    # Only the chosen sub-command's module is imported (fast --help / start-up).
    first = next((a for a in argv if not a.startswith("-")), None)
    only = first if first in {c[0] for c in COMMANDS} else None
    parser = build_parser(only)
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    return guarded(f"ptolemy {args.command}", lambda: _module(args._module).run(args))


def guarded(prog: str, action: Callable[[], int | None]) -> int:
    """Run ``action``; turn every failure into one line on stderr and an exit status.

    2 = bad input (:class:`PtolemyInputError`), 3 = unavailable feature, 130 = interrupted,
    70 = internal error (traceback only with ``PTOLEMY_DEBUG=1``). Shared by the CLI and
    the Leginon scripts' runner, whose contract is the same.
    """
    try:
        return int(action() or 0)
    except PtolemyInputError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except PtolemyUnavailableError as exc:
        print(f"{prog}: unavailable: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except MemoryError:
        print(f"{prog}: error: out of memory", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - the contract is one line, never a traceback
        if os.environ.get("PTOLEMY_DEBUG"):
            traceback.print_exc()
        msg = " ".join(str(exc).split()) or type(exc).__name__
        print(f"{prog}: internal error: {type(exc).__name__}: {msg} "
              "(set PTOLEMY_DEBUG=1 for a traceback)", file=sys.stderr)
        return 70


def main(argv: list[str] | None = None) -> int:
    return _run(argv)


def lowmag_main(argv: list[str] | None = None) -> int:
    """``ptolemy-lowmag``: Ptolemy's ``lowmag_cli.py`` flags."""
    return _run(argv, ["lowmag"])


def medmag_main(argv: list[str] | None = None) -> int:
    """``ptolemy-medmag``: Ptolemy's ``medmag_cli.py`` flags."""
    return _run(argv, ["medmag"])


def console_main() -> None:  # pragma: no cover - thin wrapper for setuptools
    sys.exit(main())


def console_lowmag() -> None:  # pragma: no cover
    sys.exit(lowmag_main())


def console_medmag() -> None:  # pragma: no cover
    sys.exit(medmag_main())


if __name__ == "__main__":  # pragma: no cover
    console_main()
