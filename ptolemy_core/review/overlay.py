"""Ranked-target overlays for operators (the paper's Figs. 9 and 12, readable at a glance).

The image is shown downsampled so its longer side is at most ``max_side`` display
pixels and contrast-stretched by percentiles; target geometry is mapped with the
exact per-axis scale, so an outline drawn here sits where the finder put it.

Drawing conventions (also written into the legend of every PNG):

* squares: the polygon through their four vertices; holes: their ellipse
  (``features["ellipse"]``), else a circle of ``features["radius"]``, else a circle
  inscribed in their crop box;
* colour: the score on the viridis scale (colour-blind safe, monotone in
  lightness), 0 = dark purple, 1 = yellow, with a colour bar; a contrasting halo
  keeps dark colours visible on dark ice;
* solid outline = ordinary target, **dashed** outline = flagged target (touches the
  edge, cut by the edge or a bar, a defect or contamination flag, see
  :func:`target_flags`);
* rank numbers (1 = best) in a black badge at the centre of the top ``top_n``.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_atomic
from ..errors import PtolemyInputError
from ..image import Image, as_image
from ..targets import Target, rank

#: viridis sampled at 0, 0.1, ..., 1 (sRGB); interpolated linearly in between.
#: A short table is enough: the map is smooth and we only need ~256 levels.
VIRIDIS_STOPS = np.array(
    [
        (68, 1, 84), (72, 36, 117), (65, 68, 135), (53, 95, 141), (42, 120, 142),
        (33, 145, 140), (34, 168, 132), (68, 191, 112), (122, 209, 81), (189, 223, 38),
        (253, 231, 37),
    ],
    dtype=float,
)

#: Colour of a target whose score is not a finite number.
NAN_COLOR = (160, 160, 160)

#: Boolean features that flag a target (drawn dashed).
FLAG_BOOL_KEYS = ("touches_edge", "cut", "contaminated", "cracked", "broken", "empty", "flagged")
#: Text/list features that flag a target unless "none"/empty.
FLAG_TEXT_KEYS = ("defect", "flag", "flags")

BACKGROUND = (24, 24, 24)
TEXT = (240, 240, 240)


def score_colors(scores: Any) -> np.ndarray:
    """Map scores in [0, 1] to viridis sRGB colours.

    Parameters
    ----------
    scores : array_like
        Scores; values outside [0, 1] are clipped, non-finite ones get :data:`NAN_COLOR`.

    Returns
    -------
    numpy.ndarray
        ``(n, 3)`` uint8 array.

    Examples
    --------
    >>> score_colors([0.0, 1.0]).tolist()
    [[68, 1, 84], [253, 231, 37]]
    """
    s = np.atleast_1d(np.asarray(scores, dtype=float))
    finite = np.isfinite(s)
    x = np.clip(np.where(finite, s, 0.0), 0.0, 1.0) * (len(VIRIDIS_STOPS) - 1)
    lo = np.minimum(np.floor(x).astype(int), len(VIRIDIS_STOPS) - 2)
    frac = (x - lo)[:, None]
    rgb = VIRIDIS_STOPS[lo] * (1 - frac) + VIRIDIS_STOPS[lo + 1] * frac
    rgb = np.rint(rgb).astype(np.uint8)
    rgb[~finite] = NAN_COLOR
    return rgb


def target_flags(target: Target) -> list[str]:
    """Why a target is flagged (empty list: not flagged).

    Parameters
    ----------
    target : Target

    Returns
    -------
    list of str
        Names such as ``"touches_edge"``, ``"cut"``, ``"defect=cracked"``.
    """
    flags: list[str] = []
    feats = target.features or {}
    for key in FLAG_BOOL_KEYS:
        value = feats.get(key)
        if isinstance(value, (bool, np.bool_)) and bool(value):
            flags.append(key)
    for key in FLAG_TEXT_KEYS:
        value = feats.get(key)
        if isinstance(value, str) and value.strip().lower() not in ("", "none", "ok", "good"):
            flags.append(f"{key}={value}")
        elif isinstance(value, (list, tuple)):
            flags.extend(f"{key}={v}" for v in value if str(v).strip().lower() not in ("", "none"))
    return flags


@dataclass(frozen=True)
class DisplayTransform:
    """Exact mapping from input pixels ``(row, col)`` to canvas pixels.

    Pixel centres map to pixel centres: display pixel ``j`` covers input
    ``[j / s, (j + 1) / s)``, so input coordinate ``c`` lands at ``(c + 0.5) * s - 0.5``.

    Attributes
    ----------
    scale_row, scale_col : float
        Display pixels per input pixel along rows / columns.
    offset_row, offset_col : int
        Where the displayed image starts on the canvas.
    display_shape : tuple of int
        ``(rows, cols)`` of the displayed image.
    """

    scale_row: float
    scale_col: float
    offset_row: int
    offset_col: int
    display_shape: tuple[int, int]

    def to_canvas(self, points: Any) -> np.ndarray:
        """``(n, 2)`` input ``(row, col)`` → ``(n, 2)`` canvas ``(row, col)`` (float)."""
        p = np.asarray(points, dtype=float).reshape(-1, 2)
        rows = self.offset_row + (p[:, 0] + 0.5) * self.scale_row - 0.5
        cols = self.offset_col + (p[:, 1] + 0.5) * self.scale_col - 0.5
        return np.stack([rows, cols], axis=1)


def display_shape(shape: tuple[int, int], max_side: int) -> tuple[int, int]:
    """Displayed ``(rows, cols)``: the longer side at most ``max_side``, never enlarged."""
    h, w = int(shape[0]), int(shape[1])
    s = min(1.0, float(max_side) / max(h, w))
    return max(1, int(round(h * s))), max(1, int(round(w * s)))


def _area_weights(n_in: int, n_out: int):
    """Sparse ``(n_out, n_in)`` matrix of exact box-filter (area coverage) weights.

    Display pixel ``j`` covers input ``[j n_in / n_out, (j + 1) n_in / n_out)``; each input
    pixel contributes its overlap with that interval, so rows sum to 1.
    """
    from scipy import sparse

    step = n_in / n_out
    lo = np.arange(n_out) * step
    hi = lo + step
    rows, cols, vals = [], [], []
    for off in range(int(np.ceil(step)) + 1):
        i = np.floor(lo).astype(np.int64) + off
        overlap = np.minimum(hi, i + 1) - np.maximum(lo, i)
        keep = (overlap > 1e-12) & (i < n_in)
        rows.append(np.nonzero(keep)[0])
        cols.append(i[keep])
        vals.append(overlap[keep] / step)
    return sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                             shape=(n_out, n_in))


def area_downsample(data: np.ndarray, out_shape: tuple[int, int], rows_per_chunk: int = 256) -> np.ndarray:
    """Exact area-average downsampling (box filter with fractional coverage), bounded memory.

    Parameters
    ----------
    data : numpy.ndarray
        2-D image (any real dtype; read in row chunks, so no full-size copy is made).
    out_shape : tuple of int
        ``(rows, cols)``, each at most the input's.
    rows_per_chunk : int
        Input rows converted to float at a time.

    Returns
    -------
    numpy.ndarray
        float32 ``out_shape``; an input coordinate ``c`` lands exactly at display
        ``(c + 0.5) * out / in - 0.5`` (pixel centres at integers).
    """
    h, w = data.shape
    wr = _area_weights(h, out_shape[0]).tocsc()
    wc_t = _area_weights(w, out_shape[1]).T.tocsr()
    out = np.zeros(out_shape, np.float64)
    for r0 in range(0, h, rows_per_chunk):
        r1 = min(h, r0 + rows_per_chunk)
        chunk = np.asarray(data[r0:r1], dtype=np.float32)
        cols_done = (wc_t.T @ chunk.T).T  # (r1 - r0, out_w)
        out += wr[:, r0:r1] @ cols_done
    return out.astype(np.float32)


def stretch_for_display(data: np.ndarray, out_shape: tuple[int, int],
                        percentiles: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """Area-downsample ``data`` to ``out_shape`` and stretch it to uint8 by percentiles.

    The percentiles are taken on the downsampled image (cheap, and what is shown).
    """
    if tuple(data.shape) == tuple(out_shape):
        arr = np.asarray(data, dtype=np.float32)
    else:
        arr = area_downsample(data, out_shape)
    lo, hi = np.percentile(arr, percentiles)
    if not hi > lo:
        lo, hi = float(arr.min()), float(arr.max())
    if not hi > lo:
        return np.full(arr.shape, 128, np.uint8)
    out = (arr - np.float32(lo)) * np.float32(255.0 / (hi - lo))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed bitmap font
        return ImageFont.load_default()


def _target_outline(t: Target, tf: DisplayTransform) -> np.ndarray:
    """Closed outline of one target in canvas ``(x, y)`` (PIL order)."""
    feats = t.features or {}
    if t.kind == "hole":
        ell = feats.get("ellipse")
        a = b = None
        angle = 0.0
        if isinstance(ell, dict) and ell.get("a") and ell.get("b"):
            a, b = float(ell["a"]), float(ell["b"])
            angle = math.radians(float(ell.get("angle_deg") or 0.0))
        elif feats.get("radius"):
            a = b = float(feats["radius"])
        elif len(t.vertices) >= 2:
            v = t.vertices_array()
            a = b = 0.5 * float(min(np.ptp(v[:, 0]), np.ptp(v[:, 1])))
        if not a or not math.isfinite(a) or not b or not math.isfinite(b):
            a = b = 4.0 / max(tf.scale_row, 1e-9)
        th = np.linspace(0.0, 2 * math.pi, 73)
        # angle_deg: axis ``a`` measured from +x (columns) towards +y (rows, downwards).
        dx = a * np.cos(th) * math.cos(angle) - b * np.sin(th) * math.sin(angle)
        dy = a * np.cos(th) * math.sin(angle) + b * np.sin(th) * math.cos(angle)
        pts = np.stack([t.center[0] + dy, t.center[1] + dx], axis=1)
    else:
        v = t.vertices_array()
        if len(v) < 3:
            half = 4.0 / max(tf.scale_row, 1e-9)
            r, c = t.center
            v = np.array([(r - half, c - half), (r - half, c + half),
                          (r + half, c + half), (r + half, c - half)])
        pts = np.vstack([v, v[:1]])
    canvas = tf.to_canvas(pts)
    return canvas[:, ::-1]


def _dashes(xy: np.ndarray, dash: float, gap: float) -> list[np.ndarray]:
    """Split a polyline into dash pieces of arc length ``dash`` separated by ``gap``."""
    seg = np.diff(xy, axis=0)
    seglen = np.hypot(seg[:, 0], seg[:, 1])
    cum = np.concatenate([[0.0], np.cumsum(seglen)])
    total = cum[-1]
    pieces = []
    start = 0.0
    while start < total:
        stop = min(start + dash, total)
        s = np.linspace(start, stop, max(2, int(math.ceil((stop - start) / 2.0)) + 1))
        x = np.interp(s, cum, xy[:, 0])
        y = np.interp(s, cum, xy[:, 1])
        pieces.append(np.stack([x, y], axis=1))
        start = stop + gap
    return pieces


def _halo_for(color: tuple[int, int, int]) -> tuple[int, int, int]:
    luminance = 0.2126 * color[0] + 0.7152 * color[1] + 0.0722 * color[2]
    # Only the darkest (lowest-score) colours get a white halo; a black one elsewhere.
    return (0, 0, 0) if luminance > 60 else (255, 255, 255)


def _polyline(draw, xy: np.ndarray, color, width: int, dashed: bool) -> None:
    pieces = _dashes(xy, dash=max(4.0, 3.5 * width), gap=max(3.0, 2.5 * width)) if dashed else [xy]
    halo = _halo_for(color)
    for layer_color, layer_width in ((halo, width + 2), (color, width)):
        for piece in pieces:
            draw.line([tuple(p) for p in piece], fill=layer_color, width=layer_width, joint="curve")


def _badge(draw, center_xy, text: str, font, pad: int) -> None:
    x, y = center_xy
    l, t, r, b = draw.textbbox((0, 0), text, font=font)
    w, h = r - l, b - t
    box = (x - w / 2 - pad, y - h / 2 - pad, x + w / 2 + pad, y + h / 2 + pad)
    draw.rectangle(box, fill=(0, 0, 0), outline=(255, 255, 255), width=1)
    draw.text((x - w / 2 - l, y - h / 2 - t), text, fill=(255, 255, 255), font=font)


def draw_overlay(
    image: Image | np.ndarray,
    targets: list[Target],
    *,
    title: str | None = None,
    top_n: int = 20,
    max_side: int = 1600,
):
    """Draw ranked targets over an image.

    Parameters
    ----------
    image : Image or numpy.ndarray
        The full-resolution image the targets were found on.
    targets : list of Target
        In any order; ranks follow the score (:func:`ptolemy_core.targets.rank`).
    title : str, optional
        Header text (default: the image source).
    top_n : int
        How many of the best targets get a rank number.
    max_side : int
        Longest side of the displayed image in pixels (the legend panel is extra).

    Returns
    -------
    canvas : PIL.Image.Image
        RGB picture: header, image with outlines, legend panel on the right.
    transform : DisplayTransform
        Input ``(row, col)`` → canvas pixel mapping used for the drawing.
    """
    from PIL import Image as PILImage
    from PIL import ImageDraw

    img = as_image(image)
    if max_side < 16:
        raise PtolemyInputError(f"max_side must be at least 16 pixels, got {max_side}")
    h, w = img.shape
    dh, dw = display_shape((h, w), max_side)
    grey = stretch_for_display(img.data, (dh, dw))

    side = max(dh, dw)
    fs = int(min(24, max(11, round(side / 60))))
    font, small = _font(fs), _font(max(10, int(fs * 0.8)))
    lw = max(2, int(round(side / 550)))
    header = int(fs * 2.2)
    panel = int(fs * 13)
    ranked = rank(list(targets))
    n = len(ranked)

    colorbar_h = int(min(max(dh * 0.45, 8 * fs), 18 * fs))
    legend_h = header + int(fs * 2.5) + colorbar_h + int(fs * 16)
    canvas = PILImage.new("RGB", (dw + panel, max(dh + header, legend_h)), BACKGROUND)
    tf = DisplayTransform(dh / h, dw / w, header, 0, (dh, dw))
    # Targets are drawn on the image panel alone (origin 0, 0) so that outlines of squares
    # cut by the image border are clipped there instead of spilling into header or legend.
    panel_tf = DisplayTransform(dh / h, dw / w, 0, 0, (dh, dw))
    picture = PILImage.fromarray(grey, "L").convert("RGB")
    pdraw = ImageDraw.Draw(picture)
    colors = score_colors([t.score for t in ranked]) if n else np.zeros((0, 3), np.uint8)
    flags = [target_flags(t) for t in ranked]
    # Worst first so the best targets end up on top of any overlap.
    for i in range(n - 1, -1, -1):
        xy = _target_outline(ranked[i], panel_tf)
        _polyline(pdraw, xy, tuple(int(c) for c in colors[i]), lw, dashed=bool(flags[i]))
    for i in range(min(top_n, n) - 1, -1, -1):
        centre = panel_tf.to_canvas([ranked[i].center])[0]
        _badge(pdraw, (centre[1], centre[0]), str(i + 1), small, pad=max(1, fs // 8))
    canvas.paste(picture, (0, header))
    draw = ImageDraw.Draw(canvas)

    # Header: title and counts.
    kinds = sorted({t.kind for t in ranked})
    noun = "/".join(f"{k}s" for k in kinds) if kinds else "targets"
    n_flag = sum(1 for f in flags if f)
    name = title if title is not None else os.path.basename(str(img.source))
    head = f"{name}  ·  {n} {noun}, {n_flag} flagged  ·  {w}x{h} px shown at {dw / w:.3g}x"
    draw.text((fs // 2, int(fs * 0.5)), head, fill=TEXT, font=font)

    _legend(draw, canvas, x0=dw + fs, y0=header + fs // 2, fs=fs, font=font, small=small, lw=lw,
            colorbar_h=colorbar_h, kind=kinds[0] if len(kinds) == 1 else "square",
            top_n=min(top_n, n))
    return canvas, tf


def _legend(draw, canvas, *, x0: int, y0: int, fs: int, font, small, lw: int, colorbar_h: int,
            kind: str, top_n: int) -> None:
    from PIL import Image as PILImage

    draw.text((x0, y0), "score (viridis)", fill=TEXT, font=font)
    top = y0 + int(fs * 1.6)
    bar_w = int(fs * 1.6)
    # Best (1.0) at the top, like the ranking.
    ramp = score_colors(np.linspace(1.0, 0.0, colorbar_h))
    bar = np.repeat(ramp[:, None, :], bar_w, axis=1)
    canvas.paste(PILImage.fromarray(bar, "RGB"), (x0, top))
    draw.rectangle((x0 - 1, top - 1, x0 + bar_w, top + colorbar_h), outline=TEXT, width=1)
    for v in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = top + (1.0 - v) * (colorbar_h - 1)
        draw.line((x0 + bar_w, y, x0 + bar_w + fs // 3, y), fill=TEXT, width=1)
        draw.text((x0 + bar_w + fs // 2, y), f"{v:.2f}", fill=TEXT, font=small, anchor="lm")

    y = top + colorbar_h + fs
    sample_color = tuple(int(c) for c in score_colors([0.85])[0])
    g = int(fs * 1.4)
    items = [
        ("solid", f"{kind} (outline colour = score)"),
        ("dashed", "dashed: flagged (edge, cut, defect / contamination)"),
        ("badge", f"rank 1 = best; top {top_n} numbered"),
    ]
    for style, label in items:
        if style == "badge":
            _badge(draw, (x0 + g / 2, y + g / 2), "1", small, pad=max(1, fs // 8))
        else:
            if kind == "hole":
                th = np.linspace(0, 2 * math.pi, 41)
                xy = np.stack([x0 + g / 2 + 0.45 * g * np.cos(th), y + g / 2 + 0.45 * g * np.sin(th)], 1)
            else:
                xy = np.array([(x0, y), (x0 + g, y), (x0 + g, y + g), (x0, y + g), (x0, y)], float)
            _polyline(draw, xy, sample_color, lw, dashed=style == "dashed")
        lines = _wrap(label, 24)
        for k, line in enumerate(lines):
            draw.text((x0 + g + fs // 2, y + k * int(fs * 1.05)), line, fill=TEXT, font=small)
        y += max(g, len(lines) * int(fs * 1.05)) + int(fs * 0.8)


def _wrap(text: str, width: int) -> list[str]:
    words, lines, cur = text.split(), [], ""
    for word in words:
        if cur and len(cur) + 1 + len(word) > width:
            lines.append(cur)
            cur = word
        else:
            cur = f"{cur} {word}".strip()
    return lines + ([cur] if cur else [])


def render_overlay_png(
    image: Image | np.ndarray,
    targets: list[Target],
    *,
    title: str | None = None,
    top_n: int = 20,
    max_side: int = 1600,
) -> bytes:
    """Same picture as :func:`render_overlay`, returned as PNG bytes (for the HTML report).

    Parameters
    ----------
    image, targets, title, top_n, max_side
        See :func:`draw_overlay`.

    Returns
    -------
    bytes
        A PNG file.
    """
    canvas, _ = draw_overlay(image, targets, title=title, top_n=top_n, max_side=max_side)
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def render_overlay(
    image: Image | np.ndarray,
    targets: list[Target],
    path: str | os.PathLike,
    *,
    title: str | None = None,
    top_n: int = 20,
    max_side: int = 1600,
) -> Path:
    """Write a PNG of the targets over the image (squares outlined, holes circled).

    Parameters
    ----------
    image : Image or numpy.ndarray
        The full-resolution image the targets refer to.
    targets : list of Target
        Squares and/or holes; coordinates in pixels of ``image``.
    path : path-like
        Destination PNG (written atomically); its folder must exist.
    title : str, optional
        Header text (default: the image source).
    top_n : int
        Rank numbers are drawn on the best ``top_n`` targets.
    max_side : int
        The image is shown with its longer side at most this many pixels.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    PtolemyInputError
        The folder of ``path`` does not exist or cannot be written.

    Examples
    --------
    >>> from ptolemy_core import read_image, find_squares           # doctest: +SKIP
    >>> atlas = read_image("atlas.mrc")
    >>> render_overlay(atlas, find_squares(atlas).targets, "atlas.png")
    """
    path = Path(path)
    if not path.parent.exists():
        raise PtolemyInputError(f"output folder {path.parent} does not exist")
    if path.is_dir():
        raise PtolemyInputError(f"output {path} is a directory")
    data = render_overlay_png(image, targets, title=title, top_n=top_n, max_side=max_side)
    try:
        return write_atomic(path, data)
    except OSError as exc:
        raise PtolemyInputError(f"cannot write {path}: {exc.strerror or exc}") from None
