"""The image record every stage of the library takes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import PtolemyInputError


@dataclass(frozen=True)
class Image:
    """A 2-D grid image ready for the finders.

    Attributes
    ----------
    data : numpy.ndarray
        2-D float32 array indexed ``[row, col]``, raw intensity units (counts).
    pixel_size_nm : float or None
        Pixel size in nanometres when known (header, caller or Leginon), else None.
    source : str
        Where the image came from (a path, ``"<array>"``, a Leginon image name).
    notes : tuple of str
        One-line remarks made while reading (e.g. NaN pixels replaced); the
        CLI prints them on stderr.
    """

    data: np.ndarray
    pixel_size_nm: float | None = None
    source: str = "<array>"
    notes: tuple[str, ...] = field(default=())

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.data.shape[0]), int(self.data.shape[1]))


def as_image(
    array: np.ndarray | Image,
    pixel_size_nm: float | None = None,
    source: str = "<array>",
) -> Image:
    """Validate an in-memory array (or pass an :class:`Image` through).

    Parameters
    ----------
    array : array_like or Image
        2-D array of intensities; a 3-D array with one frame is squeezed.
    pixel_size_nm : float, optional
        Overrides the pixel size of an :class:`Image`, or sets it for an array.
    source : str
        Description used in messages.

    Returns
    -------
    Image
        float32 data; non-finite pixels replaced by the median of the finite
        ones (noted in ``notes``).

    Raises
    ------
    PtolemyInputError
        Not 2-D, empty, or no finite pixel at all.
    """
    if isinstance(array, Image):
        if pixel_size_nm is None:
            return array
        return Image(array.data, _plausible_pixel_size(pixel_size_nm), array.source, array.notes)
    data = np.asarray(array)
    if data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    if data.ndim == 3 and data.shape[-1] in (3, 4) and data.dtype == np.uint8:
        data = data[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    if data.ndim != 2:
        raise PtolemyInputError(f"{source}: expected a 2-D image, got an array of shape {data.shape}")
    if data.size == 0 or min(data.shape) < 1:
        raise PtolemyInputError(f"{source}: the image is empty (shape {data.shape})")
    if not (np.issubdtype(data.dtype, np.number) or data.dtype == bool):
        raise PtolemyInputError(f"{source}: pixel type {data.dtype} is not numeric")
    data = np.asarray(data, dtype=np.float32)
    notes: list[str] = []
    # min/max propagate NaN and expose Inf, so the full-size mask is built only when needed.
    if not (np.isfinite(data.min()) and np.isfinite(data.max())):
        finite = np.isfinite(data)
        n_bad = int(data.size - np.count_nonzero(finite))
        if n_bad == data.size:
            raise PtolemyInputError(f"{source}: no finite pixel in the image (all NaN/Inf)")
        fill = float(np.median(data[finite]))
        data = np.where(finite, data, np.float32(fill))
        notes.append(f"{source}: {n_bad} NaN/Inf pixel(s) replaced by the median {fill:.6g}")
    else:
        data = np.ascontiguousarray(data)
    return Image(data, _plausible_pixel_size(pixel_size_nm), source, tuple(notes))


def _plausible_pixel_size(pixel_size_nm: float | None) -> float | None:
    """Return the pixel size if usable, else None (0 and 1 Å mean 'not set')."""
    if pixel_size_nm is None:
        return None
    try:
        value = float(pixel_size_nm)
    except (TypeError, ValueError):
        raise PtolemyInputError(f"pixel size {pixel_size_nm!r} is not a number") from None
    if not np.isfinite(value) or value <= 0:
        raise PtolemyInputError(f"pixel size must be a positive number of nm, got {pixel_size_nm!r}")
    return value
