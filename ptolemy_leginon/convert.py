"""Every coordinate conversion between our targets and Leginon's frames.

Frames (all in pixels):

full
    ``(row, col)`` on the full-resolution image Leginon acquired -- the frame of
    :class:`ptolemy_core.Target`.
shrunk
    ``(row, col)`` on the image a hole finder works on inside Leginon.
    ``IceTargetFinder.findTargets`` bins images larger than 1440 px by
    ``b = shrink_factor(shape)`` after cropping ``shrink_offset(shape)`` and
    maps a point back with ``row = row_shrunk * b + offset_row`` (same for
    columns). Hole centres handed to Leginon (``StatsHole`` ``center``, the
    score script's JSON) must be in this frame.
panel
    ``(x, y) = (col, row)`` of the shrunk frame: what ``setTargets`` takes.
delta
    ``(delta row, delta col)`` from the centre of the full image: what
    ``newTargetForImage`` / ``newTargetForTile`` store. Leginon computes it from
    the panel as ``drow = y * b + offset_row - rows / 2``.
mosaic
    ``(row, col)`` on Leginon's unscaled atlas mosaic: ``tile.corner_pos + (row, col)``
    of a tile; the displayed mosaic is that times ``mosaic.scale``.

Every function has its inverse here and a round-trip test in
``tests/test_leginon_convert.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ptolemy_core.server.shrink import shrink_factor, shrink_offset

RowCol = tuple[float, float]


def shrink_image(image: np.ndarray) -> tuple[np.ndarray, int, tuple[int, int]]:
    """Bin an image into Leginon's shrunk frame, for every shape.

    Leginon's ``imagefun.shrink`` slices the columns with the *row* offset, so it
    fails whenever the two offsets differ (e.g. 4102 x 4097). This crops each
    axis with its own offset; where Leginon's works the result is the same.

    Parameters
    ----------
    image : 2-D array

    Returns
    -------
    shrunk : float32 array
        Block means of ``b x b`` pixels.
    b : int
        The shrink factor.
    offset : (int, int)
        The shrink offset.
    """
    image = np.asarray(image)
    b = shrink_factor(image.shape)
    off = shrink_offset(image.shape)
    if b == 1:
        return np.asarray(image, dtype=np.float32), 1, (0, 0)
    rows, cols = image.shape[0] // b, image.shape[1] // b
    crop = image[off[0] : off[0] + rows * b, off[1] : off[1] + cols * b]
    # float32 accumulation of b*b <= 64 values keeps ~7 digits: plenty for counts.
    shrunk = crop.reshape(rows, b, cols, b).astype(np.float32).mean(axis=(1, 3), dtype=np.float32)
    return shrunk, b, off


def full_to_shrunk(rc: Sequence[float], shape: Sequence[int]) -> RowCol:
    """Full-resolution ``(row, col)`` -> shrunk-frame ``(row, col)`` (inverse of Leginon's map back)."""
    b = shrink_factor(shape)
    off = shrink_offset(shape)
    return ((float(rc[0]) - off[0]) / b, (float(rc[1]) - off[1]) / b)


def shrunk_to_full(rc: Sequence[float], shape: Sequence[int]) -> RowCol:
    """Shrunk-frame ``(row, col)`` -> full resolution, as Leginon maps panel targets back."""
    b = shrink_factor(shape)
    off = shrink_offset(shape)
    return (float(rc[0]) * b + off[0], float(rc[1]) * b + off[1])


def rc_to_xy(rc: Sequence[float]) -> tuple[float, float]:
    """``(row, col)`` -> ``(x, y) = (col, row)``."""
    return (float(rc[1]), float(rc[0]))


def xy_to_rc(xy: Sequence[float]) -> RowCol:
    """``(x, y)`` -> ``(row, col)``."""
    return (float(xy[1]), float(xy[0]))


def full_to_delta(rc: Sequence[float], shape: Sequence[int]) -> RowCol:
    """Full-resolution ``(row, col)`` -> Leginon ``(delta row, delta col)`` from the image centre."""
    return (float(rc[0]) - shape[0] / 2.0, float(rc[1]) - shape[1] / 2.0)


def delta_to_full(delta: Sequence[float], shape: Sequence[int]) -> RowCol:
    """Leginon ``(delta row, delta col)`` -> full-resolution ``(row, col)``."""
    return (float(delta[0]) + shape[0] / 2.0, float(delta[1]) + shape[1] / 2.0)


def panel_to_delta(xy: Sequence[float], shape: Sequence[int]) -> RowCol:
    """Panel ``(x, y)`` on the shrunk image -> ``(delta row, delta col)``: ``TargetFinder.publishTargets``."""
    b = shrink_factor(shape)
    off = shrink_offset(shape)
    return (float(xy[1]) * b + off[0] - shape[0] / 2.0, float(xy[0]) * b + off[1] - shape[1] / 2.0)


def delta_to_panel(delta: Sequence[float], shape: Sequence[int]) -> tuple[float, float]:
    """Inverse of :func:`panel_to_delta`."""
    b = shrink_factor(shape)
    off = shrink_offset(shape)
    row = (float(delta[0]) + shape[0] / 2.0 - off[0]) / b
    col = (float(delta[1]) + shape[1] / 2.0 - off[1]) / b
    return (col, row)


def full_to_panel(rc: Sequence[float], shape: Sequence[int]) -> tuple[float, float]:
    """Full-resolution ``(row, col)`` -> panel ``(x, y)`` on the shrunk image."""
    return rc_to_xy(full_to_shrunk(rc, shape))


def lattice_matrix_for_leginon(basis: Any, shape: Sequence[int]) -> np.ndarray | None:
    """Our lattice basis -> the ``lattice_matrix`` Leginon's hole finder back end keeps.

    Parameters
    ----------
    basis : (2, 2) array_like or None
        Rows are the two lattice vectors ``(row, col)`` in full-resolution pixels.
    shape : (rows, cols)
        Full image shape (sets the shrink factor).

    Returns
    -------
    numpy.ndarray or None
        ``M`` with the lattice vectors as **columns**, in shrunk pixels, so that
        ``M @ (i, j)`` is the ``(row, col)`` displacement of lattice step
        ``(i, j)``: that is how ``IceTargetFinder.centerCarbon`` uses it
        (``lattice_matrix.dot((+-0.5, +-0.5))``) to put the 'Center' focus target
        in the carbon between holes, and it stays right for oblique and
        hexagonal lattices. For a square lattice this equals Leginon's own
        (symmetric) matrix.
    """
    if basis is None:
        return None
    m = np.asarray(basis, dtype=float).reshape(2, 2)
    if not np.all(np.isfinite(m)):
        return None
    return (m / shrink_factor(shape)).T.copy()


# ----------------------------------------------------------------- atlas mosaic
@dataclass(frozen=True)
class TilePlacement:
    """Where one atlas tile sits on Leginon's unscaled mosaic.

    Attributes
    ----------
    key : hashable
        The tile's id (Leginon: the tile ``AcquisitionImageData`` dbid).
    corner : (row, col)
        ``tile.corner_pos``: mosaic position of the tile's pixel (0, 0).
    shape : (rows, cols)
        Tile image shape.
    """

    key: Any
    corner: tuple[float, float]
    shape: tuple[int, int]

    @property
    def center_pos(self) -> tuple[float, float]:
        """``EMMosaic``'s tile ``center_pos`` (corner + integer half shape), used for the nearest tile."""
        return (self.corner[0] + self.shape[0] // 2, self.corner[1] + self.shape[1] // 2)


def tile_to_mosaic(rc: Sequence[float], tile: TilePlacement) -> RowCol:
    """Tile ``(row, col)`` -> unscaled mosaic ``(row, col)`` (``EMMosaic.tile2mosaic``)."""
    return (tile.corner[0] + float(rc[0]), tile.corner[1] + float(rc[1]))


def nearest_tile(rc: Sequence[float], tiles: Sequence[TilePlacement]) -> TilePlacement:
    """The tile whose centre is nearest a mosaic position (``EMMosaic.getNearestTile``; first wins ties)."""
    if not tiles:
        raise ValueError("no tiles")
    centers = np.array([t.center_pos for t in tiles], dtype=float)
    d = np.hypot(centers[:, 0] - float(rc[0]), centers[:, 1] - float(rc[1]))
    return tiles[int(np.argmin(d))]


def mosaic_to_tile(rc: Sequence[float], tiles: Sequence[TilePlacement]) -> tuple[TilePlacement, RowCol]:
    """Unscaled mosaic ``(row, col)`` -> (nearest tile, ``(row, col)`` on it) (``EMMosaic.mosaic2tile``)."""
    tile = nearest_tile(rc, tiles)
    return tile, (float(rc[0]) - tile.corner[0], float(rc[1]) - tile.corner[1])


def tile_delta(rc_on_tile: Sequence[float], tile: TilePlacement) -> RowCol:
    """Tile ``(row, col)`` -> ``(delta row, delta col)`` for ``newTargetForTile``."""
    return full_to_delta(rc_on_tile, tile.shape)


def mosaic_to_display(rc: Sequence[float], scale: float) -> tuple[float, float]:
    """Unscaled mosaic ``(row, col)`` -> displayed ``(x, y)`` (no rounding, unlike ``EMMosaic.scaled``)."""
    return (float(rc[1]) * scale, float(rc[0]) * scale)


def display_to_mosaic(xy: Sequence[float], scale: float) -> RowCol:
    """Displayed mosaic ``(x, y)`` -> unscaled mosaic ``(row, col)`` (``EMMosaic.unscaled``)."""
    return (float(xy[1]) / scale, float(xy[0]) / scale)
