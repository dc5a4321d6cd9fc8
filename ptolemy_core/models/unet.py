"""Small U-Net for hole-centre probability maps (Ptolemy paper, section 2.3, re-designed small).

The network sees the hole finder's *working-scale* image (holes ~10-20 px across),
z-scored over the whole image, and returns two logit maps of the same size:

- channel 0, ``"hole"``: every hole centre (used to localise holes);
- channel 1, ``"good"``: centres of holes worth collecting (operator-selected in
  real data, ``good`` in simulated truth; used to rank holes, the paper's best
  hole ranker is the summed probability of this map inside a hole's crop).

Training (:func:`ptolemy_core.train.fit.train_unet`) follows the paper: a
Gaussian whose sigma is learned jointly (initialised to e, Adam lr 0.1) blurs
the one-pixel centre targets, binary cross-entropy with a positive weight,
random 90° rotations/flips and random intensity inversion. Unlike the paper
(nine 64-channel levels) this one is small (4 levels, 8-32 channels, ~40k
parameters) and enters by space-to-depth (``unshuffle=2``: the 2 × 2 phases
of the image become 4 channels at half resolution, the logits leave by the
inverse shuffle at full resolution), so even a 1024 × 1440 working image (the
finder's scale 1, small holes) costs ~0.11 s with two torch threads on an idle
2-core machine and ~0.15-0.21 s with the one thread that
:func:`~ptolemy_core.models.registry.set_threads` gives it there, and the typical
working image (~170 × 240) ~10 ms (benchmarks/README.md, U-Net speed). No normalisation layer
is used, so outputs never depend on the batch.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

#: Output channel names, in order.
CHANNELS = ("hole", "good")


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1),
        nn.ReLU(inplace=True),
    )


class HoleUNet(nn.Module):
    """U-Net: max-pool down, nearest up, skip concatenation, no normalisation layers.

    Parameters
    ----------
    widths : tuple of int
        Channels per level, finest first; ``len(widths) - 1`` poolings, so input
        sides need not be multiples of anything (they are padded internally by
        reflection and cropped back).
    out_channels : int
        Number of output logit maps (see :data:`CHANNELS`).
    unshuffle : int
        Space-to-depth factor ``f``: the image enters as ``f²`` phase channels at
        ``1/f`` of its size (:func:`torch.nn.functional.pixel_unshuffle`) and the
        logits leave through :func:`~torch.nn.functional.pixel_shuffle`, so the
        maps keep the input's resolution while every level costs ``f²`` times
        fewer pixels (``f = 2``: about 4× cheaper on a 1024 × 1440 image than
        ``f = 1`` at the same widths) and the receptive field doubles. 1 is the
        session-1 layout (weights without ``"unshuffle"`` in their arch).
    """

    def __init__(self, widths: tuple[int, ...] = (4, 8, 16, 32), out_channels: int = 2,
                 unshuffle: int = 1) -> None:
        super().__init__()
        self.widths = tuple(int(w) for w in widths)
        self.unshuffle = int(unshuffle)
        if self.unshuffle < 1:
            raise ValueError(f"unshuffle must be >= 1, got {unshuffle}")
        f2 = self.unshuffle ** 2
        self.down = nn.ModuleList()
        c = f2
        for w in self.widths:
            self.down.append(_block(c, w))
            c = w
        self.up = nn.ModuleList()
        for w_skip in reversed(self.widths[:-1]):
            self.up.append(_block(c + w_skip, w_skip))
            c = w_skip
        self.head = nn.Conv2d(c, out_channels * f2, 1)
        # As the paper: start predicting (almost) nothing, targets are sparse.
        nn.init.constant_(self.head.bias, -6.0)

    @property
    def multiple(self) -> int:
        """Input sides are padded to a multiple of this (poolings × space-to-depth)."""
        return self.unshuffle * 2 ** (len(self.widths) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, 1, H, W) z-scored image -> (B, C, H, W) logits."""
        h, w = x.shape[-2:]
        y = self._logits_low(x)
        if self.unshuffle > 1:
            y = F.pixel_shuffle(y, self.unshuffle)
        return y[..., :h, :w]

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Inference: ``x`` (1, 1, H, W) -> contiguous (C, H, W) sigmoid maps, = ``sigmoid(forward(x))[0]``.

        The sigmoid runs on the ``f²``-phase maps and the pixel shuffle is one
        permute-and-copy (``pixel_shuffle`` of a channels-last tensor is several
        times slower and was ~8 % of a 1024 × 1440 call).
        """
        h, w = x.shape[-2:]
        y = torch.sigmoid(self._logits_low(x))[0]            # (C*f*f, h/f, w/f)
        f = self.unshuffle
        if f > 1:
            c, hh, ww = y.shape[0] // (f * f), y.shape[1], y.shape[2]
            y = y.reshape(c, f, f, hh, ww).permute(0, 3, 1, 4, 2).reshape(c, hh * f, ww * f)
        return y[:, :h, :w].contiguous()

    def _logits_low(self, x: torch.Tensor) -> torch.Tensor:
        """Logits before the pixel shuffle: (B, C·f², H'/f, W'/f) for the padded size H' × W'."""
        h, w = x.shape[-2:]
        m = self.multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            # Reflection keeps statistics near the edge like the image; replicate for tiny inputs.
            mode = "reflect" if h > ph and w > pw else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.unshuffle)
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1]), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)


class LearnedBlur(nn.Module):
    """Separable Gaussian blur with a learnable sigma (paper, section 2.3).

    Used in training only: it turns one-pixel hole-centre targets into blobs
    of peak 1 (the loss then tolerates small offsets between a hole's centre
    and the labelled point); sigma is learned jointly with the network.
    """

    def __init__(self, sigma: float = math.e, radius: int = 6) -> None:
        super().__init__()
        self.log_sigma = nn.Parameter(torch.tensor(math.log(sigma)))
        self.radius = int(radius)

    @property
    def sigma(self) -> torch.Tensor:
        # Bounded so the kernel (fixed radius) stays a Gaussian and never collapses.
        return self.log_sigma.exp().clamp(1.2, self.radius / 2.0)

    def kernel(self) -> torch.Tensor:
        r = torch.arange(-self.radius, self.radius + 1, dtype=torch.float32,
                         device=self.log_sigma.device)
        k = torch.exp(-0.5 * (r / self.sigma) ** 2)
        # Peak-normalised (not sum-normalised): a one-pixel target becomes a blob of peak 1.
        return k / k.max()

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        b, c, h, w = t.shape
        k = self.kernel()
        x = t.reshape(b * c, 1, h, w)
        x = F.conv2d(F.pad(x, (self.radius, self.radius, 0, 0)), k.view(1, 1, 1, -1))
        x = F.conv2d(F.pad(x, (0, 0, self.radius, self.radius)), k.view(1, 1, -1, 1))
        return x.reshape(b, c, h, w).clamp(0.0, 1.0)


def zscore(work: torch.Tensor | object) -> torch.Tensor:
    """Whole-image z-score (float32); a constant image maps to zeros."""
    x = torch.as_tensor(work, dtype=torch.float32)
    mean = x.mean()
    std = x.std()
    return (x - mean) / (std if float(std) > 0 else 1.0)
