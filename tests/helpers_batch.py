"""A tiny stand-in finder for the batch-machinery tests (importable by spawned/Dask workers).

It is not a real finder: it puts one target on the brightest pixel so the tests can
check what the batch runner does with results, errors and files, quickly.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from ptolemy_core.targets import Target


def brightest(image, kind, **options):
    data = image.data
    if float(data.max()) < 0:
        raise ValueError("negative image")  # a non-input error, to test the summary message
    r, c = np.unravel_index(int(np.argmax(data)), data.shape)
    score = float(np.clip(data.max() / 1000.0, 0, 1))
    t = Target("square" if kind == "lowmag" else "hole", (float(r), float(c)),
               ((r - 2.0, c - 2.0), (r - 2.0, c + 2.0), (r + 2.0, c + 2.0), (r + 2.0, c - 2.0)),
               16.0, score=score, brightness=float(data.max()))
    return SimpleNamespace(targets=[t], notes=())
