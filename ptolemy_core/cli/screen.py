"""`ptolemy screen` (not implemented yet)."""

from __future__ import annotations

import argparse

from ..errors import PtolemyUnavailableError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("args", nargs=argparse.REMAINDER)


def run(args: argparse.Namespace) -> int:
    raise PtolemyUnavailableError("'ptolemy screen' is not implemented yet in this version")
