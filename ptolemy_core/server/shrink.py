"""Leginon's shrunk frame for medium-mag images (``pyami.imagefun.shrink_factor`` / ``shrink_offset``).

Leginon bins a hole-finder image until its longest side is at most 1440 px and
reads hole targets in that binned frame. Both Leginon-facing shells need it: the
native nodes (``ptolemy_leginon.convert``) and the learning server, which returns
hole centres in this frame. Standard library only (Leginon's own Python imports it).
"""

from __future__ import annotations

from collections.abc import Sequence

#: Leginon bins hole-finder images until the longest side is at most this.
SHRINK_LIMIT = 1440
_SHRINK_FACTORS = (1, 2, 4, 8)


def shrink_factor(shape: Sequence[int]) -> int:
    """Leginon's ``pyami.imagefun.shrink_factor``: smallest of 1, 2, 4, 8 with ``max(shape)//b <= 1440``.

    Parameters
    ----------
    shape : (rows, cols)

    Returns
    -------
    int
        The binning Leginon applies (8 even when the image is still larger).
    """
    longest = max(int(shape[0]), int(shape[1]))
    for b in _SHRINK_FACTORS:
        if longest // b <= SHRINK_LIMIT:
            return b
    return _SHRINK_FACTORS[-1]


def shrink_offset(shape: Sequence[int]) -> tuple[int, int]:
    """Leginon's ``pyami.imagefun.shrink_offset``: rows/cols cropped before binning, halved."""
    b = shrink_factor(shape)
    if b == 1:
        return (0, 0)
    rows, cols = int(shape[0]), int(shape[1])
    return ((rows - b * (rows // b)) // 2, (cols - b * (cols // b)) // 2)
