"""The built-in example: a simulated multi-grid cassette, found, ranked and drawn.

Used by ``ptolemy demo`` (the README's main job) and by the tests.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import write_atomic
from .formats import to_json_line
from .image import as_image
from .metrics import points_in_ellipses, points_in_polygons, score_detections, truth_hole_regions


def _truth_squares(truth: dict) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    polys = [np.asarray(s["vertices"], float)[:, ::-1] for s in truth["squares"]]
    optional = np.array([s["visible_fraction"] < 0.5 for s in truth["squares"]], bool)
    good = np.array([bool(s["good"]) for s in truth["squares"]], bool)
    return polys, optional, good


def run_demo(
    out: Path,
    *,
    grids: int = 2,
    squares: int = 2,
    seed: int = 2026,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Simulate ``grids`` atlases and ``squares`` square images per grid; find, rank, draw.

    Parameters
    ----------
    out : pathlib.Path
        Existing output folder.
    grids, squares : int
        Cassette size.
    seed : int
        Seed of the whole example.
    progress : callable, optional
        Receives one human-readable line per finished image.

    Returns
    -------
    dict
        The summary also written to ``out/summary.json``.
    """
    from .holes import find_holes
    from .squares import find_squares
    from .synth import simulate_atlas, simulate_square_image

    try:
        from .review import render_overlay
    except ImportError:  # review module not available: JSON only
        render_overlay = None

    say = progress or (lambda line: None)
    rng = np.random.default_rng(seed)
    summary: dict[str, Any] = {"seed": seed, "grids": []}
    films = [("gold", "normal", "square"), ("carbon", "normal", "hex"),
             ("carbon", "low", "oblique"), ("carbon", "inverted", "square")]
    for g in range(grids):
        gdir = out / f"grid{g + 1}"
        gdir.mkdir(exist_ok=True)
        atlas = simulate_atlas(int(rng.integers(1 << 30)), shape=(1024, 1024))
        atlas.save(gdir / "atlas")
        (gdir / "atlas.json").rename(gdir / "atlas.truth.json")
        image = as_image(atlas.data, atlas.pixel_size_nm, str(gdir / "atlas.mrc"))
        found = find_squares(image)
        write_atomic(gdir / "atlas.targets.json", to_json_line(found.targets) + "\n")
        polys, optional, _ = _truth_squares(atlas.truth)
        points = np.array([t.center for t in found.targets], float).reshape(-1, 2)
        counts = score_detections(points_in_polygons(polys, points), optional)
        if render_overlay is not None:
            render_overlay(image, found.targets, gdir / "atlas.review.png", title=f"grid {g + 1}: squares")
        say(f"grid {g + 1}: atlas {image.shape[0]}x{image.shape[1]} -> {len(found.targets)} squares "
            f"({counts.tp} of {counts.tp + counts.fn} true squares found, {counts.fp} false); "
            f"best score {found.targets[0].score:.2f}" if found.targets else
            f"grid {g + 1}: atlas -> no squares found")
        grid_summary: dict[str, Any] = {
            "atlas": str(gdir / "atlas.mrc"), "squares_found": len(found.targets),
            "squares_true": int(counts.tp + counts.fn), "true_positives": counts.tp,
            "false_positives": counts.fp, "square_images": [],
        }
        for j in range(squares):
            film, contrast, lattice = films[(g * squares + j) % len(films)]
            sq = simulate_square_image(int(rng.integers(1 << 30)), film=film, contrast=contrast,
                                       lattice=lattice)
            stem = gdir / f"square{j + 1}"
            sq.save(stem)
            stem.with_suffix(".json").rename(stem.with_name(stem.name + ".truth.json"))
            simage = as_image(sq.data, sq.pixel_size_nm, str(stem.with_suffix(".mrc")))
            holes = find_holes(simage)
            write_atomic(stem.with_name(stem.name + ".targets.json"), to_json_line(holes.targets) + "\n")
            centers, axes, angles, hopt = truth_hole_regions(sq.truth)
            hpoints = np.array([t.center for t in holes.targets], float).reshape(-1, 2)
            hcounts = score_detections(points_in_ellipses(centers, axes, angles, hpoints), hopt)
            if render_overlay is not None:
                render_overlay(simage, holes.targets, stem.with_name(stem.name + ".review.png"),
                               title=f"grid {g + 1} square {j + 1}: holes ({film}, {contrast}, {lattice})")
            lattice_kind = holes.lattice.kind if holes.lattice is not None else "none"
            say(f"grid {g + 1} square {j + 1} ({film}/{contrast}/{lattice}): {len(holes.targets)} holes, "
                f"lattice {lattice_kind} ({hcounts.tp} of {hcounts.tp + hcounts.fn} true holes found, "
                f"{hcounts.fp} false)")
            grid_summary["square_images"].append({
                "image": str(stem.with_suffix(".mrc")), "film": film, "contrast": contrast,
                "lattice": lattice, "holes_found": len(holes.targets),
                "holes_true": int(hcounts.tp + hcounts.fn), "true_positives": hcounts.tp,
                "false_positives": hcounts.fp,
            })
        summary["grids"].append(grid_summary)
    write_atomic(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    if render_overlay is not None:
        from .review import write_report

        summary["report"] = str(write_report(out, out / "report.html"))
        say(f"report: {summary['report']} (self-contained HTML, opens offline)")
        write_atomic(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    return summary
