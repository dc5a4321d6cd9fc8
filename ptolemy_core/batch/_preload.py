"""Imported by the batch fork server: what every worker needs, imported once before forking.

Forked workers inherit the imported modules, so N workers do not each spend seconds
importing scipy/scikit-image/torch. The finders import some of those lazily, inside
functions (fast ``ptolemy --help``); this module finds such imports by reading the
finder packages' source (``ast``) and imports them here too. Importing only loads
code; nothing runs that could start threads, so forking afterwards is safe.

Any failure is swallowed (multiprocessing only tolerates ImportError in a preload
and would otherwise lose its fork server); the same failure then surfaces per
image, as a row of the summary.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

#: Third-party packages worth importing ahead (heavy to import, safe to fork after).
HEAVY = ("numpy", "scipy", "skimage", "torch", "mrcfile", "tifffile", "PIL")

OURS = ("ptolemy_core.batch.runner", "ptolemy_core.io", "ptolemy_core.squares",
        "ptolemy_core.holes", "ptolemy_core.models.registry", "ptolemy_core.models.api")


def lazy_imports(folder: Path) -> list[str]:
    """Absolute module names under :data:`HEAVY` imported anywhere in ``folder``'s sources."""
    names: set[str] = set()
    for path in sorted(folder.rglob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
    return sorted(n for n in names if n.split(".")[0] in HEAVY)


def preload() -> list[str]:
    """Import our finder modules and their heavy dependencies; returns what was imported."""
    done = []
    for name in OURS:
        try:
            importlib.import_module(name)
            done.append(name)
        except Exception:  # noqa: BLE001 - see the module docstring
            pass
    root = Path(__file__).resolve().parent.parent
    for sub in ("squares", "holes", "models"):
        for name in lazy_imports(root / sub):
            try:
                importlib.import_module(name)
                done.append(name)
            except Exception:  # noqa: BLE001 - see the module docstring
                pass
    return done


preload()
