"""Settings of the two nodes: Leginon-style names and defaults.

Each node keeps every setting of the Leginon node it replaces (so the existing
settings panels work) and adds a few ``ptolemy ...`` settings. The extra keys
are stored through a settings data class made in :func:`make_settings_classes`
(a subclass of the parent's ``leginondata`` class, registered in
``leginon.leginondata`` so that sinedon maps it to the Leginon database and
creates its table on first use).
"""

from __future__ import annotations

from typing import Any

#: Extra settings of ``PtolemySquareFinder`` (on top of ``MosaicScoreTargetFinder``'s).
SQUARE_EXTRA_DEFAULTS: dict[str, Any] = {
    # score model: "auto" = the interpretable physics score (better held-out AUC than the CNN)
    "ptolemy scorer": "auto",
    "ptolemy pixel size nm": 0.0,  # 0 = ask Leginon's pixel-size calibration, else this value
}

#: Settings of ``MosaicScoreTargetFinder`` we change the default of.
SQUARE_DEFAULT_OVERRIDES: dict[str, Any] = {
    "scoring script": "",  # no script: the finder runs in the node
    "filter-key": "Score",
    "filter-min": 0.0,
    "filter-max": 1.0,
    "target grouping": {
        "total targets": 10,
        "classes": 1,
        "group method": "target count",
        "randomize blobs": False,  # never used by our sampler; False states it
    },
    "autofinder": True,
}

#: Extra settings of ``PtolemyHoleFinder`` (on top of ``ScoreTargetFinder``'s).
HOLE_EXTRA_DEFAULTS: dict[str, Any] = {
    "ptolemy scorer": "auto",
    "ptolemy method": "lattice",  # 'lattice' | 'unet' (when the model ships)
    "ptolemy auto i0": True,  # our vacuum estimate instead of 'lattice zero thickness'
    "ptolemy auto radius": True,  # hole-stats radius from the measured hole radius
    "ptolemy max targets": 0,  # exposures per image: the best-scoring good holes (0 = all)
    "ptolemy pixel size nm": 0.0,
}

#: Settings of ``ScoreTargetFinder`` we change the default of.
HOLE_DEFAULT_OVERRIDES: dict[str, Any] = {
    "script": "",
    "score key": "score",
    "score threshold": 0.0,
}

#: Leginon ``filter-key`` -> blob ``stats`` key.
FILTER_KEYS = {"Size": "size", "Signal": "signal", "Score": "score", "Mean": "mean"}

_TYPES = {bool: bool, int: int, float: float, str: str}


def merged_defaults(
    parent_defaults: dict[str, Any], overrides: dict[str, Any], extra: dict[str, Any]
) -> dict[str, Any]:
    """Parent defaults + our overrides (nested dicts merged) + our extra keys (deep copies)."""
    import copy

    out = copy.deepcopy(dict(parent_defaults))
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key].update(copy.deepcopy(value))
        else:
            out[key] = copy.deepcopy(value)
    out.update(copy.deepcopy(extra))
    return out


def typemap_entries(extra: dict[str, Any]) -> tuple[tuple[str, type], ...]:
    """sinedon ``typemap`` entries for the extra settings."""
    return tuple((key, _TYPES[type(value)]) for key, value in extra.items())


def make_settings_classes(leginondata: Any) -> dict[str, type]:
    """Settings data classes for the two nodes, registered in ``leginondata``.

    sinedon finds a data class by ``(module name, class name)`` and picks the
    database from the module name's last part, so the classes get
    ``__module__ = leginondata.__name__`` and become attributes of it.
    """
    made = {}
    for name, parent_name, extra in (
        ("PtolemySquareFinderSettingsData", "MosaicScoreTargetFinderSettingsData", SQUARE_EXTRA_DEFAULTS),
        ("PtolemyHoleFinderSettingsData", "ScoreTargetFinderSettingsData", HOLE_EXTRA_DEFAULTS),
    ):
        existing = getattr(leginondata, name, None)
        if existing is not None:
            made[name] = existing
            continue
        parent = getattr(leginondata, parent_name)
        entries = typemap_entries(extra)

        def typemap(cls, _parent=parent, _entries=entries):
            return _parent.typemap() + _entries

        cls = type(name, (parent,), {"typemap": classmethod(typemap), "__module__": leginondata.__name__})
        setattr(leginondata, name, cls)
        made[name] = cls
    return made


def calibrated_pixel_size_nm(settings: Any, calclients: Any, imagedata: Any) -> float | None:
    """The ``ptolemy pixel size nm`` setting, else Leginon's pixel-size calibration, else None.

    The calibration is optional: the finders measure the scale from the image itself.
    """
    value = float(settings.get("ptolemy pixel size nm") or 0.0)
    if value > 0:
        return value
    try:
        size = calclients["image shift"].getImagePixelSize(imagedata)
        return float(size["x"]) * 1e9 if size and size.get("x") else None
    except Exception:  # noqa: BLE001 - optional: the finder estimates the scale
        return None
