"""Which finder an image needs, and running it (shared by batch, review and report).

``"lowmag"`` = atlas → :func:`ptolemy_core.find_squares`;
``"medmag"`` = square image → :func:`ptolemy_core.find_holes`.
"""

from __future__ import annotations

import os
import re
from typing import Any

from ..errors import PtolemyInputError, PtolemyUnavailableError
from ..image import Image
from ..targets import Target

KINDS = ("lowmag", "medmag")
#: Target kind each finder produces.
TARGET_KIND = {"lowmag": "square", "medmag": "hole"}

# File-name hints: Leginon preset names (gr = grid atlas, sq = square, hl = hole),
# EPU (Atlas, GridSquare) and our own simulator/demo names.
_LOWMAG_NAME = re.compile(r"(atlas|lowmag|low_mag|mosaic|montage)")
_GRID_NAME = re.compile(r"((^|[^a-z])gr(id)?([^a-z]|$)|\d+gr([^a-z]|$))")
_MEDMAG_NAME = re.compile(r"(square|medmag|med_mag|hole|(^|[^a-z])(sq|hl)([^a-z]|$)|\d+(sq|hl)([^a-z]|$))")


def check_kind(kind: str) -> str:
    """Validate a finder kind (``lowmag`` / ``medmag``)."""
    if kind not in KINDS:
        raise PtolemyInputError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    return kind


def guess_kind(image: Image, path: str | os.PathLike | None = None) -> tuple[str, str]:
    """Guess whether an image is an atlas (``lowmag``) or a square image (``medmag``).

    Parameters
    ----------
    image : Image
        The image (its pixel size and shape are used).
    path : path-like, optional
        File name (default: ``image.source``); Leginon/EPU/demo naming is recognised.

    Returns
    -------
    kind : str
        ``"lowmag"`` or ``"medmag"``.
    reason : str
        Short explanation, for a note to the user.

    Notes
    -----
    In order: the file name (``atlas``, ``gr``, ``GridSquare``/``sq``/``hl`` ...),
    the pixel size (>= 100 nm/px is an atlas, <= 60 nm/px a square image), the
    shape (a clearly non-square frame such as 1024x1440 is a camera frame of a
    square; square-ish images are taken to be atlases).
    """
    name = os.path.basename(str(path if path is not None else image.source)).lower()
    stem = name.rsplit(".", 1)[0]
    if "gridsquare" in stem:
        return "medmag", f"file name {name!r}"
    if _LOWMAG_NAME.search(stem):
        return "lowmag", f"file name {name!r}"
    if _MEDMAG_NAME.search(stem):
        return "medmag", f"file name {name!r}"
    if _GRID_NAME.search(stem):  # weakest: "grid1_square2" is a square image
        return "lowmag", f"file name {name!r}"
    px = image.pixel_size_nm
    if px is not None and px >= 100:
        return "lowmag", f"pixel size {px:.4g} nm"
    if px is not None and px <= 60:
        return "medmag", f"pixel size {px:.4g} nm"
    h, w = image.shape
    aspect = max(h, w) / max(1, min(h, w))
    if aspect > 1.15:
        return "medmag", f"non-square {h}x{w} frame"
    return "lowmag", f"square {h}x{w} image"


def kind_of_targets(targets: list[Target]) -> str | None:
    """``lowmag`` for squares, ``medmag`` for holes, None when empty or mixed."""
    kinds = {t.kind for t in targets}
    if kinds == {"square"}:
        return "lowmag"
    if kinds == {"hole"}:
        return "medmag"
    return None


def run_finder(image: Image, kind: str, **options: Any):
    """Run the finder for ``kind`` on ``image``.

    Parameters
    ----------
    image : Image
    kind : {"lowmag", "medmag"}
    **options
        Passed to the finder when not None: ``scorer`` (both), ``i0`` and
        ``method`` (holes only). ``pixel_size_nm`` is taken from ``image``.

    Returns
    -------
    SquareResult or HoleResult
        The finder's result (``.targets`` ranked, ``.notes``).

    Raises
    ------
    PtolemyUnavailableError
        The finder's sub-package cannot be imported.
    """
    check_kind(kind)
    opts = {k: v for k, v in options.items() if v is not None}
    try:
        if kind == "lowmag":
            from ..squares import find_squares as finder

            opts.pop("i0", None)
            opts.pop("method", None)
        else:
            from ..holes import find_holes as finder
    except ImportError as exc:  # a partial install / development tree
        raise PtolemyUnavailableError(f"the {kind} finder is not available: {exc}") from None
    return finder(image, **opts)
