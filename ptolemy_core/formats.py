"""Edge conversions between :class:`Target` and Ptolemy's file formats.

Ptolemy (and Leginon's external-script finders) use ``[x, y] = [col, row]``.
This is the only module that swaps axes for files.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

from .errors import PtolemyInputError
from .targets import Target


def _num(value: Any) -> Any:
    """JSON-safe number: Python float/int/bool, NaN/Inf become None."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return [_num(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _num(v) for k, v in value.items()}
    if hasattr(value, "tolist"):
        return _num(value.tolist())
    if isinstance(value, int):
        return value
    value = float(value)
    return value if math.isfinite(value) else None


def target_to_dict(target: Target) -> dict[str, Any]:
    """Ptolemy-compatible record: ``center``, ``vertices``, ``area``, [``brightness``], ``score``, extras."""
    out: dict[str, Any] = {
        "center": [_num(target.center[1]), _num(target.center[0])],
        "vertices": [[_num(c), _num(r)] for r, c in target.vertices],
        "area": _num(target.area),
    }
    if target.kind == "square":
        out["brightness"] = _num(target.brightness)
        out["score"] = _num(target.score)
    else:
        out["score"] = _num(target.score)
        out["brightness"] = _num(target.brightness)
    out["kind"] = target.kind
    for key, value in target.features.items():
        if key not in out:
            out[key] = _num(value)
    return out


def target_from_dict(record: dict[str, Any], kind: str | None = None) -> Target:
    """Inverse of :func:`target_to_dict` (also reads plain Ptolemy output)."""
    try:
        x, y = record["center"]
        vertices = tuple((float(vy), float(vx)) for vx, vy in record.get("vertices", []))
        kind = record.get("kind", kind) or ("square" if "brightness" in record else "hole")
        known = {"center", "vertices", "area", "brightness", "score", "kind"}
        brightness = record.get("brightness")
        return Target(
            kind=kind,
            center=(float(y), float(x)),
            vertices=vertices,
            area=float(record.get("area", float("nan"))),
            score=float(record.get("score", 0.0)),
            brightness=float("nan") if brightness is None else float(brightness),
            features={k: v for k, v in record.items() if k not in known},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise PtolemyInputError(f"not a Ptolemy target record: {exc}") from None


def to_json_line(targets: Iterable[Target]) -> str:
    """One line of JSON: the list as Ptolemy's ``-f json`` prints it."""
    return json.dumps([target_to_dict(t) for t in targets], separators=(", ", ": "), allow_nan=False)


def to_txt(targets: Iterable[Target]) -> str:
    """Ptolemy's ``-f txt``: a header and one ``x<TAB>y`` centre per line."""
    lines = ["x_coord\ty_coord"]
    lines += [f"{t.center[1]:.2f}\t{t.center[0]:.2f}" for t in targets]
    return "\n".join(lines) + "\n"


def from_json(text: str, kind: str | None = None) -> list[Target]:
    """Read targets from Ptolemy/our JSON (a list, first line used)."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    try:
        records = json.loads(line)
    except json.JSONDecodeError as exc:
        raise PtolemyInputError(f"targets file is not JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(records, list):
        raise PtolemyInputError("targets JSON must be a list of records")
    return [target_from_dict(r, kind) for r in records]
