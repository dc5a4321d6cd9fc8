"""Build the two Leginon node classes and register them with Leginon.

Leginon is imported only inside these functions, so ``import ptolemy_leginon``
works anywhere. Inside a Leginon installation one line enables the nodes (see
``ptolemy_leginon/README.md``)::

    import ptolemy_leginon.register; ptolemy_leginon.register.register()
"""

from __future__ import annotations

import importlib
from typing import Any

from .holefinder import HoleNodeMixin
from .settings import (
    HOLE_DEFAULT_OVERRIDES,
    HOLE_EXTRA_DEFAULTS,
    SQUARE_DEFAULT_OVERRIDES,
    SQUARE_EXTRA_DEFAULTS,
    make_settings_classes,
    merged_defaults,
)
from .squarefinder import SquareNodeMixin

#: Leginon modules the nodes are built from.
LEGINON_MODULES = (
    "leginondata",
    "statshole",
    "statssquare",
    "mosaictargetfinder",
    "mosaicexternalfinder",
    "scorefinder",
)

_CACHE: dict[int, dict[str, type]] = {}


def leginon_modules() -> dict[str, Any]:
    """Import the Leginon modules the nodes need (raises ImportError outside Leginon)."""
    return {name: importlib.import_module(f"leginon.{name}") for name in LEGINON_MODULES}


def make_node_classes(modules: dict[str, Any] | None = None) -> dict[str, type]:
    """Create ``PtolemySquareFinder`` and ``PtolemyHoleFinder``.

    Parameters
    ----------
    modules : dict, optional
        ``{"leginondata": ..., "statshole": ..., "statssquare": ...,
        "mosaictargetfinder": ..., "mosaicexternalfinder": ..., "scorefinder": ...}``;
        default: imported from ``leginon``. Tests pass fakes here.

    Returns
    -------
    dict
        ``{"PtolemySquareFinder": cls, "PtolemyHoleFinder": cls}`` (made once per modules set).
    """
    mods = modules if modules is not None else leginon_modules()
    key = id(mods["leginondata"])
    if key in _CACHE:
        return _CACHE[key]
    settings_classes = make_settings_classes(mods["leginondata"])
    sq_base = mods["mosaicexternalfinder"].MosaicScoreTargetFinder
    hole_base = mods["scorefinder"].ScoreTargetFinder

    square_cls = type(
        "PtolemySquareFinder",
        (SquareNodeMixin, sq_base),
        {
            "__module__": __name__,
            "__doc__": "Atlas square finder running ptolemy_core in the node (ptolemy_leginon.squarefinder).",
            "_leginon": mods,
            "_click_add_tile": mods["mosaictargetfinder"].MosaicClickTargetFinder._addTile,
            "settingsclass": settings_classes["PtolemySquareFinderSettingsData"],
            "defaultsettings": merged_defaults(
                sq_base.defaultsettings, SQUARE_DEFAULT_OVERRIDES, SQUARE_EXTRA_DEFAULTS
            ),
        },
    )
    hole_cls = type(
        "PtolemyHoleFinder",
        (HoleNodeMixin, hole_base),
        {
            "__module__": __name__,
            "__doc__": "Hole finder running ptolemy_core in the node (see ptolemy_leginon.holefinder).",
            "_leginon": mods,
            "settingsclass": settings_classes["PtolemyHoleFinderSettingsData"],
            "defaultsettings": merged_defaults(
                hole_base.defaultsettings, HOLE_DEFAULT_OVERRIDES, HOLE_EXTRA_DEFAULTS
            ),
        },
    )
    _CACHE[key] = {"PtolemySquareFinder": square_cls, "PtolemyHoleFinder": hole_cls}
    # importable by name (Leginon's launcher and pickling look classes up by module + name)
    globals().update(_CACHE[key])
    return _CACHE[key]


def register(noderegistry: Any = None, modules: dict[str, Any] | None = None) -> dict[str, type]:
    """Register both nodes as 'Pipeline' nodes with Leginon's node registry.

    Parameters
    ----------
    noderegistry : module, optional
        Default ``leginon.noderegistry``.
    modules : dict, optional
        See :func:`make_node_classes`.
    """
    if noderegistry is None:
        noderegistry = importlib.import_module("leginon.noderegistry")
    classes = make_node_classes(modules)
    for cls in classes.values():
        noderegistry.registerNodeClass(cls, "Pipeline")
    return classes
