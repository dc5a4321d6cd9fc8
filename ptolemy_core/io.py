"""Read grid images from disk: MRC, TIFF, PNG and JPEG.

One entry point, :func:`read_image`, returns an :class:`~ptolemy_core.image.Image`
(float32 2-D data, pixel size in nm or None, source path, notes). Every problem a
user can fix is reported as :class:`~ptolemy_core.errors.PtolemyInputError` with
a one-line, ASCII-only message that starts with the path; nothing else escapes.

Design choices
--------------
- The format is decided by the file's first bytes, never by its suffix: a PNG
  renamed ``.mrc`` is read as the PNG it is. A file without a TIFF/PNG/JPEG
  signature is tried as MRC; it is accepted when its header carries the
  ``MAP`` id of MRC2000/MRC2014, or (older files) when mode, sizes and file
  length agree exactly. Anything else is "not a recognised image".
- MRC headers are parsed by :mod:`mrcfile` (permissive mode: it turns problems
  into warnings, and this module then checks what matters itself so that the
  message names the real problem). The chosen frame's data block is then read
  in chunks straight into the float32 result, which is the only full-size
  array (peak ~300 MB for an 8192^2 int16 file; see benchmarks/bench_memory.py).
- TIFF is :mod:`tifffile`; PNG, JPEG and TIFF compressions tifffile cannot
  decode without ``imagecodecs`` (LZW, PackBits, JPEG) go through Pillow.
- Colour images become grey by ITU-R 601 luma (0.299 R + 0.587 G + 0.114 B);
  alpha is ignored.
- Only MRC headers give a pixel size. TIFF resolution tags are ignored: most
  writers store a meaningless default (72 dpi).
"""

from __future__ import annotations

import logging
import math
import os
import stat
import warnings

import numpy as np

from .errors import PtolemyInputError
from .image import Image, as_image

__all__ = ["read_image", "PLAUSIBLE_PIXEL_SIZE_NM"]

#: Header pixel sizes outside this range (nm) are treated as unknown: they are
#: either unset fields or garbage (cryo-EM spans ~0.03 nm to a few um per pixel).
PLAUSIBLE_PIXEL_SIZE_NM = (0.01, 50_000.0)

# MRC modes that hold a real-valued image, and what the others are (for messages).
_MRC_MODES = {0: "int8", 1: "int16", 2: "float32", 6: "uint16", 12: "float16"}
_MRC_OTHER_MODES = {3: "complex int16", 4: "complex float32", 101: "4-bit packed"}
_MRC_HEADER_BYTES = 1024

# Third-party decoders raise all kinds of exceptions on malformed bytes (ValueError,
# zlib.error, struct.error, KeyError, ImportError for a missing codec ...); every
# one of them means "this file is damaged". MemoryError is left to the caller.
_PARSE_ERRORS = (Exception,)

_LUMA = (np.float32(0.299), np.float32(0.587), np.float32(0.114))


def read_image(
    path: str | os.PathLike,
    *,
    frame: int | None = None,
    pixel_size_nm: float | None = None,
) -> Image:
    """Read a grid image (MRC, TIFF, PNG or JPEG) as a float32 2-D :class:`Image`.

    Parameters
    ----------
    path : str or path-like
        The image file. Its format is detected from its first bytes, not its
        suffix (a PNG named ``x.mrc`` is read as PNG).
    frame : int, optional
        Frame (0-based) of a multi-frame file (MRC stack or volume, multi-page
        TIFF, animated PNG). Required when the file has more than one frame.
    pixel_size_nm : float, optional
        Pixel size in nm; overrides the file header.

    Returns
    -------
    Image
        ``data`` float32 ``[row, col]``; ``pixel_size_nm`` from the argument, else
        from an MRC header when plausible (0 and 1 A mean "not set" and give
        None), else None; ``source`` the path; ``notes`` one-line remarks such
        as NaN/Inf pixels replaced by the median.

    Raises
    ------
    PtolemyInputError
        Missing or unreadable path, a directory or other non-regular file,
        empty file, truncated data, not an image, corrupt header, unsupported
        MRC mode, several frames without ``frame``, ``frame`` out of range,
        or no finite pixel.

    Notes
    -----
    MRC mode 0 is signed int8 (MRC2014), except in files stamped by IMOD
    without its "signed bytes" flag, which IMOD defines as unsigned.
    """
    name = os.fspath(path)
    size = _check_regular_file(name)
    try:
        with open(name, "rb") as fh:
            head = fh.read(_MRC_HEADER_BYTES)
    except OSError as exc:
        raise _os_error(name, exc) from None

    notes: list[str] = []
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        data = _read_pillow(name, "PNG", frame)
    elif head.startswith(b"\xff\xd8\xff"):
        data = _read_pillow(name, "JPEG", frame, single_frame=True)
    elif head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        data = _read_tiff(name, frame)
    else:
        data, header_nm = _read_mrc(name, size, head, frame, notes)
        if pixel_size_nm is None:
            pixel_size_nm = header_nm
    image = as_image(data, pixel_size_nm=pixel_size_nm, source=name)
    if notes:
        image = Image(image.data, image.pixel_size_nm, image.source, tuple(notes) + image.notes)
    return image


# --------------------------------------------------------------------------- file checks


def _check_regular_file(name: str) -> int:
    """Return the size of a regular, non-empty file, or raise a one-line error.

    ``os.stat`` first, so that a FIFO, a socket or ``/dev/zero`` is refused
    before anything opens it (opening a FIFO blocks; /dev/zero never ends).
    """
    try:
        st = os.stat(name)
    except (FileNotFoundError, NotADirectoryError):
        raise PtolemyInputError(f"{name}: no such file") from None
    except OSError as exc:
        raise _os_error(name, exc) from None
    if stat.S_ISDIR(st.st_mode):
        raise PtolemyInputError(f"{name}: is a directory, not an image file")
    if not stat.S_ISREG(st.st_mode):
        raise PtolemyInputError(f"{name}: not a regular file (device, FIFO or socket)")
    if st.st_size == 0:
        raise PtolemyInputError(f"{name}: empty file (0 bytes)")
    return int(st.st_size)


def _os_error(name: str, exc: OSError) -> PtolemyInputError:
    if isinstance(exc, PermissionError):
        return PtolemyInputError(f"{name}: permission denied")
    if isinstance(exc, FileNotFoundError):
        return PtolemyInputError(f"{name}: no such file")
    return PtolemyInputError(f"{name}: cannot read ({exc.strerror or exc})")


def _not_an_image(name: str) -> PtolemyInputError:
    return PtolemyInputError(f"{name}: not a recognised image (expected MRC, TIFF, PNG or JPEG)")


def _corrupt(name: str, kind: str, exc: BaseException) -> PtolemyInputError:
    detail = " ".join(str(exc).split()) or type(exc).__name__
    return PtolemyInputError(f"{name}: truncated or corrupt {kind} file ({detail})")


def _frames(n: int) -> str:
    return f"{n} frame" if n == 1 else f"{n} frames"


def _pick_frame(name: str, n: int, frame: int | None) -> int:
    """Which frame to use; a multi-frame file needs an explicit, in-range ``frame``."""
    if n < 1:
        raise PtolemyInputError(f"{name}: no image in the file (0 frames)")
    if frame is None:
        if n == 1:
            return 0
        raise PtolemyInputError(f"{name}: {n} frames in the file; choose one with --frame K (0..{n - 1})")
    if isinstance(frame, bool) or not isinstance(frame, int | np.integer):
        raise PtolemyInputError(f"{name}: frame must be an integer, got {frame!r}")
    if not 0 <= frame < n:
        raise PtolemyInputError(
            f"{name}: frame {frame} is out of range; the file has {_frames(n)} (0..{n - 1})")
    return int(frame)


# --------------------------------------------------------------------------- MRC


def _read_mrc(name: str, size: int, head: bytes, frame: int | None, notes: list[str]):
    """Read one frame of an MRC file as float32; returns ``(data, pixel_size_nm|None)``."""
    import mrcfile

    if size < _MRC_HEADER_BYTES:
        if head[208:212] == b"MAP ":
            raise PtolemyInputError(
                f"{name}: truncated MRC file: {size} bytes, shorter than the {_MRC_HEADER_BYTES}-byte header")
        raise _not_an_image(name)
    # Permissive mode reports a missing map id, odd machine stamp or short data
    # as warnings; the checks below decide (with a message naming the problem).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with mrcfile.open(name, mode="r", permissive=True, header_only=True) as mrc:
                header = mrc.header.copy()
        except MemoryError:
            raise
        except _PARSE_ERRORS:
            if head[208:212] == b"MAP ":
                raise PtolemyInputError(f"{name}: corrupt MRC header (mrcfile cannot parse it)") from None
            raise _not_an_image(name) from None

    mode, nx, ny, nz = (int(header.mode), int(header.nx), int(header.ny), int(header.nz))
    nsymbt = int(header.nsymbt)
    has_id = bytes(header.map) == b"MAP "
    itemsize = np.dtype(_MRC_MODES[mode]).itemsize if mode in _MRC_MODES else 0
    expected = nx * ny * nz * itemsize
    available = size - _MRC_HEADER_BYTES - nsymbt
    # Without the map id only an exactly consistent header makes it an (old) MRC.
    if not has_id and not (itemsize and min(nx, ny, nz) > 0 and nsymbt >= 0 and expected == available):
        raise _not_an_image(name)
    if min(nx, ny, nz) <= 0:
        raise PtolemyInputError(f"{name}: corrupt MRC header: image size {nx}x{ny}x{nz} is not positive")
    if mode not in _MRC_MODES:
        what = _MRC_OTHER_MODES.get(mode, "unknown")
        raise PtolemyInputError(
            f"{name}: unsupported MRC mode {mode} ({what}); readable modes are "
            "0 int8, 1 int16, 2 float32, 6 uint16, 12 float16")
    if nsymbt < 0:
        raise PtolemyInputError(f"{name}: corrupt MRC header: negative extended header size {nsymbt}")
    described = f"{nx}x{ny}x{nz} {_MRC_MODES[mode]} pixels ({expected} bytes)"
    if available < expected:
        raise PtolemyInputError(
            f"{name}: truncated MRC file: the header describes {described} "
            f"but only {max(available, 0)} bytes of data follow")
    if available > expected:
        # Like mrcfile (even in strict mode): read what the header describes, but say so.
        notes.append(f"{name}: {available - expected} bytes after the {described} "
                     "ignored; the header sizes may be wrong")

    dtype = mrcfile.utils.data_dtype_from_header(header)  # with the file's byte order
    if mode == 0 and _imod_unsigned_bytes(head):
        dtype = np.dtype(np.uint8)
    k = _pick_frame(name, nz, frame)
    offset = _MRC_HEADER_BYTES + nsymbt + k * nx * ny * itemsize
    try:
        out = _read_rows(name, offset, dtype, ny, nx)
    except OSError as exc:
        raise _os_error(name, exc) from None
    return out, _mrc_pixel_size(name, header, notes)


def _read_rows(name: str, offset: int, dtype: np.dtype, ny: int, nx: int) -> np.ndarray:
    """Read a ``ny`` x ``nx`` block at ``offset`` into float32, a few MB at a time.

    mrcfile has parsed and checked the header (sizes, mode, byte order); this
    only moves the bytes. Plain reads into a small buffer keep the peak at the
    float32 result plus ~8 MB, whereas a memory map (or ``mrcfile.open``) also
    holds the whole raw block resident while converting (+128 MB for an
    8192^2 int16 frame, +256 MB for float32).
    """
    out = np.empty((ny, nx), dtype=np.float32)
    row_bytes = nx * dtype.itemsize
    rows = max(1, (8 << 20) // row_bytes)
    buffer = np.empty(rows * row_bytes, dtype=np.uint8)
    with open(name, "rb") as fh:
        fh.seek(offset)
        for r0 in range(0, ny, rows):
            r1 = min(ny, r0 + rows)
            chunk = buffer[: (r1 - r0) * row_bytes]
            if fh.readinto(chunk) != chunk.size:  # the file shrank after the size check
                raise PtolemyInputError(f"{name}: truncated MRC file: the data end early")
            out[r0:r1] = chunk.view(dtype).reshape(r1 - r0, nx)
    return out


def _imod_unsigned_bytes(head: bytes) -> bool:
    """IMOD marks files with "IMOD" at byte 152; bit 0 of its flags = signed bytes."""
    stamp = head[152:156]
    if stamp not in (b"IMOD", b"DOMI"):  # little- / big-endian int 1146047817
        return False
    flags = int.from_bytes(head[156:160], "little" if stamp == b"IMOD" else "big", signed=True)
    return not flags & 1


def _mrc_pixel_size(name: str, header, notes: list[str]) -> float | None:
    """Pixel size in nm from cella / mx (A), or None when unset or implausible."""
    sizes_a = []
    for cell, m in ((header.cella.x, header.mx), (header.cella.y, header.my)):
        m = int(m)
        sizes_a.append(float(cell) / m if m > 0 else 0.0)
    size_a = sizes_a[0]
    # 0 A and 1 A are what writers leave when they do not know the pixel size.
    if not math.isfinite(size_a) or size_a == 0.0 or abs(size_a - 1.0) < 1e-6:
        return None
    nm = size_a / 10.0
    lo, hi = PLAUSIBLE_PIXEL_SIZE_NM
    if not lo <= nm <= hi:
        notes.append(f"{name}: header pixel size {size_a:g} A is implausible; ignored")
        return None
    if sizes_a[1] > 0 and abs(sizes_a[1] - size_a) > 0.01 * size_a:
        notes.append(f"{name}: header pixel size differs in x ({size_a:g} A) "
                     f"and y ({sizes_a[1]:g} A); using x")
    return nm


# --------------------------------------------------------------------------- TIFF / PNG / JPEG


def _quiet_logger(name: str) -> None:
    logger = logging.getLogger(name)
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())


def _luma(rgb: np.ndarray) -> np.ndarray:
    """Grey from the first three channels (last axis), float32 throughout."""
    grey = rgb[..., 0].astype(np.float32)
    grey *= _LUMA[0]
    grey += _LUMA[1] * rgb[..., 1]
    grey += _LUMA[2] * rgb[..., 2]
    return grey


def _read_tiff(name: str, frame: int | None) -> np.ndarray:
    import tifffile

    # tifffile logs damaged-file remarks through `logging`; without a handler
    # Python prints them on stderr, which would break the one-line error contract.
    # (A NullHandler is what a library is expected to install for its logger.)
    _quiet_logger("tifffile")

    try:
        with tifffile.TiffFile(name) as tif:
            pages = tif.pages
            k = _pick_frame(name, len(pages), frame)
            page = pages[k]
            array = page.asarray()
            samples = int(getattr(page, "samplesperpixel", 1))
            separate = int(getattr(page, "planarconfig", 1)) == 2
            rgb = int(getattr(page, "photometric", 1)) in (2, 6)  # RGB, YCbCr (decoded to RGB)
    except (PtolemyInputError, MemoryError):
        raise
    except _PARSE_ERRORS as exc:
        if "imagecodecs" in str(exc):
            # A compression tifffile needs imagecodecs for (LZW, PackBits, JPEG):
            # Pillow decodes these itself.
            return _read_pillow(name, "TIFF", frame)
        raise _corrupt(name, "TIFF", exc) from None
    if samples > 1 and array.ndim == 3:
        if separate:
            array = np.moveaxis(array, 0, -1)
        array = _luma(array) if rgb and samples >= 3 else array[..., 0]
    if array.ndim != 2:
        raise PtolemyInputError(f"{name}: unsupported TIFF page layout (shape {array.shape})")
    return array


def _read_pillow(name: str, kind: str, frame: int | None, *, single_frame: bool = False) -> np.ndarray:
    """PNG / JPEG (and TIFFs tifffile cannot decode) through Pillow."""
    from PIL import Image as PILImage

    try:
        # Pillow warns (on stderr) about images over ~89 Mpx; the CLI's stderr
        # is reserved for one-line messages, and the size is the user's choice.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            with PILImage.open(name) as im:
                # JPEG "frames" (MPO) are previews of the same picture, not data.
                n = 1 if single_frame else int(getattr(im, "n_frames", 1))
                k = _pick_frame(name, n, frame)
                if k:
                    im.seek(k)
                im.load()
                mode = im.mode
                if mode in ("1", "L", "I", "F") or mode.startswith("I;16"):
                    return np.asarray(im)
                if mode in ("LA", "La"):
                    return np.asarray(im)[..., 0]
                if mode not in ("RGB", "RGBA"):
                    im = im.convert("RGB")  # palette, CMYK, YCbCr, ...
                return _luma(np.asarray(im))
    except (PtolemyInputError, MemoryError):
        raise
    except PILImage.DecompressionBombError:
        raise PtolemyInputError(
            f"{name}: {kind} image too large for Pillow's safety limit of "
            f"{2 * PILImage.MAX_IMAGE_PIXELS} pixels; convert it to MRC or TIFF") from None
    except _PARSE_ERRORS as exc:
        raise _corrupt(name, kind, exc) from None
