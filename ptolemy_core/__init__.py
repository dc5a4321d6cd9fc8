"""ptolemy_core: find, measure and rank cryo-EM grid squares and holes.

A pure library: numpy arrays in, dataclasses out; no printing, no Leginon.

>>> from ptolemy_core import read_image, find_squares          # doctest: +SKIP
>>> atlas = read_image("atlas.mrc")
>>> result = find_squares(atlas)
>>> best = result.targets[0]          # highest score first
>>> best.center, best.score           # (row, col) pixels, 0..1
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import PtolemyInputError, PtolemyUnavailableError
from .image import Image, as_image
from .targets import Target, rank

__all__ = [
    "__version__",
    "Image",
    "PtolemyInputError",
    "PtolemyUnavailableError",
    "Target",
    "as_image",
    "find_holes",
    "find_squares",
    "rank",
    "read_image",
]


def __getattr__(name: str):
    # Lazy: keep `import ptolemy_core` light (no scipy/skimage/torch at import).
    if name == "read_image":
        from .io import read_image

        return read_image
    if name == "find_squares":
        from .squares import find_squares

        return find_squares
    if name == "find_holes":
        from .holes import find_holes

        return find_holes
    raise AttributeError(f"module 'ptolemy_core' has no attribute {name!r}")
