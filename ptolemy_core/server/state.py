"""The learning server's session state: tables, ids, ranker, persistence, locking.

Everything the HTTP layer does goes through :class:`ServerState`. CPU-heavy work
(image decoding, the finders) runs outside the lock; only the id assignment and
the table/ranker/SQLite updates are serialised, so concurrent tile pushes get
stable, gap-free ids in arrival order.
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import numpy as np

from ..adaptive import AdaptiveSettings, SessionRanker
from ..errors import PtolemyInputError, PtolemyUnavailableError
from .shrink import shrink_factor, shrink_offset
from .store import Store
from .tables import (
    HOLE_FEATURES,
    SQUARE_FEATURES,
    HoleRow,
    SquareRow,
    holes_csv,
    read_state,
    squares_csv,
    write_state,
)


class ApiError(Exception):
    """An error with an HTTP status and a one-line reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
        self.status = status


def run_find_squares(image: np.ndarray):
    """Our square finder (contract 4); a separate function so tests can patch it."""
    try:
        from ..squares import find_squares
    except ImportError as exc:
        raise PtolemyUnavailableError(f"the square finder is not available: {exc}") from None
    return find_squares(image)


def run_find_holes(image: np.ndarray, i0: float | None):
    """Our hole finder (contract 5); a separate function so tests can patch it."""
    try:
        from ..holes import find_holes
    except ImportError as exc:
        raise PtolemyUnavailableError(f"the hole finder is not available: {exc}") from None
    return find_holes(image, i0=i0)


def leginon_shrink(shape) -> tuple[int, tuple[int, int]]:
    """``(b, (row offset, col offset))`` of Leginon's shrunk copy of a medium-mag image.

    ``PtolemyMmTargetFinder`` reads the server's hole centres in that frame
    (``ptolemy-server-api.md`` §5; ``row = row_shrunk * b + offset_row``), so the
    server returns them there; for images <= 1440 px it is the pushed array's own
    pixel frame, as the reference server returns. See :mod:`ptolemy_core.server.shrink`.
    """
    return shrink_factor(shape), shrink_offset(shape)


def _feature(features: dict, key: str) -> float:
    value = features.get(key)
    try:
        v = float(value)
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) else math.nan


def plausible_i0(value: float, image: np.ndarray) -> float | None:
    """Leginon's hand-set vacuum intensity if it is plausible for this image, else None.

    Leginon's default ``lattice zero thickness`` is 1000 whatever the camera; a
    vacuum intensity below 0.8× the image's 99th percentile or above 20× it
    cannot be right, so the finder's own automatic I0 is used instead.
    """
    if value is None or not math.isfinite(value) or value <= 0:
        return None
    p99 = float(np.percentile(image[:: max(1, image.shape[0] // 256), :: max(1, image.shape[1] // 256)], 99))
    if p99 <= 0 or value < 0.8 * p99 or value > 20 * p99:
        return None
    return float(value)


class ServerState:
    """Session state of ``ptolemy serve`` (see the module docstring).

    Parameters
    ----------
    state_dir : path-like
        Where the SQLite file, saved states and logs live; state paths in
        requests are confined to it.
    """

    def __init__(self, state_dir: str | Path) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.store = Store(self.state_dir)
        meta = self.store.meta()
        self.session = int(meta.get("session", 0))
        self.noice = float(meta.get("noice", -1.0))
        self.save_path = meta.get("save_state_path")
        self.i0_ref = meta.get("i0_ref")
        self.settings = AdaptiveSettings.from_dict(meta.get("settings", {}))
        self.squares = self.store.squares(False, len(SQUARE_FEATURES))
        self.holes = self.store.holes(False, len(HOLE_FEATURES))
        self.hist_squares = self.store.squares(True, len(SQUARE_FEATURES))
        self.hist_holes = self.store.holes(True, len(HOLE_FEATURES))
        self.active: list[int] = [int(i) for i in meta.get("active", [])]
        self._reindex()

    # ------------------------------------------------------------ internals
    def _reindex(self) -> None:
        """Rebuild id maps, next ids and the ranker from the tables."""
        self.sq_by_id = {r.square_id: r for r in self.squares}
        self.h_by_id = {r.hole_id: r for r in self.holes}
        self.next_square = max(self.sq_by_id, default=-1) + 1
        self.next_hole = max(self.h_by_id, default=-1) + 1
        self.active = [i for i in self.active if i in self.h_by_id and not self.h_by_id[i].visited]
        self.ranker = SessionRanker(self.settings)
        # Historical rows live in the ranker under negative ids (training data only).
        self._add_squares_to_ranker(self.hist_squares, hist=True)
        self._add_squares_to_ranker(self.squares, hist=False)
        self._add_holes_to_ranker(self.hist_holes, hist=True)
        self._add_holes_to_ranker(self.holes, hist=False)
        for hist, rows in ((True, self.hist_holes), (False, self.holes)):
            done = [r for r in rows if r.visited]
            if done:
                self.ranker.record_visits([self._hid(r.hole_id, hist) for r in done],
                                          [r.ctf for r in done], [r.ice_thickness for r in done])

    @staticmethod
    def _sid(square_id: int, hist: bool) -> int:
        return -1 - square_id if hist else square_id

    @staticmethod
    def _hid(hole_id: int, hist: bool) -> int:
        return -1 - hole_id if hist else hole_id

    def _add_squares_to_ranker(self, rows: list[SquareRow], hist: bool) -> None:
        if rows:
            self.ranker.add_squares([self._sid(r.square_id, hist) for r in rows],
                                    np.asarray([r.features for r in rows], dtype=np.float64),
                                    [r.prior_score for r in rows])

    def _add_holes_to_ranker(self, rows: list[HoleRow], hist: bool) -> None:
        if rows:
            feats = np.asarray([r.features for r in rows], dtype=np.float64)
            self.ranker.add_holes([self._hid(r.hole_id, hist) for r in rows],
                                  square_ids=[self._sid(r.square_id, hist) for r in rows],
                                  intensity=feats[:, HOLE_FEATURES.index("mean")],
                                  i0=feats[:, HOLE_FEATURES.index("i0")],
                                  prior=[r.prior_score for r in rows])

    def _meta(self) -> dict[str, object]:
        return {"session": self.session, "noice": self.noice, "save_state_path": self.save_path,
                "i0_ref": self.i0_ref,
                "settings": self.settings.to_dict(), "active": self.active}

    def _persist_all(self) -> None:
        self.store.replace_all(squares=self.squares, holes=self.holes, hist_squares=self.hist_squares,
                               hist_holes=self.hist_holes, meta=self._meta())

    def _autosave(self) -> None:
        if self.save_path:
            write_state(self.confine(self.save_path), self.squares, self.holes)

    def confine(self, path) -> Path:
        """Resolve a state path inside the state directory, else a 403 ApiError."""
        if not isinstance(path, str) or not path.strip() or "\x00" in path:
            raise ApiError(400, "path must be a non-empty string")
        p = Path(path)
        resolved = (p if p.is_absolute() else self.state_dir / p).resolve()
        if resolved != self.state_dir and not resolved.is_relative_to(self.state_dir):
            raise ApiError(403, f"path {path!r} is outside the server's state directory")
        return resolved

    # --------------------------------------------------------------- session
    def initialize(self, historical=(), new_state_path=None, save_state_path=None) -> None:
        """``initialize_new_session``: empty tables, ids restart at 0, I0 unset."""
        # Read everything first, so a bad path changes nothing.
        hist = [read_state(self.confine(p)) for p in historical]
        new = read_state(self.confine(new_state_path)) if new_state_path else None
        if save_state_path:
            self.confine(save_state_path)
        with self.lock:
            self.session += 1
            self.noice = -1.0
            self.i0_ref = None
            self.save_path = save_state_path or None
            self.squares, self.holes = (list(new[0]), list(new[1])) if new else ([], [])
            self.hist_squares, self.hist_holes = [], []
            for sq, h in hist:
                self._append_historical(sq, h)
            self.active = []
            self._reindex()
            self._persist_all()

    def _append_historical(self, squares: list[SquareRow], holes: list[HoleRow]) -> None:
        # Renumber so several historical states never collide.
        base_s = len(self.hist_squares)
        base_h = len(self.hist_holes)
        smap = {r.square_id: base_s + k for k, r in enumerate(squares)}
        for k, r in enumerate(squares):
            r.square_id = base_s + k
        for k, r in enumerate(holes):
            r.hole_id = base_h + k
            r.square_id = smap.get(r.square_id, -1_000_000 - k)
        self.hist_squares.extend(squares)
        self.hist_holes.extend(holes)

    def load_historical(self, paths) -> None:
        states = [read_state(self.confine(p)) for p in paths]
        with self.lock:
            for sq, h in states:
                self._append_historical(sq, h)
            self._reindex()
            self._persist_all()

    def clear_historical(self) -> None:
        with self.lock:
            self.hist_squares, self.hist_holes = [], []
            self._reindex()
            self._persist_all()

    def clear_current(self) -> None:
        with self.lock:
            self.squares, self.holes, self.active = [], [], []
            self._reindex()
            self._persist_all()

    def overwrite_current(self, path) -> None:
        squares, holes = read_state(self.confine(path))
        ids = [r.square_id for r in squares]
        hids = [r.hole_id for r in holes]
        if len(set(ids)) != len(ids) or len(set(hids)) != len(hids):
            raise ApiError(400, "state file has duplicate ids")
        with self.lock:
            self.squares, self.holes, self.active = squares, holes, []
            self._reindex()
            self._persist_all()

    def append_current(self, path) -> None:
        squares, holes = read_state(self.confine(path))
        with self.lock:
            smap = {}
            for r in squares:
                smap[r.square_id] = self.next_square
                r.square_id = self.next_square
                self.next_square += 1
            for r in holes:
                r.hole_id = self.next_hole
                self.next_hole += 1
                r.square_id = smap.get(r.square_id, r.square_id)
            self.squares.extend(squares)
            self.holes.extend(holes)
            self._reindex()
            self._persist_all()

    def set_config(self, path) -> None:
        p = self.confine(path)
        try:
            values = json.loads(p.read_text())
        except OSError as exc:
            raise ApiError(404, f"cannot read config {path}: {exc.strerror or exc}") from None
        except json.JSONDecodeError as exc:
            raise ApiError(400, f"config {path} is not JSON: {exc.msg}") from None
        settings = AdaptiveSettings.from_dict(values.get("adaptive", values))
        with self.lock:
            self.settings = settings
            self._reindex()
            self.store.set_meta(self._meta())

    def save(self, path) -> Path:
        folder = self.confine(path)
        with self.lock:
            write_state(folder, self.squares, self.holes)
        return folder

    def set_noice(self, value: float) -> None:
        with self.lock:
            self.noice = float(value)
            self.store.set_meta({"noice": self.noice})

    # --------------------------------------------------------------- squares
    def square_rows_from_result(self, result, grid_id: int, tile_id: int) -> list[SquareRow]:
        """Rows (ids unassigned) for the squares our finder found on one tile."""
        rows = []
        for t in result.targets:
            verts = [float(v) for r, c in t.vertices for v in (c, r)]
            f = t.features
            rows.append(SquareRow(
                square_id=-1, tile_id=tile_id, grid_id=grid_id,
                center_x=int(round(t.center[1])), center_y=int(round(t.center[0])),
                prior_score=float(np.clip(t.score, 0.0, 1.0)), visited=False, vertices=verts,
                brightness=float(t.brightness), area=float(t.area),
                features=np.asarray([float(t.brightness), _feature(f, "std"), float(t.area),
                                     _feature(f, "relative_thickness")], dtype=np.float64)))
        return rows

    def add_squares(self, rows: list[SquareRow]) -> list[int]:
        with self.lock:
            for r in rows:
                r.square_id = self.next_square
                self.next_square += 1
                self.squares.append(r)
                self.sq_by_id[r.square_id] = r
            self._add_squares_to_ranker(rows, hist=False)
            self.store.add(squares=rows)
            self._autosave()
            return [r.square_id for r in rows]

    def lm_state_csv(self) -> str:
        with self.lock:
            return squares_csv(self.squares)

    def select_next_square(self, grid_id: int) -> str:
        with self.lock:
            if not self.squares:
                raise ApiError(409, "no squares in the current session (push_lm first)")
            rows = [r for r in self.squares if not r.visited and (grid_id == -1 or r.grid_id == grid_id)]
            if not rows:
                return squares_csv([], gp_probs=[])
            scores = self.ranker.square_scores([r.square_id for r in rows])
            return squares_csv(rows, gp_probs=[float(v) for v in scores.ucb])

    def visit_square(self, square_id: int) -> None:
        with self.lock:
            row = self.sq_by_id.get(square_id)
            if row is None:
                raise ApiError(404, f"unknown square id {square_id}")
            row.visited = True
            self.ranker.mark_square_visited(square_id)
            self.store.visit([], [square_id])
            self._autosave()

    # ----------------------------------------------------------------- holes
    def hole_i0(self, image: np.ndarray) -> float | None:
        with self.lock:
            value = self.noice
        return plausible_i0(value, image)

    def hole_rows_from_result(self, result, grid_id: int, square_id: int, mm_img_id: int,
                              shape=None) -> list[HoleRow]:
        """Rows (ids unassigned) for the holes found on one medium-mag image.

        ``shape`` = the pushed image's (rows, cols): centres and radius are then
        given in Leginon's shrunk frame (:func:`leginon_shrink`), else in the
        finder's (full-resolution) pixels.
        """
        b, (off_r, off_c) = leginon_shrink(shape) if shape is not None else (1, (0, 0))
        i0 = float(result.i0) if getattr(result, "i0", None) is not None else math.nan
        means = []
        for t in result.targets:
            mean = _feature(t.features, "mean")
            means.append(mean if math.isfinite(mean) else float(t.brightness))
        if not (math.isfinite(i0) and i0 > 0):
            i0 = self._reference_i0(means)
        rows = []
        for t, mean in zip(result.targets, means, strict=True):
            f = t.features
            rows.append(HoleRow(
                hole_id=-1, mm_img_id=mm_img_id, square_id=square_id, grid_id=grid_id,
                center_x=int(round((t.center[1] - off_c) / b)),
                center_y=int(round((t.center[0] - off_r) / b)),
                radius=_feature(f, "radius") / b, prior_score=float(np.clip(t.score, 0.0, 1.0)),
                features=np.asarray([mean, i0, _feature(f, "ice_thickness_nm"), _feature(f, "std")],
                                    dtype=np.float64)))
        return rows

    def _reference_i0(self, means: list[float]) -> float:
        """A session-wide stand-in vacuum intensity for images whose I0 is unknown.

        Fixed at the first such image (1.2 × its brightest hole) and kept for the
        session, so thickness estimates of different images stay comparable; the
        ice calibration's offset then absorbs its error (``λ ln k``).
        """
        with self.lock:
            if self.i0_ref is None:
                finite = [m for m in means if math.isfinite(m) and m > 0]
                if not finite:
                    return math.nan
                self.i0_ref = 1.2 * max(finite)
                self.store.set_meta({"i0_ref": self.i0_ref})
            return self.i0_ref

    def add_holes(self, rows: list[HoleRow], *, evaluate: bool = True) -> str | None:
        """Store the holes of one medium-mag image; return the hole CSV, best first."""
        with self.lock:
            for r in rows:
                r.hole_id = self.next_hole
                self.next_hole += 1
                self.holes.append(r)
                self.h_by_id[r.hole_id] = r
            self._add_holes_to_ranker(rows, hist=False)
            self.active = [r.hole_id for r in rows]
            self.store.add(holes=rows, meta={"active": self.active})
            self._autosave()
            if not evaluate:
                return None
            return self._holes_csv(rows, sort=True)

    def _holes_csv(self, rows: list[HoleRow], sort: bool = False) -> str:
        if not rows:
            return holes_csv([])
        scores = self.ranker.hole_scores([r.hole_id for r in rows])
        thick = self.ranker.hole_thickness([r.hole_id for r in rows])
        cal = self.ranker.ice_calibration()
        var = cal.rmse_nm**2 if math.isfinite(cal.rmse_nm) else math.nan
        order = np.argsort(-scores.ucb, kind="stable") if sort else np.arange(len(rows))
        return holes_csv([rows[k] for k in order], scores=[float(scores.ucb[k]) for k in order],
                         ice_pred=[float(thick[k]) for k in order], ice_var=[var] * len(rows))

    def mm_state_csv(self, ids=None, active: bool = False) -> str:
        with self.lock:
            if active:
                rows = [self.h_by_id[i] for i in self.active]
            elif ids is not None:
                missing = [i for i in ids if i not in self.h_by_id]
                if missing:
                    raise ApiError(404, f"unknown hole id(s): {missing[:10]}")
                rows = [self.h_by_id[i] for i in ids]
            else:
                rows = list(self.holes)
            return self._holes_csv(rows)

    def visit_holes(self, hole_ids: list[int], ctfs: list, ices: list) -> None:
        """``visit_holes``: CTF (Å) and ice (nm) per exposed hole, matched by position."""
        if not (len(hole_ids) == len(ctfs) == len(ices)):
            raise ApiError(400, f"hole_ids, ctfs and ice_thicknesses differ in length "
                                f"({len(hole_ids)}, {len(ctfs)}, {len(ices)})")
        with self.lock:
            missing = [i for i in hole_ids if i not in self.h_by_id]
            if missing:
                raise ApiError(404, f"unknown hole id(s): {missing[:10]}")
            rows, squares = [], []
            for hid, ctf, ice in zip(hole_ids, ctfs, ices, strict=True):
                r = self.h_by_id[hid]
                r.visited, r.ctf, r.ice_thickness = True, _num(ctf), _num(ice)
                rows.append(r)
                sq = self.sq_by_id.get(r.square_id)
                if sq is not None:
                    sq.visited = True
                    squares.append(sq.square_id)
            self.ranker.record_visits(hole_ids, [r.ctf for r in rows], [r.ice_thickness for r in rows])
            done = set(hole_ids)
            self.active = [i for i in self.active if i not in done]
            self.store.visit(rows, sorted(set(squares)), meta={"active": self.active})
            self._autosave()
            # Fit the models now: Leginon does not wait on visit_holes, but it does
            # wait on the next push_and_evaluate_mm / select_next_square.
            self.ranker.warm()

    # -------------------------------------------------------------- features
    def features(self, kind: str) -> dict:
        with self.lock:
            if kind == "lm":
                return {"columns": list(SQUARE_FEATURES), "ids": [r.square_id for r in self.squares],
                        "features": [_json_row(r.features) for r in self.squares]}
            return {"columns": list(HOLE_FEATURES), "ids": [r.hole_id for r in self.holes],
                    "features": [_json_row(r.features) for r in self.holes]}

    def health(self) -> dict:
        from .. import __version__

        with self.lock:
            return {"service": "ptolemy-leginon", "version": __version__, "status": "ok",
                    "session": self.session, "squares": len(self.squares), "holes": len(self.holes)}


def _num(value) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool):
        raise ApiError(400, "ctfs and ice_thicknesses must be numbers")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ApiError(400, f"{value!r} is not a number") from None
    return v if math.isfinite(v) else math.nan


def _json_row(a: np.ndarray) -> list:
    return [float(v) if math.isfinite(float(v)) else None for v in a]


__all__ = ["ApiError", "PtolemyInputError", "ServerState", "leginon_shrink", "plausible_i0"]
