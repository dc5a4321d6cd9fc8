"""One self-contained HTML page for a screening session (``ptolemy report``).

The page has no external files, no JavaScript and no web fonts: images are
inline base64 PNGs, styles are inline CSS, histograms are inline SVG. It opens
offline in any browser and can be mailed or archived as one file.

SESSION_DIR layout
------------------
Any mix of the following; every folder holding images is one *grid* section
(named by its path relative to SESSION_DIR; images directly in SESSION_DIR form
one section named after it)::

    SESSION_DIR/
      [grid1/]                          any depth; hidden folders are skipped
        atlas*.mrc|tif|png|jpg ...      images (MRC, TIFF, PNG, JPEG); *.review.png are skipped
        square*.mrc ...
        <stem>.targets.json             targets of <stem>.* (ptolemy demo), or
        <stem>.json                     targets (a JSON list: ptolemy -f json / batch output)
                                        - a JSON object is ground truth (simulator) and is ignored
        <stem>.truth.json               ground truth (only its "kind" is used)
      [OUT/summary.jsonl]               a `ptolemy batch` output folder: each record's
                                        "file" (the image, anywhere) and "output" (its targets)

Targets are taken from the first of: batch summary output, ``<stem>.targets.json``,
``<stem>.json``. When none exists the finder is run (``run_finders=True``).
The finder kind is, in order: the kind of the stored targets, the batch record,
the truth file, the file name / pixel size / shape (:func:`ptolemy_core.batch.finders.guess_kind`).
Atlases (lowmag) come first in each grid, then the square images (medmag).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_atomic
from ..errors import PtolemyInputError
from ..targets import Target, rank
from .overlay import render_overlay_png, score_colors, target_flags

IMAGE_SUFFIXES = (".mrc", ".mrcs", ".map", ".st", ".tif", ".tiff", ".png", ".jpg", ".jpeg")


@dataclass
class SessionImage:
    """One image of the session and what the report shows for it."""

    path: Path
    grid: str
    kind: str | None = None
    targets_path: Path | None = None
    targets: list[Target] | None = None
    targets_from: str = ""
    truth_kind: str | None = None
    error: str = ""
    shape: tuple[int, int] | None = None
    pixel_size_nm: float | None = None
    png: bytes | None = None
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- scanning


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_SUFFIXES and ".review." not in p.name and not p.name.startswith(".")


def _json_list_or_kind(path: Path) -> tuple[bool, str | None]:
    """(is a targets list, truth kind) of a JSON file; (False, None) when unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False, None
    first = text.lstrip()[:1]
    if first == "[":
        return True, None
    if first == "{":
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            return False, None
        kind = data.get("kind") if isinstance(data, dict) else None
        return False, {"atlas": "lowmag", "square": "medmag"}.get(kind)
    return False, None


def scan_session(session_dir: str | os.PathLike) -> list[SessionImage]:
    """Find the images of a session folder and their targets files (see module docstring).

    Parameters
    ----------
    session_dir : path-like

    Returns
    -------
    list of SessionImage
        Sorted by grid, then atlases before square images, then name.

    Raises
    ------
    PtolemyInputError
        Not a folder, or no image in it.
    """
    root = Path(session_dir)
    if not root.is_dir():
        raise PtolemyInputError(f"{session_dir}: not a folder")
    root_name = root.resolve().name or str(root)
    items: dict[Path, SessionImage] = {}

    def grid_of(folder: Path) -> str:
        try:
            rel = folder.resolve().relative_to(root.resolve())
        except ValueError:
            return str(folder)
        return root_name if str(rel) == "." else str(rel)

    summaries: list[Path] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        fpath = Path(folder)
        for name in sorted(files):
            p = fpath / name
            if name == "summary.jsonl":
                summaries.append(p)
            elif _is_image(p):
                item = SessionImage(path=p.resolve(), grid=grid_of(fpath))
                stem = p.name[: -len(p.suffix)]
                for cand in (fpath / f"{stem}.targets.json", fpath / f"{stem}.json"):
                    is_list, truth_kind = _json_list_or_kind(cand) if cand.exists() else (False, None)
                    if is_list and item.targets_path is None:
                        item.targets_path = cand
                    item.truth_kind = item.truth_kind or truth_kind
                truth = fpath / f"{stem}.truth.json"
                if truth.exists():
                    item.truth_kind = item.truth_kind or _json_list_or_kind(truth)[1]
                items[item.path] = item

    for summary in summaries:
        from ..batch.runner import read_summary

        for rec in read_summary(summary):
            if not rec.file:
                continue
            p = Path(rec.file)
            if not p.is_absolute():
                p = (summary.parent / p).resolve()
            item = items.get(p) or SessionImage(path=p, grid=grid_of(p.parent))
            out = Path(rec.output) if rec.output else None
            if out is not None and not out.is_absolute():
                out = summary.parent / out
            if rec.status == "ok" and out is not None and out.exists():
                item.targets_path = out
            elif rec.status == "error" and item.targets_path is None:
                item.error = f"batch error: {rec.error}"
            if rec.kind in ("lowmag", "medmag"):
                item.kind = item.kind or rec.kind
            items[p] = item

    if not items:
        raise PtolemyInputError(f"{session_dir}: no images (MRC, TIFF, PNG, JPEG) found")
    order = {"lowmag": 0, None: 1, "medmag": 2}

    def key(it: SessionImage):
        k = it.kind or it.truth_kind or _name_kind(it.path)
        return (it.grid, order.get(k, 1), it.path.name)

    return sorted(items.values(), key=key)


def _name_kind(path: Path) -> str | None:
    from ..batch.finders import guess_kind
    from ..image import as_image

    # File name only (a 1x1 placeholder has no pixel size and a square shape,
    # so anything the name does not decide comes back as the shape's "lowmag").
    kind, why = guess_kind(as_image(np.zeros((1, 1), np.float32)), path)
    return kind if why.startswith("file name") else None


# --------------------------------------------------------------------------- loading


def load_session(
    items: Sequence[SessionImage],
    *,
    run_finders: bool = True,
    top_n: int = 20,
    progress: Callable[[SessionImage], None] | None = None,
) -> list[SessionImage]:
    """Read each image, load or compute its targets and draw its overlay (in place).

    Errors become ``item.error`` (one line); nothing is raised for a bad image.
    """
    from ..batch.finders import TARGET_KIND, guess_kind, kind_of_targets, run_finder
    from ..formats import from_json
    from ..io import read_image

    for it in items:
        try:
            image = read_image(it.path)
            it.shape = image.shape
            it.pixel_size_nm = image.pixel_size_nm
            it.notes.extend(image.notes)
            if it.targets_path is not None:
                default = TARGET_KIND.get(it.kind or it.truth_kind or "")
                text = it.targets_path.read_text(encoding="utf-8")
                it.targets = from_json(text, kind=default) if text.strip() else []
                it.targets_from = it.targets_path.name
                it.kind = kind_of_targets(it.targets) or it.kind or it.truth_kind
                it.error = ""
            elif not it.error:
                it.kind = it.kind or it.truth_kind or guess_kind(image, it.path)[0]
                if run_finders:
                    result = run_finder(image, it.kind)
                    it.targets = list(result.targets)
                    it.notes.extend(getattr(result, "notes", ()) or ())
                    it.targets_from = f"{it.kind} finder (run for this report)"
                else:
                    it.error = "no targets file (finders not run)"
            if it.kind is None:
                it.kind = guess_kind(image, it.path)[0]
            what = {"lowmag": "squares", "medmag": "holes"}.get(it.kind or "", "targets")
            it.png = render_overlay_png(
                image, it.targets or [], title=f"{it.path.name}: {what}", top_n=top_n,
                max_side=1100 if it.kind == "lowmag" else 800)
        except Exception as exc:  # noqa: BLE001 - one bad image is a row in the report, not a stop
            msg = " ".join(str(exc).split())
            it.error = msg if isinstance(exc, PtolemyInputError) else f"{type(exc).__name__}: {msg}"
        if progress:
            progress(it)
    return list(items)


# --------------------------------------------------------------------------- HTML pieces


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    try:
        v = float(x)
    except (TypeError, ValueError):
        return _esc(x)
    if not math.isfinite(v):
        return "–"
    return f"{v:.{digits}g}" if abs(v) < 1e4 else f"{v:.0f}"


def _hex(rgb: Any) -> str:
    r, g, b = (int(x) for x in rgb)
    return f"#{r:02x}{g:02x}{b:02x}"


def _ice(t: Target) -> float | None:
    v = (t.features or {}).get("ice_thickness_nm")
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def svg_histogram(
    values: Sequence[float],
    *,
    title: str,
    xlabel: str,
    value_range: tuple[float, float] | None = None,
    bins: int = 20,
    color_by_score: bool = False,
    width: int = 285,
    height: int = 200,
) -> str:
    """An inline SVG bar histogram (no JavaScript, no external files).

    Parameters
    ----------
    values : sequence of float
        Non-finite values are dropped.
    title, xlabel : str
    value_range : (float, float), optional
        Histogram range (default: data min..max).
    bins : int
    color_by_score : bool
        Colour bars with the score colour scale (for score histograms).
    width, height : int
        Size in CSS pixels.

    Returns
    -------
    str
        ``<svg>`` element.
    """
    v = np.asarray([x for x in values if x is not None], dtype=float)
    v = v[np.isfinite(v)]
    left, right, top, bottom = 40, 18, 24, 36
    pw, ph = width - left - right, height - top - bottom
    parts = [f'<svg class="hist" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{_esc(title)}">',
             f'<text x="{width / 2:.0f}" y="15" text-anchor="middle" class="ht">{_esc(title)} '
             f'(n={len(v)})</text>']
    if len(v) == 0:
        parts.append(f'<text x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle">no data</text>'
                     "</svg>")
        return "".join(parts)
    clipped = ""
    if value_range:
        lo, hi = value_range
    else:
        upper = float(v.max())
        # A few wild values (e.g. ice thickness of an opaque square) must not squash the rest.
        limit = 2 * float(np.percentile(v, 95))
        if len(v) >= 20 and upper > limit > 0:
            upper = float(v[v <= limit].max())
        lo, hi = _nice_range(float(v.min()), upper)
        if float(v.max()) > hi:
            clipped = f"; values above {hi:.3g} counted in the last bar"
    counts, edges = np.histogram(np.clip(v, lo, hi), bins=bins, range=(lo, hi))
    cmax = max(1, int(counts.max()))
    bw = pw / bins
    centres = 0.5 * (edges[:-1] + edges[1:])
    colors = score_colors(centres) if color_by_score else np.tile([[70, 110, 170]], (bins, 1))
    for k, c in enumerate(counts):
        h = ph * c / cmax
        col = _hex(colors[k])
        parts.append(f'<rect x="{left + k * bw + 0.5:.1f}" y="{top + ph - h:.1f}" '
                     f'width="{max(bw - 1, 0.5):.1f}" height="{h:.1f}" fill="{col}" stroke="#333" '
                     f'stroke-width="0.3">'
                     f'<title>{edges[k]:.3g}–{edges[k + 1]:.3g}: {int(c)}</title></rect>')
    parts.append(f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#222"/>')
    parts.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="#222"/>')
    for frac in (0.0, 0.5, 1.0):
        x = left + frac * pw
        val = lo + frac * (hi - lo)
        parts.append(f'<line x1="{x:.1f}" y1="{top + ph}" x2="{x:.1f}" y2="{top + ph + 4}" stroke="#222"/>'
                     f'<text x="{x:.1f}" y="{top + ph + 15}" text-anchor="middle">{val:.3g}</text>')
    parts.append(f'<text x="{left - 4}" y="{top + 4}" text-anchor="end">{cmax}</text>'
                 f'<text x="{left - 4}" y="{top + ph}" text-anchor="end">0</text>')
    parts.append(f'<text x="{left + pw / 2:.0f}" y="{height - 4}" text-anchor="middle">'
                 f"{_esc(xlabel + clipped)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _nice_range(lo: float, hi: float) -> tuple[float, float]:
    """Round a data range outwards to a multiple of a power of ten (readable axis ends)."""
    if not hi > lo:
        return lo - 0.5, hi + 0.5
    step = 10.0 ** math.floor(math.log10(hi - lo))
    return math.floor(lo / step) * step, math.ceil(hi / step) * step


def _targets_table(it: SessionImage, max_rows: int) -> str:
    targets = rank(it.targets or [])
    if not targets:
        return '<p class="muted">no targets</p>'
    head = ("<tr><th>rank</th><th>x</th><th>y</th><th>score</th><th>area px²</th><th>brightness</th>"
            "<th>ice nm</th><th>flags</th></tr>")
    rows = []
    for i, t in enumerate(targets[:max_rows]):
        col = _hex(score_colors([t.score])[0])
        flags = ", ".join(target_flags(t))
        rows.append(
            f'<tr{" class=flag" if flags else ""}><td>{i + 1}</td><td>{t.col:.1f}</td><td>{t.row:.1f}</td>'
            f'<td><span class="sw" style="background:{col}"></span>{_fmt(t.score)}</td>'
            f"<td>{_fmt(t.area)}</td><td>{_fmt(t.brightness)}</td><td>{_fmt(_ice(t))}</td>"
            f"<td>{_esc(flags)}</td></tr>")
    more = (f'<p class="muted">top {max_rows} of {len(targets)} shown; all are in '
            f"{_esc(it.targets_from)}</p>" if len(targets) > max_rows else "")
    return (f'<table class="targets"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>{more}')


def _image_block(it: SessionImage, max_rows: int) -> str:
    what = {"lowmag": "atlas — squares", "medmag": "square image — holes"}.get(it.kind or "", "image")
    anchor = _anchor(it)
    meta = []
    if it.shape:
        meta.append(f"{it.shape[1]}×{it.shape[0]} px")
    if it.pixel_size_nm:
        meta.append(f"{it.pixel_size_nm:.4g} nm/px")
    if it.targets_from:
        meta.append(f"targets: {_esc(it.targets_from)}")
    out = [f'<div class="img" id="{anchor}"><h3>{_esc(it.path.name)} <small>({what})</small></h3>',
           f'<p class="muted">{" · ".join(meta)}<br>{_esc(str(it.path))}</p>']
    if it.error:
        out.append(f'<p class="err">error: {_esc(it.error)}</p>')
    for note in it.notes:
        out.append(f'<p class="muted">note: {_esc(note)}</p>')
    if it.png:
        b64 = base64.b64encode(it.png).decode("ascii")
        out.append(f'<figure><img src="data:image/png;base64,{b64}" alt="{_esc(it.path.name)} with ranked '
                   f'targets"><figcaption>Outline colour = score (viridis), numbers = rank, dashed = '
                   f"flagged.</figcaption></figure>")
    if it.targets is not None:
        out.append(f"<details{' open' if it.kind == 'lowmag' else ''}><summary>table of "
                   f"{len(it.targets)} {'squares' if it.kind == 'lowmag' else 'holes'}</summary>"
                   f"{_targets_table(it, max_rows)}</details>")
    out.append("</div>")
    return "".join(out)


def _anchor(it: SessionImage) -> str:
    raw = f"{it.grid}-{it.path.name}"
    return "i-" + "".join(ch if ch.isalnum() else "-" for ch in raw)


def _stats(it: SessionImage) -> dict[str, Any]:
    ts = it.targets or []
    scores = np.array([t.score for t in ts], float)
    ice = [x for x in (_ice(t) for t in ts) if x is not None]
    return {
        "n": len(ts) if it.targets is not None else None,
        "flagged": sum(1 for t in ts if target_flags(t)) if it.targets is not None else None,
        "best": float(np.nanmax(scores)) if len(scores) and np.isfinite(scores).any() else None,
        "median": float(np.nanmedian(scores)) if len(scores) and np.isfinite(scores).any() else None,
        "ice": float(np.median(ice)) if ice else None,
    }


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0 auto;
max-width:1200px;padding:0 16px 40px;color:#1b1b1b;background:#fafafa}
h1{margin:18px 0 4px}h2{border-bottom:2px solid #ccc;padding-bottom:4px;margin-top:36px}
h3{margin:18px 0 2px}small{font-weight:normal;color:#555}
.muted{color:#666;font-size:90%;margin:2px 0}.err{color:#b00020;font-weight:600}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #ccc;padding:2px 6px;text-align:right}th{background:#eee}
td:first-child,th:first-child{text-align:left}tr.flag td{background:#fff3e0}
table.summary td:nth-child(2),table.summary td:last-child{text-align:left}
.sw{display:inline-block;width:10px;height:10px;margin-right:4px;border:1px solid #444;vertical-align:middle}
figure{margin:6px 0}img{max-width:100%;height:auto;border:1px solid #999}
figcaption{font-size:85%;color:#555}.hists{display:flex;flex-wrap:wrap;gap:12px}
svg.hist{background:#fff;border:1px solid #ddd;font-size:11px;font-family:inherit}svg .ht{font-weight:600}
.img{margin-bottom:18px}details summary{cursor:pointer;color:#234}
"""


def render_report(
    items: Sequence[SessionImage],
    *,
    title: str = "Ptolemy session report",
    max_rows: int = 50,
) -> str:
    """The HTML page for loaded session images (see :func:`load_session`).

    Parameters
    ----------
    items : sequence of SessionImage
    title : str
    max_rows : int
        Rows per targets table (best first).

    Returns
    -------
    str
        A complete, self-contained HTML document.
    """
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    grids: dict[str, list[SessionImage]] = {}
    for it in items:
        grids.setdefault(it.grid, []).append(it)
    squares = [t for it in items if it.kind == "lowmag" for t in (it.targets or [])]
    holes = [t for it in items if it.kind == "medmag" for t in (it.targets or [])]
    n_err = sum(1 for it in items if it.error)

    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{_esc(title)}</title><style>{CSS}</style></head><body>",
           f"<h1>{_esc(title)}</h1>",
           f'<p class="muted">{len(grids)} grid(s), {len(items)} image(s), {len(squares)} squares, '
           f"{len(holes)} holes, {n_err} image(s) with errors · generated {now} by ptolemy report</p>",
           "<p>Each picture: squares outlined / holes circled, outline colour = score (viridis: dark purple "
           "0 → yellow 1), numbers = rank (1 = best), dashed outline = flagged (touches the edge, cut by "
           "an edge or bar, defect or contamination). Coordinates in tables are Ptolemy's "
           "[x, y] = [column, row] in pixels of the full-resolution image.</p>"]

    # Summary table.
    out.append('<h2 id="summary">Summary</h2><table class="summary"><thead><tr><th>grid</th><th>image</th>'
               "<th>kind</th><th>targets</th><th>flagged</th><th>best score</th><th>median score</th>"
               "<th>median ice nm</th><th>status</th></tr></thead><tbody>")
    for it in items:
        s = _stats(it)
        status = f'<span class="err">{_esc(it.error)}</span>' if it.error else "ok"
        out.append(f"<tr><td>{_esc(it.grid)}</td><td><a href=\"#{_anchor(it)}\">{_esc(it.path.name)}</a></td>"
                   f"<td>{_esc(it.kind or '?')}</td><td>{_fmt(s['n'])}</td><td>{_fmt(s['flagged'])}</td>"
                   f"<td>{_fmt(s['best'])}</td><td>{_fmt(s['median'])}</td><td>{_fmt(s['ice'])}</td>"
                   f"<td>{status}</td></tr>")
    out.append("</tbody></table>")

    # Histograms over the whole session.
    # Histograms over the whole session (only for the kinds present).
    out.append('<h2 id="histograms">Histograms</h2><div class="hists">')
    for name, ts in (("square", squares), ("hole", holes)):
        if not ts:
            continue
        out.append(svg_histogram([t.score for t in ts], title=f"{name} scores", xlabel="score",
                                 value_range=(0, 1), color_by_score=True))
        out.append(svg_histogram([_ice(t) for t in ts], title=f"{name} ice thickness",
                                 xlabel="ice thickness (nm)"))
    if not squares and not holes:
        out.append('<p class="muted">no targets in this session</p>')
    out.append("</div>")

    for grid, its in grids.items():
        out.append(f'<h2 id="g-{_esc(_anchor(its[0]))}">Grid {_esc(grid)}</h2>')
        gh = [t for it in its if it.kind == "medmag" for t in (it.targets or [])]
        if gh:
            out.append('<div class="hists">')
            out.append(svg_histogram([t.score for t in gh], title=f"{grid}: hole scores", xlabel="score",
                                     value_range=(0, 1), color_by_score=True, width=300, height=170))
            out.append(svg_histogram([_ice(t) for t in gh], title=f"{grid}: hole ice thickness",
                                     xlabel="ice thickness (nm)", width=300, height=170))
            out.append("</div>")
        for it in its:
            out.append(_image_block(it, max_rows))
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def build_report(
    session_dir: str | os.PathLike,
    *,
    run_finders: bool = True,
    title: str | None = None,
    max_rows: int = 50,
    top_n: int = 20,
    progress: Callable[[SessionImage], None] | None = None,
) -> str:
    """Scan a session folder, load/compute targets, and return the HTML page.

    Parameters
    ----------
    session_dir : path-like
        See the module docstring for the layout.
    run_finders : bool
        Run the finders for images without a targets file.
    title : str, optional
        Page title (default: "Ptolemy report — <folder name>").
    max_rows : int
        Rows per targets table.
    top_n : int
        Rank numbers drawn on the best ``top_n`` targets of each picture.
    progress : callable, optional
        Called with each :class:`SessionImage` once loaded.

    Returns
    -------
    str
        Self-contained HTML.
    """
    items = scan_session(session_dir)
    load_session(items, run_finders=run_finders, top_n=top_n, progress=progress)
    name = Path(session_dir).resolve().name
    return render_report(items, title=title or f"Ptolemy report — {name}", max_rows=max_rows)


def write_report(session_dir: str | os.PathLike, output: str | os.PathLike, **kwargs: Any) -> Path:
    """:func:`build_report` written atomically to ``output``; returns its path."""
    out = Path(output)
    if not out.parent.exists():
        raise PtolemyInputError(f"output folder {out.parent} does not exist")
    text = build_report(session_dir, **kwargs)
    try:
        return write_atomic(out, text)
    except OSError as exc:
        raise PtolemyInputError(f"cannot write {out}: {exc.strerror or exc}") from None
