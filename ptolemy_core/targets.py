"""The one target type, used end to end.

Internal convention: every coordinate is ``(row, col)`` in pixels of the
full-resolution input image, with the centre of pixel ``[0, 0]`` at (0, 0).
Conversions to Ptolemy's ``[x, y]`` (x = column) live in :mod:`ptolemy_core.formats`,
to Leginon's frames in :mod:`ptolemy_leginon`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

TargetKind = Literal["square", "hole"]


@dataclass
class Target:
    """A square (low magnification) or a hole (medium magnification).

    Attributes
    ----------
    kind : {"square", "hole"}
    center : tuple of float
        ``(row, col)`` in pixels of the input image.
    vertices : tuple of (row, col)
        Four corners: the aligned bounding rectangle of a square, the crop box
        of a hole. Order: around the shape, either direction.
    area : float
        Area in px² (of the rectangle for squares, as Ptolemy; of the crop for holes).
    score : float
        0..1, higher is better.
    brightness : float
        Mean raw intensity inside the segment (square) or hole disk.
    features : dict
        Further JSON-serialisable measurements (``radius``, ``ice_thickness_nm``,
        ``touches_edge`` ...). Keys are snake_case; insertion order is kept in output.
    """

    kind: TargetKind
    center: tuple[float, float]
    vertices: tuple[tuple[float, float], ...]
    area: float
    score: float = 0.0
    brightness: float = float("nan")
    features: dict[str, Any] = field(default_factory=dict)

    @property
    def row(self) -> float:
        return float(self.center[0])

    @property
    def col(self) -> float:
        return float(self.center[1])

    def vertices_array(self) -> np.ndarray:
        """Vertices as a ``(4, 2)`` float array of ``(row, col)``."""
        return np.asarray(self.vertices, dtype=float).reshape(-1, 2)

    def with_score(self, score: float) -> Target:
        return replace(self, score=float(score), features=dict(self.features))


def rank(targets: list[Target]) -> list[Target]:
    """Sort highest score first; ties broken by position so output is stable."""
    return sorted(targets, key=lambda t: (-t.score, t.center[0], t.center[1]))
