"""The record every simulator returns, and how it is written to disk."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_atomic

#: Bumped whenever simulated images or truth change in a way that affects training.
SIMULATOR_VERSION = "1"

CONVENTION = "[x, y] = [column, row] in pixels of this image; (0, 0) is the centre of pixel [0, 0]"


@dataclass
class SimulatedImage:
    """A simulated image with exact ground truth.

    Attributes
    ----------
    data : numpy.ndarray
        2-D array in its stored type (int16, uint16 or float32), ``[row, col]``.
    pixel_size_nm : float
        True pixel size (written to the MRC header unless ``header_pixel_size`` is False).
    truth : dict
        JSON-ready ground truth; coordinates ``[x, y]`` (see :data:`CONVENTION`).
    kind : {"atlas", "square"}
    header_pixel_size : bool
        Whether the pixel size goes into the file header (real files often lack it).
    """

    data: np.ndarray
    pixel_size_nm: float
    truth: dict[str, Any]
    kind: str
    header_pixel_size: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def save(self, stem: str | Path) -> tuple[Path, Path]:
        """Write ``<stem>.mrc`` and ``<stem>.json``; returns both paths."""
        import mrcfile

        stem = Path(stem)
        mrc_path = stem.with_suffix(".mrc")
        json_path = stem.with_suffix(".json")
        tmp = mrc_path.with_name(f".{mrc_path.name}.tmp")
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(np.ascontiguousarray(self.data))
            if self.header_pixel_size:
                mrc.voxel_size = self.pixel_size_nm * 10.0  # Å
        tmp.replace(mrc_path)
        truth = dict(self.truth)
        truth.setdefault("convention", CONVENTION)
        truth.setdefault("simulator_version", SIMULATOR_VERSION)
        write_atomic(json_path, json.dumps(truth, indent=1) + "\n")
        return mrc_path, json_path


def load_truth(path: str | Path) -> dict[str, Any]:
    """Read a ground-truth JSON written by :meth:`SimulatedImage.save`."""
    return json.loads(Path(path).read_text())
