"""Physically grounded simulator of cryo-EM grid images with exact ground truth.

- :func:`simulate_atlas` — low-magnification atlases (single frames and montages).
- :func:`simulate_square_image` — medium-magnification images of one square.

Both return a :class:`SimulatedImage` (stored-type array + pixel size + truth JSON
with ``[x, y]`` coordinates); ``.save(stem)`` writes ``<stem>.mrc`` + ``<stem>.json``.
"""

from __future__ import annotations

from .sample import CONVENTION, SIMULATOR_VERSION, SimulatedImage, load_truth

__all__ = [
    "CONVENTION",
    "SIMULATOR_VERSION",
    "SimulatedImage",
    "load_truth",
    "simulate_atlas",
    "simulate_square_image",
]


def __getattr__(name: str):
    # Imported on first use so that one simulator's import cost is not paid for the other.
    if name == "simulate_atlas":
        from .atlas import simulate_atlas

        return simulate_atlas
    if name == "simulate_square_image":
        from .square_image import simulate_square_image

        return simulate_square_image
    raise AttributeError(f"module 'ptolemy_core.synth' has no attribute {name!r}")
