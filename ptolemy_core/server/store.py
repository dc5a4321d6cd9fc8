"""Durable session state: one SQLite file in the state directory.

Every change is one transaction (WAL journal, ``synchronous=FULL``), so a
crash or restart loses nothing that a client was told had happened.
"""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import numpy as np

from .tables import HoleRow, SquareRow

DB_NAME = "ptolemy-server.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS squares (
    hist INTEGER NOT NULL, square_id INTEGER NOT NULL, tile_id INTEGER, grid_id INTEGER,
    center_x INTEGER, center_y INTEGER, prior_score REAL, visited INTEGER, vertices TEXT,
    brightness REAL, area REAL, feats BLOB, PRIMARY KEY (hist, square_id));
CREATE TABLE IF NOT EXISTS holes (
    hist INTEGER NOT NULL, hole_id INTEGER NOT NULL, mm_img_id INTEGER, square_id INTEGER,
    grid_id INTEGER, center_x INTEGER, center_y INTEGER, radius REAL, prior_score REAL,
    visited INTEGER, ctf REAL, ice REAL, feats BLOB, PRIMARY KEY (hist, hole_id));
"""


def _real(v: float):
    return None if v is None or not math.isfinite(float(v)) else float(v)


def _unreal(v) -> float:
    return math.nan if v is None else float(v)


def _blob(a: np.ndarray) -> bytes:
    return np.asarray(a, dtype="<f8").tobytes()


def _unblob(b: bytes | None, width: int) -> np.ndarray:
    if not b:
        return np.full(width, np.nan)
    return np.frombuffer(b, dtype="<f8").copy()


class Store:
    """SQLite persistence of the server's tables and settings."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / DB_NAME
        # One connection, used only under the server's state lock.
        self.conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.executescript(_SCHEMA)

    def close(self) -> None:
        self.conn.close()

    # ------------------------------------------------------------- reading
    def meta(self) -> dict[str, object]:
        return {k: json.loads(v) for k, v in self.conn.execute("SELECT key, value FROM meta")}

    def squares(self, hist: bool, width: int) -> list[SquareRow]:
        rows = self.conn.execute(
            "SELECT square_id, tile_id, grid_id, center_x, center_y, prior_score, visited, vertices,"
            " brightness, area, feats FROM squares WHERE hist=? ORDER BY rowid", (int(hist),))
        return [SquareRow(r[0], r[1], r[2], r[3], r[4], _unreal(r[5]), bool(r[6]),
                          [_unreal(v) for v in json.loads(r[7])], _unreal(r[8]), _unreal(r[9]),
                          _unblob(r[10], width)) for r in rows]

    def holes(self, hist: bool, width: int) -> list[HoleRow]:
        rows = self.conn.execute(
            "SELECT hole_id, mm_img_id, square_id, grid_id, center_x, center_y, radius, prior_score,"
            " visited, ctf, ice, feats FROM holes WHERE hist=? ORDER BY rowid", (int(hist),))
        return [HoleRow(r[0], r[1], r[2], r[3], r[4], r[5], _unreal(r[6]), _unreal(r[7]), bool(r[8]),
                        _unreal(r[9]), _unreal(r[10]), _unblob(r[11], width)) for r in rows]

    # ------------------------------------------------------------- writing
    def _insert_squares(self, rows: list[SquareRow], hist: bool) -> None:
        self.conn.executemany(
            "INSERT INTO squares VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            [(int(hist), r.square_id, r.tile_id, r.grid_id, int(r.center_x), int(r.center_y),
              _real(r.prior_score), int(r.visited), json.dumps([_real(v) for v in r.vertices]),
              _real(r.brightness), _real(r.area), _blob(r.features)) for r in rows])

    def _insert_holes(self, rows: list[HoleRow], hist: bool) -> None:
        self.conn.executemany(
            "INSERT INTO holes VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [(int(hist), r.hole_id, r.mm_img_id, r.square_id, r.grid_id, int(r.center_x),
              int(r.center_y), _real(r.radius), _real(r.prior_score), int(r.visited), _real(r.ctf),
              _real(r.ice_thickness), _blob(r.features)) for r in rows])

    def _set_meta(self, values: dict[str, object]) -> None:
        self.conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                              [(k, json.dumps(v)) for k, v in values.items()])

    def add(self, *, squares=(), holes=(), meta=None) -> None:
        """Append current-session rows (and meta) in one transaction."""
        with self.conn:
            self.conn.execute("BEGIN")
            self._insert_squares(list(squares), False)
            self._insert_holes(list(holes), False)
            if meta:
                self._set_meta(meta)

    def visit(self, holes: list[HoleRow], square_ids: list[int], meta=None) -> None:
        """Record visited holes and their squares in one transaction."""
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.executemany(
                "UPDATE holes SET visited=1, ctf=?, ice=? WHERE hist=0 AND hole_id=?",
                [(_real(h.ctf), _real(h.ice_thickness), h.hole_id) for h in holes])
            self.conn.executemany("UPDATE squares SET visited=1 WHERE hist=0 AND square_id=?",
                                  [(int(s),) for s in square_ids])
            if meta:
                self._set_meta(meta)

    def set_meta(self, meta: dict[str, object]) -> None:
        with self.conn:
            self.conn.execute("BEGIN")
            self._set_meta(meta)

    def replace_all(self, *, squares, holes, hist_squares, hist_holes, meta) -> None:
        """Rewrite everything (new session, state loading) in one transaction."""
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.execute("DELETE FROM squares")
            self.conn.execute("DELETE FROM holes")
            self.conn.execute("DELETE FROM meta")
            self._insert_squares(squares, False)
            self._insert_holes(holes, False)
            self._insert_squares(hist_squares, True)
            self._insert_holes(hist_holes, True)
            self._set_meta(meta)
