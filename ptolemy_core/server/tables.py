"""Square and hole tables in Ptolemy's server CSV formats (reference API §3).

A "CSV" response is a JSON *string* holding CSV text: id column first, ``\\n``
line ends, ``True``/``False``, empty cell = missing. Leginon reads columns by
header name, but the order below is the reference's and is kept exactly.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import PtolemyInputError

SQUARE_COLUMNS = (
    "square_id", "tile_id", "grid_id", "center_x", "center_y", "prior_score", "visited",
    "vert_1_x", "vert_1_y", "vert_2_x", "vert_2_y", "vert_3_x", "vert_3_y", "vert_4_x", "vert_4_y",
    "brightness", "area",
)
HOLE_COLUMNS = (
    "hole_id", "mm_img_id", "square_id", "grid_id", "center_x", "center_y", "radius", "prior_score",
    "visited", "ctf", "ice_thickness", "ctf_pred", "ice_pred", "ctf_var", "ice_var",
)
#: Square feature vector (``lm_feats.npy`` columns, GP inputs), from the square finder.
SQUARE_FEATURES = ("brightness", "std", "area", "relative_thickness")
#: Hole feature vector (``mm_feats.npy`` columns): intensity and vacuum I0 feed the
#: ice calibration; the finder's thickness and std are kept for reference.
HOLE_FEATURES = ("mean", "i0", "ice_thickness_nm", "std")


@dataclass
class SquareRow:
    square_id: int
    tile_id: int
    grid_id: int
    center_x: int
    center_y: int
    prior_score: float
    visited: bool
    vertices: list[float]  # 8 floats: x1, y1, ..., x4, y4
    brightness: float
    area: float
    features: np.ndarray = field(default_factory=lambda: np.full(len(SQUARE_FEATURES), np.nan))


@dataclass
class HoleRow:
    hole_id: int
    mm_img_id: int
    square_id: int
    grid_id: int
    center_x: int
    center_y: int
    radius: float
    prior_score: float  # our finder's score (the adapted score is computed on output)
    visited: bool = False
    ctf: float = math.nan
    ice_thickness: float = math.nan
    features: np.ndarray = field(default_factory=lambda: np.full(len(HOLE_FEATURES), np.nan))


def fmt(value) -> str:
    """One CSV cell: '' for missing, True/False, ints as ints, floats short."""
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "True" if value else "False"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    v = float(value)
    if not math.isfinite(v):
        return ""
    return repr(round(v, 4))


def _join(cells) -> str:
    return ",".join(fmt(c) for c in cells)


def squares_csv(rows: list[SquareRow], gp_probs: list[float] | None = None) -> str:
    """Square CSV (optionally with the ``GP_probs`` column)."""
    header = list(SQUARE_COLUMNS) + (["GP_probs"] if gp_probs is not None else [])
    lines = [",".join(header)]
    for k, r in enumerate(rows):
        cells = [r.square_id, r.tile_id, r.grid_id, int(r.center_x), int(r.center_y), r.prior_score,
                 bool(r.visited), *r.vertices, r.brightness, r.area]
        if gp_probs is not None:
            cells.append(gp_probs[k])
        lines.append(_join(cells))
    return "\n".join(lines) + "\n"


def holes_csv(rows: list[HoleRow], scores=None, ice_pred=None, ice_var=None) -> str:
    """Hole CSV; ``scores`` replaces ``prior_score`` (Leginon ranks holes by that column)."""
    lines = [",".join(HOLE_COLUMNS)]
    for k, r in enumerate(rows):
        score = r.prior_score if scores is None else scores[k]
        ip = None if ice_pred is None else ice_pred[k]
        iv = None if ice_var is None else ice_var[k]
        lines.append(_join([r.hole_id, r.mm_img_id, r.square_id, r.grid_id, int(r.center_x),
                            int(r.center_y), r.radius, score, bool(r.visited), r.ctf,
                            r.ice_thickness, None, ip, None, iv]))
    return "\n".join(lines) + "\n"


def _cell_float(row: dict, key: str, default=math.nan) -> float:
    text = (row.get(key) or "").strip()
    if text == "":
        return default
    try:
        return float(text)
    except ValueError:
        raise PtolemyInputError(f"state file: column {key} holds {text!r}, not a number") from None


def _cell_int(row: dict, key: str) -> int:
    value = _cell_float(row, key)
    if not math.isfinite(value):
        raise PtolemyInputError(f"state file: column {key} is empty")
    return int(value)


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise PtolemyInputError(f"cannot read state file {path.name}: {exc.strerror or exc}") from None
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in required if c not in (reader.fieldnames or [])]
    if missing:
        raise PtolemyInputError(f"state file {path.name} lacks column(s): {', '.join(missing)}")
    return list(reader)


def _load_feats(path: Path, n: int, width: int) -> np.ndarray:
    if not path.exists():
        return np.full((n, width), np.nan)
    try:
        feats = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise PtolemyInputError(f"cannot read {path.name}: {exc}") from None
    feats = np.asarray(feats, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] != n:
        raise PtolemyInputError(f"{path.name} has shape {feats.shape}, expected {n} rows")
    if feats.shape[1] != width:
        # A foreign state (e.g. the reference's crop statistics): not our features.
        return np.full((n, width), np.nan)
    return feats


def read_state(folder: Path) -> tuple[list[SquareRow], list[HoleRow]]:
    """Read ``lmstate.csv``/``mmstate.csv`` (+ ``*_feats.npy`` when present) from a folder."""
    lm = folder / "lmstate.csv"
    mm = folder / "mmstate.csv"
    if not lm.exists() and not mm.exists():
        raise PtolemyInputError(f"no lmstate.csv or mmstate.csv in {folder.name or folder}")
    squares: list[SquareRow] = []
    holes: list[HoleRow] = []
    if lm.exists():
        for row in _read_csv(lm, ("square_id", "center_x", "center_y")):
            verts = [_cell_float(row, f"vert_{i}_{a}") for i in range(1, 5) for a in ("x", "y")]
            squares.append(SquareRow(
                square_id=_cell_int(row, "square_id"),
                tile_id=int(_cell_float(row, "tile_id", -1)),
                grid_id=int(_cell_float(row, "grid_id", -1)),
                center_x=int(_cell_float(row, "center_x")),
                center_y=int(_cell_float(row, "center_y")),
                prior_score=_cell_float(row, "prior_score", 0.0),
                visited=(row.get("visited") or "").strip().lower() == "true",
                vertices=verts,
                brightness=_cell_float(row, "brightness"),
                area=_cell_float(row, "area"),
            ))
        feats = _load_feats(folder / "lm_feats.npy", len(squares), len(SQUARE_FEATURES))
        for r, f in zip(squares, feats, strict=True):
            r.features = f
    if mm.exists():
        for row in _read_csv(mm, ("hole_id", "center_x", "center_y")):
            holes.append(HoleRow(
                hole_id=_cell_int(row, "hole_id"),
                mm_img_id=int(_cell_float(row, "mm_img_id", -1)),
                square_id=int(_cell_float(row, "square_id", -1)),
                grid_id=int(_cell_float(row, "grid_id", -1)),
                center_x=int(_cell_float(row, "center_x")),
                center_y=int(_cell_float(row, "center_y")),
                radius=_cell_float(row, "radius"),
                prior_score=_cell_float(row, "prior_score", 0.0),
                visited=(row.get("visited") or "").strip().lower() == "true",
                ctf=_cell_float(row, "ctf"),
                ice_thickness=_cell_float(row, "ice_thickness"),
            ))
        feats = _load_feats(folder / "mm_feats.npy", len(holes), len(HOLE_FEATURES))
        for r, f in zip(holes, feats, strict=True):
            r.features = f
    return squares, holes


def write_state(folder: Path, squares: list[SquareRow], holes: list[HoleRow]) -> None:
    """``save_state``: the two tables (raw prior scores, no GP column) and the feature arrays."""
    from ..atomic import write_atomic

    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / "lmstate.csv", squares_csv(squares))
    write_atomic(folder / "mmstate.csv", holes_csv(holes))
    for name, rows, width in (("lm_feats.npy", squares, len(SQUARE_FEATURES)),
                              ("mm_feats.npy", holes, len(HOLE_FEATURES))):
        feats = np.asarray([r.features for r in rows], dtype=np.float32).reshape(len(rows), width)
        buf = io.BytesIO()
        np.save(buf, feats, allow_pickle=False)
        write_atomic(folder / name, buf.getvalue())
