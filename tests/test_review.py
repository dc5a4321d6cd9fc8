"""Review overlays (colours, ranks, dashed flags, exact scaling), ptolemy review, the HTML report."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pytest
from PIL import Image as PILImage

from ptolemy_core.batch.finders import guess_kind
from ptolemy_core.errors import PtolemyInputError
from ptolemy_core.formats import to_json_line
from ptolemy_core.image import as_image
from ptolemy_core.review import (
    area_downsample,
    draw_overlay,
    render_overlay,
    render_overlay_png,
    score_colors,
    target_flags,
)
from ptolemy_core.targets import Target


def _square(r0, c0, r1, c1, score, **features) -> Target:
    return Target("square", ((r0 + r1) / 2, (c0 + c1) / 2), ((r0, c0), (r0, c1), (r1, c1), (r1, c0)),
                  float((r1 - r0) * (c1 - c0)), score=score, brightness=1.0, features=features)


def _gradient(shape=(600, 800)) -> np.ndarray:
    # A smooth ramp: mid-grey everywhere targets sit, so pure white/colour can only be drawing.
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    return (100 + 0.05 * rows + 0.05 * cols).astype(np.float32)


def _has_color(canvas: np.ndarray, rc, color, radius: int = 1) -> bool:
    r, c = int(round(rc[0])), int(round(rc[1]))
    patch = canvas[r - radius : r + radius + 1, c - radius : c + radius + 1]
    return bool(np.all(patch == np.asarray(color, np.uint8), axis=-1).any())


def _outline_hits(canvas, tf, pts_rc, color) -> float:
    """Fraction of outline sample points with the exact colour in their 3x3 neighbourhood."""
    canvas_pts = tf.to_canvas(pts_rc)
    return float(np.mean([_has_color(canvas, p, color) for p in canvas_pts]))


def _edge_points(t: Target, n: int = 40) -> np.ndarray:
    v = t.vertices_array()
    segs = [v[i] + np.linspace(0, 1, n, endpoint=False)[:, None] * (v[(i + 1) % 4] - v[i]) for i in range(4)]
    return np.vstack(segs)


# --------------------------------------------------------------------------- colours, flags


def test_score_colors_viridis_ends_monotone_lightness_and_nan():
    assert score_colors([0.0, 1.0, -3.0, 7.0]).tolist() == [[68, 1, 84], [253, 231, 37],
                                                            [68, 1, 84], [253, 231, 37]]
    rgb = score_colors(np.linspace(0, 1, 101)).astype(float)
    lum = rgb @ np.array([0.2126, 0.7152, 0.0722])
    assert np.all(np.diff(lum) > 0)  # readable in greyscale and by colour-blind viewers
    assert score_colors([np.nan]).tolist() == [[160, 160, 160]]


def test_target_flags():
    assert target_flags(_square(0, 0, 5, 5, 0.5)) == []
    edge = _square(0, 0, 5, 5, 0.5, touches_edge=True, cut=False, defect="none")
    assert target_flags(edge) == ["touches_edge"]
    assert target_flags(_square(0, 0, 5, 5, 0.5, cut=np.True_, defect="contaminated")) == ["cut",
                                                                                         "defect=contaminated"]
    assert target_flags(_square(0, 0, 5, 5, 0.5, touches_edge=1)) == []  # only real booleans count


# --------------------------------------------------------------------------- overlay drawing


def test_outline_has_score_colour_and_best_target_is_numbered():
    targets = [_square(100, 100, 200, 220, 0.9), _square(300, 400, 420, 560, 0.2),
               _square(100, 500, 180, 600, 0.55)]
    canvas_img, tf = draw_overlay(_gradient(), targets, top_n=2, max_side=800)
    canvas = np.asarray(canvas_img)
    assert (tf.scale_row, tf.scale_col) == (1.0, 1.0)
    for t in targets:
        color = score_colors([t.score])[0]
        assert _outline_hits(canvas, tf, _edge_points(t), color) > 0.95
        others = [score_colors([o.score])[0] for o in targets if o is not t]
        assert all(_outline_hits(canvas, tf, _edge_points(t), c) < 0.05 for c in others)

    def white_near(t):
        r, c = tf.to_canvas([t.center])[0].round().astype(int)
        patch = canvas[r - 8 : r + 9, c - 12 : c + 13]
        return int(np.all(patch == 255, axis=-1).sum()), int(np.all(patch == 0, axis=-1).sum())

    white, black = white_near(targets[0])  # rank 1: white digits on a black badge
    assert white >= 5 and black >= 20
    assert white_near(targets[2])[0] >= 5  # rank 2
    assert white_near(targets[1]) == (0, 0)  # rank 3 > top_n: no badge


def test_flagged_targets_are_dashed():
    plain, flagged = _square(100, 100, 260, 300, 0.8), _square(320, 420, 480, 620, 0.8, touches_edge=True)
    canvas_img, tf = draw_overlay(_gradient(), [plain, flagged], max_side=800)
    canvas = np.asarray(canvas_img)
    color = score_colors([0.8])[0]
    assert _outline_hits(canvas, tf, _edge_points(plain, 100), color) > 0.95
    dashed = _outline_hits(canvas, tf, _edge_points(flagged, 100), color)
    assert 0.3 < dashed < 0.85


def test_hole_drawn_as_circle_or_ellipse_of_its_radius():
    hole = Target("hole", (250.0, 300.0), ((220, 270), (220, 330), (280, 330), (280, 270)), 3600.0, score=0.7,
                  features={"radius": 30.0})
    ell = Target("hole", (250.0, 600.0), ((210, 560), (210, 640), (290, 640), (290, 560)), 6400.0, score=0.3,
                 features={"radius": 30.0, "ellipse": {"a": 36.0, "b": 20.0, "angle_deg": 0.0}})
    canvas_img, tf = draw_overlay(_gradient(), [hole, ell], max_side=800)
    canvas = np.asarray(canvas_img)
    th = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    circle = np.stack([250 + 30 * np.sin(th), 300 + 30 * np.cos(th)], 1)
    assert _outline_hits(canvas, tf, circle, score_colors([0.7])[0]) > 0.95
    inner = np.stack([250 + 22 * np.sin(th), 300 + 22 * np.cos(th)], 1)
    assert _outline_hits(canvas, tf, inner, score_colors([0.7])[0]) < 0.05
    # angle 0: axis a (36) along x = columns, b (20) along rows.
    ellipse = np.stack([250 + 20 * np.sin(th), 600 + 36 * np.cos(th)], 1)
    assert _outline_hits(canvas, tf, ellipse, score_colors([0.3])[0]) > 0.95


def test_downsampled_display_keeps_exact_coordinates():
    # 3001 x 4003 (non-integer factor) with a bright block at an odd place.
    data = np.zeros((3001, 4003), np.float32)
    r0, r1, c0, c1 = 1237, 1297, 2711, 2791  # rows [r0, r1), cols [c0, c1)
    data[r0:r1, c0:c1] = 1000.0
    canvas_img, tf = draw_overlay(data, [], max_side=500)
    assert tf.display_shape == (375, 500)
    assert tf.scale_row == pytest.approx(375 / 3001) and tf.scale_col == pytest.approx(500 / 4003)
    grey = np.asarray(canvas_img)[..., 0].astype(float)
    grey = grey[tf.offset_row : tf.offset_row + 375, tf.offset_col : tf.offset_col + 500]
    rr, cc = np.mgrid[:375, :500]
    w = grey / grey.sum()
    centroid = np.array([(w * rr).sum(), (w * cc).sum()]) + [tf.offset_row, tf.offset_col]
    expected = tf.to_canvas([((r0 + r1 - 1) / 2, (c0 + c1 - 1) / 2)])[0]
    # Exact area averaging: only the uint8 rounding of edge pixels remains in the picture (a
    # mapping without the pixel-centre terms would be off by ~0.44 display pixels) ...
    assert np.abs(centroid - expected).max() < 0.05
    # ... and before rounding each display pixel holds exactly the fraction of its area that
    # the block covers: display pixel j spans input [j * n_in / n_out, (j + 1) * n_in / n_out).
    small = area_downsample(data, (375, 500)).astype(float)

    def coverage(n_in, n_out, a, b):
        step = n_in / n_out
        lo = np.arange(n_out) * step
        return np.clip(np.minimum(lo + step, b) - np.maximum(lo, a), 0, None) / step

    expected_img = 1000.0 * np.outer(coverage(3001, 375, r0, r1), coverage(4003, 500, c0, c1))
    assert np.abs(small - expected_img).max() < 1e-3
    assert small.sum() * (3001 * 4003) / (375 * 500) == pytest.approx(data.sum(), rel=1e-6)
    # The outline of a square on the block's edges lies on the block's displayed border.
    t = _square(r0 - 0.5, c0 - 0.5, r1 - 0.5, c1 - 0.5, 1.0)
    canvas = np.asarray(draw_overlay(data, [t], max_side=500, top_n=0)[0])
    assert _outline_hits(canvas, tf, _edge_points(t), score_colors([1.0])[0]) > 0.95


def test_large_image_is_limited_to_max_side_and_stretched():
    rng = np.random.default_rng(3)
    data = rng.normal(1000, 20, (2000, 1500)).astype(np.float32)
    data[0, 0] = 1e9  # a hot pixel must not wash out the display (percentile stretch)
    canvas_img, tf = draw_overlay(data, [], max_side=400)
    grey = np.asarray(canvas_img)[tf.offset_row : tf.offset_row + 400, :300, 0]
    assert tf.display_shape == (400, 300)
    assert 60 < grey.mean() < 200 and grey.std() > 20


def test_render_overlay_writes_png_atomically(tmp_path: Path):
    t = [_square(10, 10, 50, 60, 0.4)]
    out = render_overlay(_gradient((120, 160)), t, tmp_path / "o.png", title="hello")
    assert out == tmp_path / "o.png" and [p.name for p in tmp_path.iterdir()] == ["o.png"]
    png = PILImage.open(out)
    assert png.format == "PNG" and png.mode == "RGB" and png.width > 160
    assert render_overlay_png(_gradient((120, 160)), t, title="hello") == out.read_bytes()
    with pytest.raises(PtolemyInputError, match=r"^output folder .*nothere does not exist$"):
        render_overlay(_gradient((120, 160)), t, tmp_path / "nothere" / "o.png")


def test_no_targets_and_tiny_image_still_draw():
    png = render_overlay_png(np.ones((5, 7), np.float32), [])
    assert PILImage.open(io.BytesIO(png)).size[0] > 7


# --------------------------------------------------------------------------- kind guessing


@pytest.mark.parametrize("name, kind", [
    ("atlas.mrc", "lowmag"), ("grid1_square2.mrc", "medmag"), ("26jun01b_00012gr.mrc", "lowmag"),
    ("26jun01b_00003hl.jpg", "medmag"), ("x_00004sq.mrc", "medmag"), ("GridSquare_1.jpg", "medmag"),
])
def test_guess_kind_from_name(name, kind):
    assert guess_kind(as_image(np.zeros((64, 64))), name)[0] == kind


def test_guess_kind_from_pixel_size_and_shape():
    atlas = as_image(np.zeros((64, 64)), pixel_size_nm=400.0)
    assert guess_kind(atlas, "a.mrc") == ("lowmag", "pixel size 400 nm")
    assert guess_kind(as_image(np.zeros((64, 64)), pixel_size_nm=20.0), "a.mrc")[0] == "medmag"
    assert guess_kind(as_image(np.zeros((1024, 1440))), "a.mrc") == ("medmag", "non-square 1024x1440 frame")
    assert guess_kind(as_image(np.zeros((1024, 1024))), "a.mrc")[0] == "lowmag"


# --------------------------------------------------------------------------- CLI


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ptolemy_core.cli.main", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


def test_cli_review_with_targets(tmp_path: Path):
    with mrcfile.new(tmp_path / "img.mrc") as m:
        m.set_data(_gradient((300, 400)))
    t = [_square(50, 50, 150, 170, 0.9), _square(160, 200, 260, 330, 0.1)]
    (tmp_path / "t.json").write_text(to_json_line(t) + "\n")
    proc = _cli("review", "img.mrc", "--targets", "t.json", "--top", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "img.review.png"
    assert proc.stdout.strip() == str(out) and out.exists()
    canvas = np.asarray(PILImage.open(out).convert("RGB"))
    _, tf = draw_overlay(_gradient((300, 400)), t, top_n=1, title="img.mrc: squares")
    assert _outline_hits(canvas, tf, _edge_points(t[0]), score_colors([0.9])[0]) > 0.95
    proc = _cli("review", "img.mrc", "--targets", "missing.json", cwd=tmp_path)
    assert proc.returncode == 2
    msg = "ptolemy review: error: cannot read targets missing.json: No such file or directory"
    assert proc.stderr.strip() == msg
    (tmp_path / "bad.json").write_text("{not json")
    proc = _cli("review", "img.mrc", "--targets", "bad.json", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("ptolemy review: error: targets file is not JSON")


@pytest.mark.slow  # a subprocess that imports torch: ~5 s, > 10 s on a busy machine
def test_cli_review_runs_the_finder(tmp_path: Path):
    squares = pytest.importorskip("ptolemy_core.squares")
    if not hasattr(squares, "find_squares"):
        pytest.skip("square finder not available yet")
    from ptolemy_core.synth import simulate_atlas

    simulate_atlas(5, shape=(512, 512)).save(tmp_path / "atlas")
    proc = _cli("review", "atlas.mrc", "-o", "r.png", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "treating atlas.mrc as lowmag (file name 'atlas.mrc')" in proc.stderr
    assert PILImage.open(tmp_path / "r.png").format == "PNG"


# --------------------------------------------------------------------------- HTML report (no browser)


def make_session(root: Path, *, broken: bool = True) -> dict[str, int]:
    """A hand-made session: 2 grids, each an atlas + a square image with targets files."""
    rng = np.random.default_rng(0)
    counts = {}
    for g in (1, 2):
        d = root / f"grid{g}"
        d.mkdir(parents=True)
        atlas = rng.normal(100, 5, (256, 256)).astype(np.float32)
        squares = []
        for k, (r, c) in enumerate([(40, 40), (40, 150), (150, 40), (150, 150)]):
            atlas[r : r + 60, c : c + 60] += 50
            squares.append(_square(r, c, r + 60, c + 60, 0.2 + 0.2 * k, ice_thickness_nm=30.0 + 5 * k,
                                   touches_edge=k == 3))
        with mrcfile.new(d / "atlas.mrc") as m:
            m.set_data(atlas)
        (d / "atlas.targets.json").write_text(to_json_line(squares) + "\n")
        sq = rng.normal(100, 5, (200, 280)).astype(np.float32)
        box = ((40, 40), (40, 80), (80, 80), (80, 40))
        holes = [Target("hole", (50.0 + 100 * i, 60.0 + 80 * j), box, 1600.0, score=float(rng.random()),
                        features={"radius": 15.0, "ice_thickness_nm": 25.0})
                 for i in range(2) for j in range(3)]
        with mrcfile.new(d / "square1.mrc") as m:
            m.set_data(sq)
        (d / "square1.json").write_text(to_json_line(holes) + "\n")
        counts[f"grid{g}"] = len(squares) + len(holes)
    if broken:
        (root / "grid2" / "square9.mrc").write_bytes(b"junk" * 64)
    return counts


def test_report_html_is_self_contained(tmp_path: Path):
    from ptolemy_core.review.report import build_report, scan_session, write_report

    make_session(tmp_path / "s")
    items = scan_session(tmp_path / "s")
    assert [(i.grid, i.path.name) for i in items] == [
        ("grid1", "atlas.mrc"), ("grid1", "square1.mrc"),
        ("grid2", "atlas.mrc"), ("grid2", "square1.mrc"), ("grid2", "square9.mrc")]
    text = build_report(tmp_path / "s", run_finders=False)
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert len(re.findall(r'<img src="data:image/png;base64,', text)) == 4
    assert not re.search(r'(src|href)="(https?:|//|file:)', text)
    assert "<script" not in text and "<link" not in text
    assert text.count("<svg") == 4 + 2 * 2  # session histograms + per grid holes (score, ice)
    assert text.count("<table") == 1 + 4  # summary + one per image with targets
    assert text.count('<tr class=flag>') == 2  # one flagged square per atlas
    assert "square9.mrc: not a recognised image" in text
    out = write_report(tmp_path / "s", tmp_path / "r.html", run_finders=False)
    assert out.read_text() .count("data:image/png;base64,") == 4


def test_report_reads_batch_output(tmp_path: Path):
    from ptolemy_core.batch import run_batch
    from ptolemy_core.review.report import scan_session

    make_session(tmp_path / "s", broken=False)
    imgs = sorted((tmp_path / "s").rglob("square1.mrc"))
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        run_batch(imgs, "medmag", tmp_path / "s" / "batch", jobs=1,
                  options={"finder": "helpers_batch:brightest"})
    finally:
        sys.path.remove(str(Path(__file__).parent))
    items = {(i.grid, i.path.name): i for i in scan_session(tmp_path / "s")}
    assert items[("grid1", "square1.mrc")].targets_path == tmp_path / "s" / "batch" / "grid1__square1.json"
    assert items[("grid1", "atlas.mrc")].targets_path == tmp_path / "s" / "grid1" / "atlas.targets.json"


def test_cli_report(tmp_path: Path):
    make_session(tmp_path / "s")
    proc = _cli("report", "s", "-o", "r.html", "--no-find", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "r.html" and (tmp_path / "r.html").stat().st_size > 10_000
    assert "grid2/square9.mrc: error:" in proc.stderr
    proc = _cli("report", "nothere", "-o", "r.html", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip() == "ptolemy report: error: nothere: not a folder"
    help_text = _cli("report", "--help", cwd=tmp_path).stdout
    assert "SESSION_DIR layout" in help_text and "<stem>.targets.json" in help_text


def test_svg_histogram_bar_heights_and_outlier_clipping():
    from ptolemy_core.review.report import svg_histogram

    svg = svg_histogram([0.05, 0.05, 0.95, float("nan")], title="s", xlabel="score", value_range=(0, 1),
                        bins=10, height=236)  # plot height 236 - 24 - 36 = 176 px
    heights = [float(h) for h in re.findall(r'<rect [^>]*height="([0-9.]+)"', svg)]
    assert heights == [176.0] + [0.0] * 8 + [88.0]
    assert "(n=3)" in svg and svg.startswith("<svg") and svg.endswith("</svg>")
    values = list(np.linspace(20, 60, 99)) + [5000.0]
    svg = svg_histogram(values, title="ice", xlabel="nm")
    assert "values above 60 counted in the last bar" in svg
    rects = re.findall(r'<rect x="[0-9.]+" y="([0-9.]+)" width="[0-9.]+" height="([0-9.]+)"', svg)
    assert all(float(y) + float(h) == pytest.approx(200 - 36, abs=0.11) for y, h in rects)  # bars on the axis
    assert max(float(h) for _, h in rects) == pytest.approx(200 - 24 - 36)
    assert "no data" in svg_histogram([], title="x", xlabel="y")
