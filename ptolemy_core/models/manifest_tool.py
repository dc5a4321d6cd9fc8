"""Refresh the sha256 of non-network entries of ``weights/manifest.json`` (interpretable JSON models).

The interpretable square/hole scorers (``weights/square_interpretable.json``,
``weights/hole_interpretable.json``) are refitted by their own scripts; after
refitting one, run::

    python -m ptolemy_core.models.manifest_tool [WEIGHTS_DIR]

to (re)record their sha256 in the manifest. Network entries (``*.pt``) are never
touched here: they are written by ``ptolemy train ... --manifest``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..atomic import write_atomic
from .registry import sha256_file, weights_dir

#: JSON model files recorded in the manifest when present.
INTERPRETABLE = ("square_interpretable.json", "hole_interpretable.json")


def refresh(folder: Path | None = None) -> dict[str, str]:
    """Record/refresh the sha256 of every present interpretable JSON; returns ``{name: sha256}``."""
    folder = Path(folder) if folder is not None else weights_dir()
    path = folder / "manifest.json"
    doc = json.loads(path.read_text()) if path.is_file() else {}
    models = doc.setdefault("models", {})
    done = {}
    for fname in INTERPRETABLE:
        p = folder / fname
        if p.is_file():
            name = fname.rsplit(".", 1)[0]
            entry = models.setdefault(name, {"file": fname})
            entry["sha256"] = done[name] = sha256_file(p)
    write_atomic(path, json.dumps(doc, indent=1) + "\n")
    return done


def main(argv: list[str] | None = None) -> int:
    """``python -m ptolemy_core.models.manifest_tool [WEIGHTS_DIR]``; prints ``name: sha256`` per model."""
    parser = argparse.ArgumentParser(
        prog="python -m ptolemy_core.models.manifest_tool",
        description="Record the sha256 of the interpretable JSON models in WEIGHTS_DIR/manifest.json.")
    parser.add_argument("weights_dir", nargs="?", type=Path, default=None, metavar="WEIGHTS_DIR",
                        help="folder holding manifest.json and the models (default: the package's weights)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    # A mistyped folder (or an option this tool does not have) must not become a new manifest.
    if args.weights_dir is not None and not args.weights_dir.is_dir():
        parser.error(f"no such folder: {args.weights_dir}")
    for name, sha in refresh(args.weights_dir).items():
        print(f"{name}: {sha}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
