"""Hole finder for medium-magnification square images (lattice-aware).

>>> from ptolemy_core.holes import find_holes          # doctest: +SKIP
>>> result = find_holes(image)                          # Image or 2-D array
>>> result.lattice.basis, result.targets[0].center      # (row, col) px
"""

from .finder import HoleResult, find_holes
from .lattice import Lattice

__all__ = ["HoleResult", "Lattice", "find_holes"]
