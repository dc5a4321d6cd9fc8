"""Operator review: ranked-target overlays (PNG) and the self-contained HTML session report."""

from .overlay import (
    DisplayTransform,
    draw_overlay,
    render_overlay,
    render_overlay_png,
    score_colors,
    target_flags,
)

__all__ = [
    "DisplayTransform",
    "draw_overlay",
    "render_overlay",
    "render_overlay_png",
    "score_colors",
    "target_flags",
]
