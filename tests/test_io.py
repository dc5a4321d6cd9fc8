"""read_image: every format, mode and byte order, and the exact message for every bad input."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage

import ptolemy_core
from ptolemy_core import io as ptio
from ptolemy_core.errors import PtolemyInputError
from ptolemy_core.io import read_image

RNG = np.random.default_rng(3)


def ramp(shape=(24, 40), lo=-100, hi=3000, dtype=np.int16) -> np.ndarray:
    """Distinct, reproducible values that fit ``dtype``."""
    values = RNG.integers(lo, hi, size=shape)
    return values.astype(dtype)


def write_mrc(path: Path, data: np.ndarray, voxel_size_a: float | None = None) -> Path:
    with warnings.catch_warnings(), mrcfile.new(path, overwrite=True) as mrc:
        warnings.simplefilter("ignore")  # mrcfile warns about NaN data, written on purpose
        mrc.set_data(data)
        if voxel_size_a is not None:
            mrc.voxel_size = voxel_size_a
    return path


def swap_to_big_endian(src: Path, dst: Path) -> Path:
    """Rewrite a little-endian MRC as big-endian (header fields, machine stamp, data)."""
    with mrcfile.open(src, permissive=True) as mrc:
        header = mrc.header.copy()
        ext = bytes(mrc.extended_header.tobytes())
        data = np.array(mrc.data)
    raw = bytearray(header.byteswap().tobytes())
    raw[212:216] = bytes([0x11, 0x11, 0, 0])  # big-endian machine stamp
    dst.write_bytes(bytes(raw) + ext + data.astype(data.dtype.newbyteorder(">")).tobytes())
    return dst


def expect_error(path, message: str, **kwargs) -> None:
    with pytest.raises(PtolemyInputError) as info:
        read_image(path, **kwargs)
    assert str(info.value) == message
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- MRC modes and headers


@pytest.mark.parametrize(
    ("dtype", "lo", "hi", "mode"),
    [(np.int8, -128, 128, 0), (np.int16, -2000, 30000, 1), (np.float32, -5, 5, 2),
     (np.uint16, 0, 65536, 6), (np.float16, -60, 60, 12)],
)
def test_mrc_modes_read_exact_values(tmp_path, dtype, lo, hi, mode):
    data = ramp(lo=lo, hi=hi, dtype=dtype)
    if np.issubdtype(dtype, np.floating):
        data = (data + RNG.random(data.shape)).astype(dtype)
    path = write_mrc(tmp_path / "a.mrc", data)
    with mrcfile.open(path) as mrc:
        assert int(mrc.header.mode) == mode
    image = read_image(path)
    assert image.data.dtype == np.float32
    assert image.shape == (24, 40)
    np.testing.assert_array_equal(image.data, data.astype(np.float32))
    assert image.source == str(path)
    assert image.pixel_size_nm is None
    assert image.notes == ()


def test_uint8_data_stored_as_mode_6(tmp_path):
    data = ramp(lo=0, hi=256, dtype=np.uint8)
    path = write_mrc(tmp_path / "u8.mrc", data)
    with mrcfile.open(path) as mrc:
        assert int(mrc.header.mode) == 6
    np.testing.assert_array_equal(read_image(path).data, data.astype(np.float32))


def test_mode0_is_signed_unless_imod_says_unsigned(tmp_path):
    data = np.array([[-128, -1, 0, 127]], dtype=np.int8)
    path = write_mrc(tmp_path / "s8.mrc", data)
    np.testing.assert_array_equal(read_image(path).data, [[-128, -1, 0, 127]])
    # IMOD stamp without the "signed bytes" flag: IMOD defines the bytes as unsigned.
    raw = bytearray(path.read_bytes())
    raw[152:156] = b"IMOD"
    raw[156:160] = (0).to_bytes(4, "little")
    (tmp_path / "imod.mrc").write_bytes(bytes(raw))
    np.testing.assert_array_equal(read_image(tmp_path / "imod.mrc").data, [[128, 255, 0, 127]])
    raw[156:160] = (1).to_bytes(4, "little")
    (tmp_path / "imod_signed.mrc").write_bytes(bytes(raw))
    np.testing.assert_array_equal(read_image(tmp_path / "imod_signed.mrc").data, [[-128, -1, 0, 127]])


@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.float32, np.float16])
def test_big_endian_equals_little_endian(tmp_path, dtype):
    data = ramp(lo=0, hi=2000, dtype=dtype)
    little = write_mrc(tmp_path / "le.mrc", data, voxel_size_a=55.0)
    big = swap_to_big_endian(little, tmp_path / "be.mrc")
    with mrcfile.open(big) as mrc:  # the file really is big-endian and valid
        assert mrc.data.dtype.byteorder == ">"
    a, b = read_image(little), read_image(big)
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_array_equal(b.data, data.astype(np.float32))
    assert a.pixel_size_nm == pytest.approx(5.5) and b.pixel_size_nm == pytest.approx(5.5)


@pytest.mark.parametrize(
    ("voxel_a", "expected_nm", "note"),
    [(None, None, None), (0.0, None, None), (1.0, None, None), (4321.0, 432.1, None),
     (12.5, 1.25, None), (1e9, None, "header pixel size 1e+09 A is implausible; ignored")],
)
def test_mrc_pixel_size(tmp_path, voxel_a, expected_nm, note):
    path = write_mrc(tmp_path / "p.mrc", ramp(), voxel_size_a=voxel_a)
    image = read_image(path)
    if expected_nm is None:
        assert image.pixel_size_nm is None
    else:
        assert image.pixel_size_nm == pytest.approx(expected_nm, rel=1e-6)
    assert image.notes == (() if note is None else (f"{path}: {note}",))


def test_explicit_pixel_size_overrides_header(tmp_path):
    with_header = write_mrc(tmp_path / "h.mrc", ramp(), voxel_size_a=50.0)
    without = write_mrc(tmp_path / "n.mrc", ramp())
    assert read_image(with_header, pixel_size_nm=300.0).pixel_size_nm == 300.0
    assert read_image(without, pixel_size_nm=12.0).pixel_size_nm == 12.0
    with pytest.raises(PtolemyInputError, match="pixel size must be a positive number of nm"):
        read_image(without, pixel_size_nm=-1.0)


def test_mrc_without_map_id_is_read_when_consistent(tmp_path):
    # Pre-2000 MRC files have no "MAP " id; a header that matches the file length is trusted.
    data = ramp()
    raw = bytearray(write_mrc(tmp_path / "a.mrc", data).read_bytes())
    raw[208:212] = b"\0\0\0\0"
    (tmp_path / "old.mrc").write_bytes(bytes(raw))
    np.testing.assert_array_equal(read_image(tmp_path / "old.mrc").data, data.astype(np.float32))


def test_pathlib_and_public_name(tmp_path):
    path = write_mrc(tmp_path / "a.mrc", ramp())
    assert ptolemy_core.read_image is read_image
    np.testing.assert_array_equal(read_image(Path(path)).data, read_image(str(path)).data)


# --------------------------------------------------------------------------- frames


def test_single_frame_3d_is_2d(tmp_path):
    data = ramp(shape=(1, 20, 30))
    path = write_mrc(tmp_path / "one.mrc", data)
    for frame in (None, 0):
        image = read_image(path, frame=frame)
        assert image.shape == (20, 30)
        np.testing.assert_array_equal(image.data, data[0].astype(np.float32))
    expect_error(path, f"{path}: frame 1 is out of range; the file has 1 frame (0..0)", frame=1)


@pytest.mark.parametrize("as_stack", [True, False])
def test_multi_frame_mrc(tmp_path, as_stack):
    data = ramp(shape=(5, 16, 12))
    path = tmp_path / "stack.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(data)
        if as_stack:
            mrc.set_image_stack()
        else:
            mrc.set_volume()
    expect_error(path, f"{path}: 5 frames in the file; choose one with --frame K (0..4)")
    np.testing.assert_array_equal(read_image(path, frame=3).data, data[3].astype(np.float32))
    expect_error(path, f"{path}: frame 5 is out of range; the file has 5 frames (0..4)", frame=5)
    expect_error(path, f"{path}: frame -1 is out of range; the file has 5 frames (0..4)", frame=-1)
    expect_error(path, f"{path}: frame must be an integer, got '2'", frame="2")


def test_multi_page_tiff(tmp_path):
    data = ramp(shape=(3, 16, 12), lo=0, hi=60000, dtype=np.uint16)
    path = tmp_path / "pages.tif"
    tifffile.imwrite(path, data, photometric="minisblack")
    expect_error(path, f"{path}: 3 frames in the file; choose one with --frame K (0..2)")
    np.testing.assert_array_equal(read_image(path, frame=2).data, data[2].astype(np.float32))
    expect_error(path, f"{path}: frame 7 is out of range; the file has 3 frames (0..2)", frame=7)


# --------------------------------------------------------------------------- TIFF, PNG, JPEG


def luma(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.float64)
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.float32])
@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_tiff_grey(tmp_path, dtype, byteorder):
    data = ramp(lo=0, hi=120, dtype=dtype)
    path = tmp_path / "g.tif"
    tifffile.imwrite(path, data, byteorder=byteorder)
    image = read_image(path)
    assert image.data.dtype == np.float32 and image.pixel_size_nm is None
    np.testing.assert_array_equal(image.data, data.astype(np.float32))


def test_tiff_rgb_contig_and_planar(tmp_path):
    rgb = ramp(shape=(10, 14, 3), lo=0, hi=256, dtype=np.uint8)
    tifffile.imwrite(tmp_path / "c.tif", rgb, photometric="rgb")
    tifffile.imwrite(tmp_path / "p.tif", np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate")
    for name in ("c.tif", "p.tif"):
        np.testing.assert_allclose(read_image(tmp_path / name).data, luma(rgb), atol=1e-3)


def test_tiff_lzw_goes_through_pillow(tmp_path):
    # tifffile needs imagecodecs for LZW; the reader falls back to Pillow.
    data = ramp(lo=0, hi=60000, dtype=np.uint16)
    path = tmp_path / "lzw.tif"
    PILImage.fromarray(data).save(path, compression="tiff_lzw")
    np.testing.assert_array_equal(read_image(path).data, data.astype(np.float32))


def test_png_grey_8_and_16_bit(tmp_path):
    for dtype, hi in ((np.uint8, 256), (np.uint16, 65536)):
        data = ramp(lo=0, hi=hi, dtype=dtype)
        path = tmp_path / f"g{np.dtype(dtype).itemsize}.png"
        PILImage.fromarray(data).save(path)
        np.testing.assert_array_equal(read_image(path).data, data.astype(np.float32))


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_png_colour_to_luma(tmp_path, mode):
    rgb = ramp(shape=(12, 9, len(mode)), lo=0, hi=256, dtype=np.uint8)
    path = tmp_path / "c.png"
    PILImage.fromarray(rgb, mode=mode).save(path)
    image = read_image(path)
    assert image.shape == (12, 9) and image.data.dtype == np.float32
    np.testing.assert_allclose(image.data, luma(rgb), atol=1e-3)  # alpha ignored


def test_jpeg_grey_and_colour(tmp_path):
    grey = np.tile(np.linspace(20, 230, 64), (48, 1)).astype(np.uint8)
    PILImage.fromarray(grey).save(tmp_path / "g.jpg", quality=95)
    image = read_image(tmp_path / "g.jpg")
    assert image.shape == (48, 64)
    assert np.abs(image.data - grey).max() <= 4  # lossy
    rgb = np.stack([grey, grey // 2, 255 - grey], axis=-1)
    PILImage.fromarray(rgb).save(tmp_path / "c.jpg", quality=95)
    assert np.abs(read_image(tmp_path / "c.jpg").data - luma(rgb)).max() <= 6


def test_format_is_detected_from_bytes_not_suffix(tmp_path):
    # Documented choice: a PNG renamed .mrc is read as the PNG it is.
    data = ramp(lo=0, hi=256, dtype=np.uint8)
    PILImage.fromarray(data).save(tmp_path / "x.png")
    os.replace(tmp_path / "x.png", tmp_path / "x.mrc")
    np.testing.assert_array_equal(read_image(tmp_path / "x.mrc").data, data.astype(np.float32))
    tifffile.imwrite(tmp_path / "t.tif", data)
    os.replace(tmp_path / "t.tif", tmp_path / "t.png")
    np.testing.assert_array_equal(read_image(tmp_path / "t.png").data, data.astype(np.float32))


# --------------------------------------------------------------------------- pixels


def test_nan_and_inf_are_replaced_with_a_note(tmp_path):
    data = np.full((32, 32), 7.0, np.float32)
    data[:16] = 3.0
    data[0, 0], data[1, 1], data[2, 2] = np.nan, np.inf, -np.inf
    path = write_mrc(tmp_path / "nan.mrc", data)
    image = read_image(path)
    assert np.isfinite(image.data).all()
    assert image.data[0, 0] == image.data[1, 1] == image.data[2, 2] == 7.0  # median of the finite
    assert image.notes == (f"{path}: 3 NaN/Inf pixel(s) replaced by the median 7",)


def test_all_nan_is_an_error(tmp_path):
    path = write_mrc(tmp_path / "allnan.mrc", np.full((8, 8), np.nan, np.float32))
    expect_error(path, f"{path}: no finite pixel in the image (all NaN/Inf)")


def test_tiny_and_constant_images_read(tmp_path):
    tiny = ramp(shape=(32, 32))
    np.testing.assert_array_equal(read_image(write_mrc(tmp_path / "t.mrc", tiny)).data, tiny)
    const = np.full((64, 48), 1234, np.int16)
    image = read_image(write_mrc(tmp_path / "c.mrc", const))
    assert image.shape == (64, 48) and np.all(image.data == 1234.0)
    one = read_image(write_mrc(tmp_path / "1.mrc", np.ones((1, 1), np.float32)))
    assert one.shape == (1, 1)


# --------------------------------------------------------------------------- bad input


def test_missing_directory_and_special_files(tmp_path):
    expect_error(tmp_path / "nope.mrc", f"{tmp_path / 'nope.mrc'}: no such file")
    expect_error(tmp_path / "nope" / "a.mrc", f"{tmp_path / 'nope' / 'a.mrc'}: no such file")
    expect_error(tmp_path, f"{tmp_path}: is a directory, not an image file")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opening it would block: must be refused from os.stat alone
    expect_error(fifo, f"{fifo}: not a regular file (device, FIFO or socket)")
    if os.path.exists("/dev/zero"):
        expect_error("/dev/zero", "/dev/zero: not a regular file (device, FIFO or socket)")


def test_empty_file(tmp_path):
    (tmp_path / "e.mrc").write_bytes(b"")
    expect_error(tmp_path / "e.mrc", f"{tmp_path / 'e.mrc'}: empty file (0 bytes)")


def test_unreadable_file(tmp_path, monkeypatch):
    path = write_mrc(tmp_path / "a.mrc", ramp())

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(ptio, "open", denied, raising=False)
    expect_error(path, f"{path}: permission denied")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_chmod(tmp_path):
    path = write_mrc(tmp_path / "a.mrc", ramp())
    path.chmod(0)
    expect_error(path, f"{path}: permission denied")


@pytest.mark.parametrize(
    "content",
    [b"hello, this is not an image\n", bytes(range(256)) * 40, b"\0" * 2048],
    ids=["text", "garbage", "zeros"],
)
def test_not_an_image(tmp_path, content):
    path = tmp_path / "x.mrc"
    path.write_bytes(content)
    expect_error(path, f"{path}: not a recognised image (expected MRC, TIFF, PNG or JPEG)")


def test_truncated_mrc(tmp_path):
    raw = write_mrc(tmp_path / "a.mrc", ramp(shape=(24, 40))).read_bytes()
    (tmp_path / "cut.mrc").write_bytes(raw[:-100])
    expect_error(tmp_path / "cut.mrc", f"{tmp_path / 'cut.mrc'}: truncated MRC file: the header describes "
                 "40x24x1 int16 pixels (1920 bytes) but only 1820 bytes of data follow")
    (tmp_path / "head.mrc").write_bytes(raw[:500])
    expect_error(tmp_path / "head.mrc", f"{tmp_path / 'head.mrc'}: truncated MRC file: 500 bytes, "
                 "shorter than the 1024-byte header")


def _patched(tmp_path, name: str, offset: int, value: int) -> Path:
    raw = bytearray(write_mrc(tmp_path / "ok.mrc", ramp(shape=(24, 40))).read_bytes())
    raw[offset:offset + 4] = int(value).to_bytes(4, "little", signed=True)
    path = tmp_path / name
    path.write_bytes(bytes(raw))
    return path


def test_wrong_header(tmp_path):
    modes = "readable modes are 0 int8, 1 int16, 2 float32, 6 uint16, 12 float16"
    p = _patched(tmp_path, "m99.mrc", 12, 99)
    expect_error(p, f"{p}: unsupported MRC mode 99 (unknown); {modes}")
    p = _patched(tmp_path, "m4.mrc", 12, 4)
    expect_error(p, f"{p}: unsupported MRC mode 4 (complex float32); {modes}")
    p = _patched(tmp_path, "nx.mrc", 0, -40)
    expect_error(p, f"{p}: corrupt MRC header: image size -40x24x1 is not positive")
    p = _patched(tmp_path, "ext.mrc", 92, -8)
    expect_error(p, f"{p}: corrupt MRC header (mrcfile cannot parse it)")  # negative extended header
    p = _patched(tmp_path, "small.mrc", 0, 20)  # header says fewer pixels than the file holds
    image = read_image(p)  # read as described (as mrcfile does), with a note
    assert image.shape == (24, 20)
    assert image.notes == (f"{p}: 960 bytes after the 20x24x1 int16 pixels (960 bytes) ignored; "
                           "the header sizes may be wrong",)
    p = _patched(tmp_path, "big.mrc", 8, 3)  # three sections promised, one present
    expect_error(p, f"{p}: truncated MRC file: the header describes 40x24x3 int16 pixels (5760 bytes) "
                 "but only 1920 bytes of data follow")


@pytest.mark.parametrize("kind", ["PNG", "JPEG", "TIFF"])
def test_truncated_png_jpeg_tiff(tmp_path, kind):
    data = ramp(shape=(64, 64), lo=0, hi=256, dtype=np.uint8)
    path = tmp_path / f"x.{kind.lower()}"
    if kind == "TIFF":
        tifffile.imwrite(path, data, compression="zlib")
    else:
        PILImage.fromarray(data).save(path, format=kind)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(PtolemyInputError) as info:
        read_image(path)
    message = str(info.value)
    # The detail in brackets is the decoder's own words (they vary between versions).
    assert message.startswith(f"{path}: truncated or corrupt {kind} file (") and message.endswith(")")
    assert "\n" not in message


def test_png_over_pillow_limit_is_a_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    PILImage.fromarray(np.zeros((30, 30), np.uint8)).save(path)
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 100)  # 900 px > 2 x limit
    expect_error(path, f"{path}: PNG image too large for Pillow's safety limit of 200 pixels; "
                 "convert it to MRC or TIFF")
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 600)  # between limit and 2 x limit: a warning only
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image(path).shape == (30, 30)


def test_file_shrinking_after_the_size_check(tmp_path, monkeypatch):
    raw = write_mrc(tmp_path / "a.mrc", ramp()).read_bytes()
    path = tmp_path / "shrunk.mrc"
    path.write_bytes(raw[:-10])
    monkeypatch.setattr(ptio, "_check_regular_file", lambda name: len(raw))  # size seen before it shrank
    expect_error(path, f"{path}: truncated MRC file: the data end early")
