"""Imported by the batch fork server: the heavy modules every worker needs, imported once.

Forked workers inherit them. Any failure is swallowed here (multiprocessing only
tolerates ImportError in a preload and would otherwise lose its fork server); the
same failure then surfaces per image, as a row of the summary.
"""

from __future__ import annotations

import importlib

for _name in ("ptolemy_core.batch.runner", "ptolemy_core.io", "ptolemy_core.squares",
              "ptolemy_core.holes", "ptolemy_core.models.registry"):
    try:
        importlib.import_module(_name)
    except Exception:  # noqa: BLE001 - see the module docstring
        pass

try:
    from ptolemy_core.models import registry as _registry

    if _registry.read_manifest():
        # Weights are shipped, so every worker will need torch: import it once here.
        importlib.import_module("ptolemy_core.models.api")
except Exception:  # noqa: BLE001 - see the module docstring
    pass
