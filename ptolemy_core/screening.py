"""Multi-grid screening policy: which squares and holes to collect.

A cassette is screened unattended: for every grid an atlas is taken, its
squares are ranked, a few squares are imaged at medium magnification and a few
holes in each are exposed. The policy decides:

* **per grid** -- how many squares (``squares_per_grid``), spread over
  ``square_classes`` classes of one square property (``class_key``: size,
  brightness, signal = size x brightness, ice thickness or score), and within
  each class the highest score first;
* **per square** -- how many holes (``holes_per_square``), highest score first.

The rules are deterministic (no random sampling) and never return fewer
targets than asked for while enough candidates pass the thresholds: when a
class has too few members its unused share goes to the other classes. This
fixes the two things Leginon's own grouping gets wrong (fewer squares than
requested with uneven classes, and ``randomize blobs`` shuffling the "top
score" pick). The Leginon nodes (:mod:`ptolemy_leginon`) and ``ptolemy
screen`` use these functions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import PtolemyInputError
from .targets import Target

#: Square properties a policy can spread its picks over.
CLASS_KEYS = ("size", "brightness", "signal", "ice", "score")
#: How the value range is cut into classes: equal numbers of squares, or equal value steps.
GROUP_METHODS = ("target count", "value delta")


@dataclass(frozen=True)
class ScreeningPolicy:
    """Settings of the screening policy (defaults follow Leginon's ``target grouping``).

    Attributes
    ----------
    squares_per_grid : int
        Squares to image per grid (Leginon ``total targets``, default 10).
    square_classes : int
        Classes the squares are spread over (Leginon ``classes``).
    class_key : str
        Property the classes are made of, one of :data:`CLASS_KEYS`.
    group_method : str
        ``"target count"`` (classes of equal size) or ``"value delta"`` (equal
        value steps between ``value_min`` and ``value_max``).
    value_min, value_max : float or None
        Value range for ``"value delta"`` (None: the candidates' range).
    min_square_score : float
        Squares scoring below this are never picked.
    holes_per_square : int
        Holes to expose per square image.
    min_hole_score : float
        Holes scoring below this are never picked.
    """

    squares_per_grid: int = 10
    square_classes: int = 1
    class_key: str = "size"
    group_method: str = "target count"
    value_min: float | None = None
    value_max: float | None = None
    min_square_score: float = 0.0
    holes_per_square: int = 4
    min_hole_score: float = 0.0

    def __post_init__(self) -> None:
        if self.squares_per_grid < 0 or self.holes_per_square < 0:
            raise PtolemyInputError("squares per grid and holes per square must be >= 0")
        if self.square_classes < 1:
            raise PtolemyInputError(f"square classes must be >= 1, got {self.square_classes}")
        if self.class_key not in CLASS_KEYS:
            raise PtolemyInputError(
                f"class key must be one of {', '.join(CLASS_KEYS)}, got {self.class_key!r}"
            )
        if self.group_method not in GROUP_METHODS:
            raise PtolemyInputError(
                f"group method must be one of {', '.join(GROUP_METHODS)}, got {self.group_method!r}"
            )


def class_value(target: Target, key: str) -> float:
    """The value of a square property used for classes and filters.

    Parameters
    ----------
    target : Target
    key : str
        ``size`` (area, px²), ``brightness``, ``signal`` (area x brightness, as
        Leginon defines it), ``ice`` (ice thickness in nm, else the relative
        thickness), ``score``.

    Returns
    -------
    float
        NaN when the property is unknown.
    """
    if key == "size":
        return float(target.area)
    if key == "brightness":
        return float(target.brightness)
    if key == "signal":
        return float(target.area) * float(target.brightness)
    if key == "score":
        return float(target.score)
    if key == "ice":
        for name in ("ice_thickness_nm", "relative_thickness"):
            value = target.features.get(name)
            if value is not None:
                return float(value)
        return float("nan")
    raise PtolemyInputError(f"unknown class key {key!r}")


def group_classes(
    values: Sequence[float],
    n_classes: int,
    method: str = "target count",
    value_range: tuple[float | None, float | None] | None = None,
) -> np.ndarray:
    """Class index (0 = lowest values) of every item.

    Parameters
    ----------
    values : sequence of float
        NaN values go to class 0.
    n_classes : int
    method : {"target count", "value delta"}
        Equal numbers per class (ties broken by position), or equal value steps.
    value_range : (min, max), optional
        For ``"value delta"``; None entries mean the data's min / max.

    Returns
    -------
    numpy.ndarray of int
    """
    v = np.asarray(values, dtype=float)
    n = v.size
    out = np.zeros(n, dtype=int)
    if n == 0 or n_classes <= 1:
        return out
    finite = np.isfinite(v)
    if method == "target count":
        order = np.lexsort((np.arange(n), np.where(finite, v, -np.inf)))
        chunks = np.array_split(order, n_classes)
        for c, idx in enumerate(chunks):
            out[idx] = c
        return out
    if method == "value delta":
        lo, hi = value_range if value_range is not None else (None, None)
        lo = float(np.min(v[finite])) if lo is None and finite.any() else (0.0 if lo is None else float(lo))
        hi = float(np.max(v[finite])) if hi is None and finite.any() else (lo if hi is None else float(hi))
        if hi <= lo:
            return out
        step = (hi - lo) / n_classes
        cls = np.floor((np.where(finite, v, lo) - lo) / step).astype(int)
        return np.clip(cls, 0, n_classes - 1)
    raise PtolemyInputError(f"group method must be one of {', '.join(GROUP_METHODS)}, got {method!r}")


def allocate(total: int, available: Sequence[int]) -> list[int]:
    """Share ``total`` picks between classes: evenly, then the unused share to classes with spare items.

    The extra pick of an uneven split goes to the lowest classes first; the
    result never exceeds ``available`` and sums to ``min(total, sum(available))``.
    """
    k = len(available)
    if k == 0:
        return []
    avail = [max(0, int(a)) for a in available]
    want = [total // k + (1 if c < total % k else 0) for c in range(k)]
    got = [min(w, a) for w, a in zip(want, avail, strict=False)]
    left = min(total, sum(avail)) - sum(got)
    while left > 0:
        progressed = False
        for c in range(k):
            if left and got[c] < avail[c]:
                got[c] += 1
                left -= 1
                progressed = True
        if not progressed:
            break
    return got


@dataclass
class Pick:
    """One selected target with the class it was picked from."""

    index: int
    target: Target
    klass: int


def select(
    targets: Sequence[Target],
    total: int,
    *,
    n_classes: int = 1,
    class_key: str = "size",
    group_method: str = "target count",
    value_range: tuple[float | None, float | None] | None = None,
    min_score: float = 0.0,
    values: Sequence[float] | None = None,
) -> list[Pick]:
    """Pick up to ``total`` targets spread over classes, highest score first in each class.

    Parameters
    ----------
    targets : sequence of Target
        Candidates (already filtered for edge / already targeted).
    total : int
    n_classes, class_key, group_method, value_range
        See :class:`ScreeningPolicy`.
    min_score : float
        Candidates scoring below are dropped first.
    values : sequence of float, optional
        Class values to use instead of ``class_value(target, class_key)``.

    Returns
    -------
    list of Pick
        Ordered by score, highest first (ties: lower class, then input order).
    """
    idx = [i for i, t in enumerate(targets) if np.isfinite(t.score) and t.score >= min_score]
    if total <= 0 or not idx:
        return []
    vals = [float(values[i]) if values is not None else class_value(targets[i], class_key) for i in idx]
    classes = group_classes(vals, n_classes, group_method, value_range)
    members: list[list[int]] = [[] for _ in range(max(1, n_classes))]
    for i, c in zip(idx, classes, strict=False):
        members[int(c)].append(i)
    for m in members:
        m.sort(key=lambda i: (-targets[i].score, i))
    quota = allocate(total, [len(m) for m in members])
    picks = [Pick(i, targets[i], c) for c, m in enumerate(members) for i in m[: quota[c]]]
    picks.sort(key=lambda p: (-p.target.score, p.klass, p.index))
    return picks


def plan_squares(targets: Sequence[Target], policy: ScreeningPolicy) -> list[Pick]:
    """The squares to image on one grid under ``policy``."""
    return select(
        targets,
        policy.squares_per_grid,
        n_classes=policy.square_classes,
        class_key=policy.class_key,
        group_method=policy.group_method,
        value_range=(policy.value_min, policy.value_max),
        min_score=policy.min_square_score,
    )


def plan_holes(targets: Sequence[Target], policy: ScreeningPolicy) -> list[Pick]:
    """The holes to expose in one square image under ``policy`` (highest score first)."""
    return select(targets, policy.holes_per_square, min_score=policy.min_hole_score, class_key="score")


# ----------------------------------------------------------------- the loop
@dataclass
class SquarePlan:
    """One square chosen on a grid and the holes chosen in its image."""

    rank: int
    square: Target
    klass: int
    holes: list[Target] = field(default_factory=list)
    n_holes_found: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class GridPlan:
    """What would be collected on one grid."""

    grid: Any
    n_squares_found: int
    squares: list[SquarePlan] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def run_screening(
    grids: Iterable[Any],
    policy: ScreeningPolicy,
    *,
    atlas_for: Callable[[Any], Any],
    find_squares: Callable[[Any], Sequence[Target]],
    square_image_for: Callable[[Any, Target, int], Any],
    find_holes: Callable[[Any], Sequence[Target]],
) -> list[GridPlan]:
    """Atlas -> squares -> holes for every grid, as Leginon would run it.

    Parameters
    ----------
    grids : iterable
        Grid identifiers (slots of the cassette).
    policy : ScreeningPolicy
    atlas_for : callable
        ``grid -> atlas image``.
    find_squares : callable
        ``atlas -> ranked square targets``.
    square_image_for : callable
        ``(grid, square target, rank) -> medium-mag image of that square``.
    find_holes : callable
        ``square image -> ranked hole targets``.

    Returns
    -------
    list of GridPlan
        One per grid, in order.
    """
    plans = []
    for grid in grids:
        squares = list(find_squares(atlas_for(grid)))
        plan = GridPlan(grid=grid, n_squares_found=len(squares))
        for rank, pick in enumerate(plan_squares(squares, policy), start=1):
            holes = list(find_holes(square_image_for(grid, pick.target, rank)))
            chosen = [p.target for p in plan_holes(holes, policy)]
            plan.squares.append(
                SquarePlan(
                    rank=rank, square=pick.target, klass=pick.klass, holes=chosen, n_holes_found=len(holes)
                )
            )
        plans.append(plan)
    return plans
