"""Operator review: ranked-target overlays (PNG) and the self-contained HTML session report."""

from .overlay import (
    DisplayTransform,
    area_downsample,
    draw_overlay,
    render_overlay,
    render_overlay_png,
    score_colors,
    target_flags,
)
from .report import build_report, scan_session, svg_histogram, write_report

__all__ = [
    "build_report",
    "scan_session",
    "svg_histogram",
    "write_report",
    "DisplayTransform",
    "area_downsample",
    "draw_overlay",
    "render_overlay",
    "render_overlay_png",
    "score_colors",
    "target_flags",
]
