import numpy as np
import pytest

from ptolemy_core.atomic import write_atomic
from ptolemy_core.errors import PtolemyInputError
from ptolemy_core.image import Image, as_image


def test_as_image_converts_to_float32_and_keeps_values():
    img = as_image(np.arange(12, dtype=np.int16).reshape(3, 4), pixel_size_nm=2.5, source="x")
    assert img.data.dtype == np.float32 and img.shape == (3, 4)
    assert img.data[2, 3] == 11 and img.pixel_size_nm == 2.5 and img.source == "x"


def test_single_frame_stack_is_2d_and_rgb_is_grey():
    assert as_image(np.zeros((1, 5, 6))).shape == (5, 6)
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 1] = 100
    assert as_image(rgb).data[0, 0] == pytest.approx(58.7, rel=1e-4)


def test_nan_replaced_with_note():
    data = np.ones((4, 4), np.float32)
    data[0, 0] = np.nan
    data[1, 1] = np.inf
    img = as_image(data, source="a.mrc")
    assert np.isfinite(img.data).all() and img.data[0, 0] == 1.0
    assert img.notes == ("a.mrc: 2 NaN/Inf pixel(s) replaced by the median 1",)


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((2, 3, 4)), "expected a 2-D image, got an array of shape (2, 3, 4)"),
        (np.zeros((0, 5)), "the image is empty (shape (0, 5))"),
        (np.full((3, 3), np.nan), "no finite pixel in the image (all NaN/Inf)"),
        (np.array([["a"]]), "pixel type <U1 is not numeric"),
    ],
)
def test_bad_arrays_give_one_line_errors(array, message):
    with pytest.raises(PtolemyInputError) as err:
        as_image(array, source="img")
    assert str(err.value) == f"img: {message}"


def test_pixel_size_validation_and_override():
    with pytest.raises(PtolemyInputError, match="pixel size must be a positive number"):
        as_image(np.zeros((2, 2)), pixel_size_nm=-1)
    base = Image(np.zeros((2, 2), np.float32), 1.0, "s")
    assert as_image(base) is base
    assert as_image(base, pixel_size_nm=3.0).pixel_size_nm == 3.0


def test_error_messages_are_one_line():
    assert str(PtolemyInputError("a\nb   c")) == "a b c"


def test_write_atomic_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.json"
    write_atomic(target, "first")
    write_atomic(target, b"second")
    assert target.read_text() == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
