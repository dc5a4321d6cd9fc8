"""Refresh the sha256 of non-network entries of ``weights/manifest.json`` (interpretable JSON models).

The interpretable square/hole scorers (``weights/square_interpretable.json``,
``weights/hole_interpretable.json``) are refitted by their own scripts; after
refitting one, run::

    python -m ptolemy_core.models.manifest_tool [WEIGHTS_DIR]

to (re)record their sha256 in the manifest. Network entries (``*.pt``) are never
touched here: they are written by ``ptolemy train ... --manifest``.
"""

from __future__ import annotations

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
    argv = sys.argv[1:] if argv is None else argv
    for name, sha in refresh(Path(argv[0]) if argv else None).items():
        print(f"{name}: {sha}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
