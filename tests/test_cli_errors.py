"""Bad input on the command line: exit code 2 and exactly one ``ptolemy CMD: error:`` line.

Two layers are tested:

- the reading layer (``cli.common.load_image_arg`` + the CLI main's error handling),
  through a reading-only stand-in for the ``lowmag``/``medmag`` sub-commands, so it
  runs whatever state the finders are in;
- the real ``ptolemy lowmag`` / ``ptolemy medmag`` / ``ptolemy-lowmag`` /
  ``ptolemy-medmag`` commands, skipped only while a sub-command is still the
  placeholder that takes no PATH.
"""

from __future__ import annotations

import argparse
import importlib
import os
import warnings

import mrcfile
import numpy as np
import pytest
from PIL import Image as PILImage

from ptolemy_core.cli import common
from ptolemy_core.cli.main import lowmag_main, main, medmag_main

NOT_AN_IMAGE = "not a recognised image (expected MRC, TIFF, PNG or JPEG)"


def _mrc(path, data):
    with warnings.catch_warnings(), mrcfile.new(path, overwrite=True) as mrc:
        warnings.simplefilter("ignore")  # NaN data on purpose
        mrc.set_data(data)
    return path


def _bad_inputs(tmp_path):
    """(id, argv after the sub-command, expected message) for every bad input of issue 3."""
    rng = np.random.default_rng(0)
    good = _mrc(tmp_path / "good.mrc", rng.integers(0, 1000, (40, 40)).astype(np.int16))
    raw = good.read_bytes()
    (tmp_path / "empty.mrc").write_bytes(b"")
    (tmp_path / "cut.mrc").write_bytes(raw[:-600])
    (tmp_path / "garbage.mrc").write_bytes(bytes(range(256)) * 8)
    bad_mode = bytearray(raw)
    bad_mode[12:16] = (99).to_bytes(4, "little")
    (tmp_path / "mode99.mrc").write_bytes(bytes(bad_mode))
    stack = _mrc(tmp_path / "stack.mrc", np.zeros((5, 8, 8), np.float32))
    nan = _mrc(tmp_path / "nan.mrc", np.full((8, 8), np.nan, np.float32))
    os.mkfifo(tmp_path / "fifo")
    t = tmp_path
    return [
        ("missing", [str(t / "no.mrc")], f"{t / 'no.mrc'}: no such file"),
        ("directory", [str(t)], f"{t}: is a directory, not an image file"),
        ("fifo", [str(t / "fifo")], f"{t / 'fifo'}: not a regular file (device, FIFO or socket)"),
        ("empty", [str(t / "empty.mrc")], f"{t / 'empty.mrc'}: empty file (0 bytes)"),
        ("truncated", [str(t / "cut.mrc")], f"{t / 'cut.mrc'}: truncated MRC file: the header describes "
         "40x40x1 int16 pixels (3200 bytes) but only 2600 bytes of data follow"),
        ("garbage", [str(t / "garbage.mrc")], f"{t / 'garbage.mrc'}: {NOT_AN_IMAGE}"),
        ("wrong-header", [str(t / "mode99.mrc")], f"{t / 'mode99.mrc'}: unsupported MRC mode 99 (unknown); "
         "readable modes are 0 int8, 1 int16, 2 float32, 6 uint16, 12 float16"),
        ("multi-frame", [str(stack)], f"{stack}: 5 frames in the file; choose one with --frame K (0..4)"),
        ("frame-range", [str(stack), "--frame", "9"],
         f"{stack}: frame 9 is out of range; the file has 5 frames (0..4)"),
        ("all-nan", [str(nan)], f"{nan}: no finite pixel in the image (all NaN/Inf)"),
        ("pixel-size", [str(good), "--pixel-size", "-1"],
         "pixel size must be a positive number of nm, got -1.0"),
    ]


CASES = ["missing", "directory", "fifo", "empty", "truncated", "garbage", "wrong-header",
         "multi-frame", "frame-range", "all-nan", "pixel-size"]
ENTRY_POINTS = [
    ("lowmag", lambda argv: main(["lowmag", *argv])),
    ("medmag", lambda argv: main(["medmag", *argv])),
    ("lowmag", lowmag_main),
    ("medmag", medmag_main),
]


def _case(tmp_path, case_id):
    return next(c for c in _bad_inputs(tmp_path) if c[0] == case_id)


def _assert_one_error_line(capsys, rc, command, message):
    out, err = capsys.readouterr()
    assert rc == 2
    assert "Traceback" not in err and "Traceback" not in out
    assert err.splitlines() == [f"ptolemy {command}: error: {message}"]


# --------------------------------------------------------------------------- reading layer


@pytest.fixture
def reading_only(monkeypatch):
    """Make lowmag/medmag read their image and stop (the finders' first step)."""
    seen = {}

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        common.add_image_arguments(parser)
        common.add_output_arguments(parser)

    def run(args: argparse.Namespace) -> int:
        seen["image"] = common.load_image_arg(args)
        return 0

    for name in ("lowmag", "medmag"):
        module = importlib.import_module(f"ptolemy_core.cli.{name}")
        monkeypatch.setattr(module, "add_arguments", add_arguments)
        monkeypatch.setattr(module, "run", run)
    return seen


@pytest.mark.parametrize("case_id", CASES)
@pytest.mark.parametrize("entry", range(len(ENTRY_POINTS)), ids=["lowmag", "medmag", "ptolemy-lowmag",
                                                                 "ptolemy-medmag"])
def test_reading_errors_are_one_line(tmp_path, capsys, reading_only, case_id, entry):
    command, call = ENTRY_POINTS[entry]
    _, argv, message = _case(tmp_path, case_id)
    rc = call(argv)
    _assert_one_error_line(capsys, rc, command, message)


def test_load_image_arg_reads_and_prints_notes(tmp_path, capsys, reading_only):
    data = np.arange(64, dtype=np.float32).reshape(8, 8)
    data[0, 0] = np.nan
    path = _mrc(tmp_path / "n.mrc", data)
    assert main(["lowmag", str(path), "--pixel-size", "250"]) == 0
    image = reading_only["image"]
    assert image.pixel_size_nm == 250.0 and np.isfinite(image.data).all()
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [f"ptolemy: note: {path}: 1 NaN/Inf pixel(s) replaced by the median 32"]


def test_load_image_arg_frame_and_renamed_png(tmp_path, capsys, reading_only):
    stack = _mrc(tmp_path / "s.mrc", np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5))
    assert lowmag_main([str(stack), "--frame", "2"]) == 0
    np.testing.assert_array_equal(reading_only["image"].data, np.arange(40, 60).reshape(4, 5))
    png = tmp_path / "p.png"
    PILImage.fromarray(np.full((6, 7), 9, np.uint8)).save(png)
    png.rename(tmp_path / "p.mrc")
    assert medmag_main([str(tmp_path / "p.mrc")]) == 0
    assert reading_only["image"].shape == (6, 7)
    assert capsys.readouterr().err == ""


# --------------------------------------------------------------------------- the real commands


def _takes_a_path(command: str) -> bool:
    """False while the sub-command is the placeholder (no PATH argument yet)."""
    parser = argparse.ArgumentParser()
    importlib.import_module(f"ptolemy_core.cli.{command}").add_arguments(parser)
    return any(action.dest == "path" for action in parser._actions)


def _require(command: str) -> None:
    if not _takes_a_path(command):
        pytest.skip(f"'ptolemy {command}' is still the placeholder")


@pytest.mark.parametrize("case_id", CASES)
@pytest.mark.parametrize("entry", range(len(ENTRY_POINTS)), ids=["lowmag", "medmag", "ptolemy-lowmag",
                                                                 "ptolemy-medmag"])
def test_real_cli_reading_errors(tmp_path, capsys, case_id, entry):
    command, call = ENTRY_POINTS[entry]
    _require(command)
    _, argv, message = _case(tmp_path, case_id)
    _assert_one_error_line(capsys, call(argv), command, message)


@pytest.mark.parametrize("command", ["lowmag", "medmag"])
@pytest.mark.parametrize("shape,value", [((32, 32), None), ((96, 96), 500)], ids=["32x32", "constant"])
def test_real_cli_tiny_and_constant_images(tmp_path, capsys, command, shape, value):
    # Issue 3: a constant image gives no targets (exit 0) or a clear error; a
    # 32x32 image works or fails cleanly. Never a crash (exit 70) or a traceback.
    _require(command)
    rng = np.random.default_rng(1)
    data = rng.integers(0, 900, shape).astype(np.int16) if value is None else np.full(shape, value, np.int16)
    path = _mrc(tmp_path / "x.mrc", data)
    rc = main([command, str(path), "-f", "json"])
    out, err = capsys.readouterr()
    assert rc in (0, 2), err
    assert "Traceback" not in err
    if rc == 2:
        assert len(err.splitlines()) == 1 and err.startswith(f"ptolemy {command}: error: ")
