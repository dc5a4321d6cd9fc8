"""Our hole targets -> what Leginon's hole finders expect. Plain functions, no Leginon.

Leginon's ``IceTargetFinder`` works on a *shrunk* image (binned to at most
1440 px, see :mod:`ptolemy_leginon.convert`) and treats hole centres as
coordinates on it. Our finder works at full resolution; these functions put
the centres, radii, outlines and the lattice into Leginon's frame so that the
targets Leginon publishes land on our full-resolution positions exactly
(``drow = row_shrunk * b + offset - rows / 2`` is the inverse of what we apply).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ptolemy_core.targets import Target

from .convert import full_to_shrunk, rc_to_xy, shrink_factor, shrink_offset


def _json_safe(value: Any) -> Any:
    """Plain JSON values: numpy -> Python, NaN/Inf -> None, tuples -> lists."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "tolist"):
        return _json_safe(value.tolist())
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return str(value)


def hole_records(
    targets: Sequence[Target],
    shape: Sequence[int],
    *,
    score_key: str = "score",
    threshold: float | None = None,
) -> list[dict[str, Any]]:
    """Info dicts for ``statshole.StatsHole(info, index, [score_key, 'convolved'])``.

    Parameters
    ----------
    targets : sequence of Target
        Holes in full-resolution ``(row, col)``.
    shape : (rows, cols)
        Full image shape.
    score_key : str
        Leginon's ``score key`` setting; the score is stored under it (and under ``score``).
    threshold : float, optional
        Holes scoring below are left out (Leginon's ``score threshold``).

    Returns
    -------
    list of dict
        ``center`` (row, col) in the shrunk frame, the score, ``convolved`` False,
        ``rank`` (1 = best), ``full_center`` (row, col), ``radius`` in shrunk pixels, ``mean``,
        ``ice_thickness_nm``, ``cut``, ``lattice_index`` when known.
    """
    b = shrink_factor(shape)
    out = []
    for rank, t in enumerate(targets, start=1):
        if threshold is not None and not (t.score >= threshold):
            continue
        f = t.features
        rec: dict[str, Any] = {
            "center": full_to_shrunk(t.center, shape),
            "score": float(t.score),
            score_key: float(t.score),
            "convolved": False,
            "rank": rank,  # 1 = best of this image (targets arrive ranked), shown in the GUI
            "full_center": (float(t.center[0]), float(t.center[1])),
            "radius": float(f["radius"]) / b if f.get("radius") is not None else None,
            "mean": f.get("mean", t.brightness),
            "ice_thickness_nm": f.get("ice_thickness_nm"),
            "cut": bool(f.get("cut", False)),
        }
        if f.get("lattice_index") is not None:
            rec["lattice_index"] = list(f["lattice_index"])
        out.append(rec)
    return out


def stats_radius(targets: Sequence[Target], shape: Sequence[int], fraction: float = 0.7) -> float | None:
    """A hole-statistics radius in shrunk pixels: ``fraction`` x the median hole radius.

    Leginon measures ``hole_mean`` / ``hole_std`` in a circle of ``lattice hole
    radius`` shrunk pixels; a circle inside the hole keeps the rim out of the
    ice estimate. None when no radius is known.
    """
    radii = [float(t.features["radius"]) for t in targets if t.features.get("radius")]
    if not radii:
        return None
    return max(1.0, fraction * float(np.median(radii)) / shrink_factor(shape))


def leginon_json_records(
    targets: Sequence[Target], shape: Sequence[int], *, score_key: str = "score"
) -> list[dict[str, Any]]:
    """Ptolemy-style records whose coordinates are in Leginon's shrunk frame.

    ``center`` / ``vertices`` are ``[x, y]`` on the shrunk image (what
    ``ScoreTargetFinder`` reads them as), ``area`` in shrunk px². The
    full-resolution centre is kept as ``full_center`` and the frame is stated in
    ``frame`` / ``shrink_factor`` / ``shrink_offset`` so nothing is ambiguous.
    """
    b = shrink_factor(shape)
    off = shrink_offset(shape)
    out = []
    for t in targets:
        rec: dict[str, Any] = {
            "center": list(rc_to_xy(full_to_shrunk(t.center, shape))),
            "vertices": [list(rc_to_xy(full_to_shrunk(v, shape))) for v in t.vertices],
            "area": float(t.area) / (b * b),
            "score": float(t.score),
        }
        if score_key != "score":
            rec[score_key] = float(t.score)
        rec["brightness"] = float(t.brightness)
        rec["kind"] = "hole"
        rec["frame"] = "leginon-shrunk"
        rec["shrink_factor"] = b
        rec["shrink_offset"] = [off[0], off[1]]
        rec["full_center"] = list(rc_to_xy(t.center))
        for key, value in t.features.items():
            if key not in rec:
                rec[key] = value
        out.append(_json_safe(rec))
    return out


def leginon_json_line(targets: Sequence[Target], shape: Sequence[int], *, score_key: str = "score") -> str:
    """One line of JSON (Leginon reads only the first line)."""
    return json.dumps(
        leginon_json_records(targets, shape, score_key=score_key), separators=(", ", ": "), allow_nan=False
    )
