"""Square and hole classifiers (Ptolemy paper, section 2.4), small and batch-independent.

Both networks use no normalisation layer at all (the paper used batch norm; here
a score must never depend on the other crops in a batch, and eval-mode batch norm
would only freeze training statistics), ReLU and max-pooling, and end in one logit.

Square classifier
    Input: a square's aligned rectangle (plus a 25 % rim), resampled to
    ``SQUARE_SIZE`` × ``SQUARE_SIZE`` and normalised by the atlas's *square
    pixels*: mean and std over the resampled crops of all squares found in the
    atlas (the paper normalises by all pixels inside the squares' boxes to
    cancel the electron dose). Two 5×5 and two 3×3 convolutions, then a small
    fully connected head. A second scalar input, ``log(area / median area)``
    over the same squares, gives the network the size the paper found most
    important (resampling to a fixed size would hide it), and ``log(I/I0)``
    (mean of the crop's centre over the vacuum intensity ``I0`` when the
    square finder knows it — Beer-Lambert optical depth, i.e. ice thickness
    over its mean free path) with a 0/1 flag saying whether ``I0`` was known.

Input versions
    Weights record ``arch["inputs"]`` (squares) / ``arch["in_channels"]`` (holes):
    version 2 (default for new training) uses the robust, physical inputs of
    :mod:`ptolemy_core.models.crops` (log intensity, dark level, population
    spread; an affine-invariant hole channel); version 1 is described below.

Hole classifier
    Input: a hole crop at the hole finder's working scale (any size ≥
    ``HOLE_MIN_SIZE``), two channels: the crop z-scored by its own pixels (the
    paper's per-crop normalisation) and the log of the crop relative to the
    vacuum intensity ``I0`` (``-log(I/I0)`` is the optical depth, ice thickness
    over its mean free path, whatever the microscope) when the hole finder
    knows ``I0``, else relative to the image's bright reference (99.5th
    percentile: thin ice or vacuum); a 0/1 flag tells the head which one was
    used. Convolutions without
    padding, then the mean and the maximum over space (a bag of regions: how much
    of a feature and whether it is there at all; crop-size independent).
"""

from __future__ import annotations

import torch
from torch import nn

#: Side of the resampled square crop (pixels).
SQUARE_SIZE = 32
#: Smallest hole crop side the hole CNN accepts (the unpadded convolutions shrink it by 10).
HOLE_MIN_SIZE = 14


#: Scalar inputs of the square CNN: log relative area, log(I/I0), I0-known flag.
SQUARE_SCALARS = 3


class SquareCNN(nn.Module):
    """Fixed-size square-crop classifier; ``forward(x, scalars) -> logit``."""

    def __init__(self, width: int = 16, inputs: int = 2) -> None:
        super().__init__()
        w = int(width)
        self.width = w
        #: Input version (see :func:`ptolemy_core.models.api.square_inputs`); not a weight.
        self.inputs = int(inputs)
        self.features = nn.Sequential(
            nn.Conv2d(1, w, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),      # 16
            nn.Conv2d(w, 2 * w, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # 8
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # 4
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(inplace=True),
        )
        self.head = nn.Sequential(
            nn.Linear(2 * w * 2 + SQUARE_SCALARS, 32), nn.ReLU(inplace=True), nn.Linear(32, 1)
        )

    def forward(self, x: torch.Tensor, scalars: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        # Mean and max over space: rotation-friendly summary (presence and amount).
        pooled = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)
        return self.head(torch.cat([pooled, scalars.view(-1, SQUARE_SCALARS)], dim=1)).squeeze(1)


class HoleCNN(nn.Module):
    """Crop-size independent hole classifier: unpadded convs + global average pooling."""

    def __init__(self, width: int = 16, in_channels: int = 3) -> None:
        super().__init__()
        w = int(width)
        self.width = w
        self.in_channels = int(in_channels)
        #: Input version: 3 channels = version 2 (robust), 2 channels = session-1 inputs.
        self.inputs = 2 if self.in_channels == 3 else 1
        self.features = nn.Sequential(
            nn.Conv2d(self.in_channels, w, 5), nn.ReLU(inplace=True),   # -4
            nn.Conv2d(w, 2 * w, 3), nn.ReLU(inplace=True),              # -2
            nn.Conv2d(2 * w, 2 * w, 3), nn.ReLU(inplace=True),          # -2
            nn.Conv2d(2 * w, 2 * w, 3), nn.ReLU(inplace=True),          # -2
        )
        self.head = nn.Sequential(nn.Linear(4 * w + 1, 32), nn.ReLU(inplace=True), nn.Linear(32, 1))

    def forward(self, x: torch.Tensor, i0_known: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        pooled = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3)), i0_known.view(-1, 1)], dim=1)
        return self.head(pooled).squeeze(1)
