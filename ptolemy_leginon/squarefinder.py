"""``PtolemySquareFinder``: the atlas square finder node (a ``MosaicScoreTargetFinder``).

The node logic lives in :class:`SquareNodeMixin`; :mod:`ptolemy_leginon.register`
combines it with Leginon's ``mosaicexternalfinder.MosaicScoreTargetFinder``.
Everything that is not a call into Leginon is a plain function here or in
:mod:`ptolemy_leginon.atlas` and is tested without Leginon.

What the node does differently from ``MosaicScoreTargetFinder``:

* our square finder runs **in the node**, on each tile as it arrives (one
  background thread; no script, no Python start per tile);
* squares seen on overlapping tiles are merged (union of outlines, area-weighted
  centre of the complete views, max score) -- :func:`ptolemy_leginon.atlas.merge_squares`;
* blob ``stats`` carry ``center`` (row, col), ``n``/``size`` (area), ``mean``
  (brightness), ``score``, ``signal`` (area x brightness), ``ice_thickness_nm``,
  ``relative_thickness`` and ``rank``, so every ``filter-key`` works;
* ``target grouping`` is applied by :func:`ptolemy_core.screening.select`:
  deterministic, highest score first in every class, and never fewer squares
  than ``total targets`` while enough pass the filter (``randomize blobs`` is ignored);
* ``SquareStatsData`` records get their real ``good`` value;
* the published target of a square is computed on the tile it maps to from its
  exact mosaic position (``delta row/col`` to within float precision);
* any exception in our code is logged with context and leaves an empty target
  list; the node keeps running.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ptolemy_core.screening import select
from ptolemy_core.targets import Target

from .atlas import MosaicSquare, squares_from_tiles
from .convert import TilePlacement, mosaic_to_display
from .settings import FILTER_KEYS, calibrated_pixel_size_nm

log = logging.getLogger(__name__)

#: Leginon ``group method`` -> ours (``jenks`` needs an optional package in Leginon; count classes instead).
GROUP_METHODS = {"value delta": "value delta", "target count": "target count", "jenks": "target count"}


def default_square_finder(image: np.ndarray, pixel_size_nm: float | None, scorer: str) -> list[Target]:
    """Run ``ptolemy_core.find_squares`` on one tile (imported on first use)."""
    from ptolemy_core import find_squares

    return list(find_squares(image, pixel_size_nm=pixel_size_nm, scorer=scorer).targets)


class TileFinder:
    """Runs the square finder on tiles in one background thread, results by tile key.

    Parameters
    ----------
    finder : callable, optional
        ``(image, pixel_size_nm, scorer) -> list[Target]``; default :func:`default_square_finder`.
    logger : logging.Logger, optional
        Where failures are reported (with the tile and the exception).
    """

    def __init__(
        self, finder: Callable[..., list[Target]] | None = None, logger: logging.Logger | None = None
    ) -> None:
        self.finder = finder or default_square_finder
        self.logger = logger or log
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="ptolemy-tiles")
        self._jobs: dict[Any, concurrent.futures.Future] = {}
        self._lock = threading.Lock()

    def submit(
        self,
        key: Any,
        image: np.ndarray,
        pixel_size_nm: float | None = None,
        scorer: str = "auto",
        label: str = "",
    ) -> None:
        """Start finding squares on one tile (a second submit of the same key is ignored)."""
        with self._lock:
            if key in self._jobs:
                return
            self._jobs[key] = self._pool.submit(self._run, key, image, pixel_size_nm, scorer, label)

    def _run(self, key, image, pixel_size_nm, scorer, label) -> list[Target]:
        try:
            return list(self.finder(np.asarray(image), pixel_size_nm, scorer))
        except Exception as exc:  # noqa: BLE001 - one bad tile must not stop the atlas
            shape = getattr(image, "shape", None)
            self.logger.error(
                "Ptolemy square finder failed on tile %s%s (shape %s): %s: %s",
                key,
                f" ({label})" if label else "",
                shape,
                type(exc).__name__,
                exc,
            )
            return []

    def results(
        self, keys: Sequence[Any] | None = None, timeout: float | None = None
    ) -> dict[Any, list[Target]]:
        """Wait for the given tiles (default: all submitted) and return their squares."""
        with self._lock:
            jobs = dict(self._jobs) if keys is None else {k: self._jobs[k] for k in keys if k in self._jobs}
        return {k: f.result(timeout=timeout) for k, f in jobs.items()}

    def clear(self) -> None:
        """Forget every tile (pending work finishes in the background and is dropped)."""
        with self._lock:
            self._jobs = {}


def blob_info(square: MosaicSquare, finder_scale: float, tile_image: Any = None) -> dict[str, Any]:
    """The ``info_dict`` of a ``statssquare.StatsBlob`` for one square.

    ``center`` and ``vertices`` are ``(row, col)`` on the finder mosaic
    (mosaic pixels x ``finder_scale``); ``area`` stays in tile pixels², the unit
    of Leginon's ``Size`` filter.
    """
    s = float(finder_scale)
    return {
        "center": (square.center[0] * s, square.center[1] * s),
        "vertices": [(v[0] * s, v[1] * s) for v in square.vertices],
        "area": float(square.area),
        "brightness": float(square.brightness),
        "score": float(square.score),
        "tile_image": tile_image,
        "squares": [],
        "signal": float(square.area) * float(square.brightness),
    }


def extra_stats(square: MosaicSquare) -> dict[str, Any]:
    """Stats Leginon's ``StatsBlob`` does not fill: ``signal`` (area x brightness, Leginon's
    definition), ice thickness, ``rank`` and the tile mapping."""
    f = square.features
    return {
        "signal": float(square.area) * float(square.brightness),
        "ice_thickness_nm": f.get("ice_thickness_nm"),
        "relative_thickness": f.get("relative_thickness"),
        "rank": f.get("rank"),
        "n_views": f.get("n_views", 1),
    }


def filter_mask(stats: Sequence[dict[str, Any]], filter_key: str, vmin: float, vmax: float) -> list[bool]:
    """``filter-min <= stats[key] <= filter-max`` for each blob (a missing/NaN value fails).

    Raises
    ------
    KeyError
        ``filter_key`` is not one of Size, Signal, Score, Mean.
    """
    key = FILTER_KEYS[filter_key]
    out = []
    for st in stats:
        v = st.get(key)
        ok = (
            v is not None
            and isinstance(v, (int, float))
            and math.isfinite(float(v))
            and float(vmin) <= float(v) <= float(vmax)
        )
        out.append(bool(ok))
    return out


def sample_indices(
    stats: Sequence[dict[str, Any]],
    total: int,
    *,
    filter_key: str = "Score",
    classes: int = 1,
    group_method: str = "target count",
    value_range: tuple[float, float] | None = None,
) -> list[int]:
    """Which blobs to target: ``total`` spread over ``classes`` of the filter-key value,
    highest score first in each class (see :func:`ptolemy_core.screening.select`)."""
    key = FILTER_KEYS.get(filter_key, "score")
    targets = [
        Target(
            "square",
            tuple(st["center"]),
            (),
            float(st.get("size", 0.0)),
            float(st.get("score", 0.0)),
            float(st.get("mean", float("nan"))),
        )
        for st in stats
    ]
    values = [float(st[key]) if st.get(key) is not None else float("nan") for st in stats]
    method = GROUP_METHODS.get(group_method, "target count")
    picks = select(
        targets,
        int(total),
        n_classes=max(1, int(classes)),
        group_method=method,
        value_range=value_range if method == "value delta" else None,
        min_score=-math.inf,
        values=values,
    )
    return [p.index for p in picks]


def match_display_target(
    xy: Sequence[float], targets: dict[tuple[float, float], Any], tolerance: float = 1.0
) -> Any:
    """The square displayed at ``xy`` (within ``tolerance`` display pixels), or None."""
    best, best_d = None, tolerance
    for (x, y), value in targets.items():
        d = math.hypot(float(xy[0]) - x, float(xy[1]) - y)
        if d <= best_d:
            best, best_d = value, d
    return best


def tile_placements(tilemap: dict[Any, Any]) -> list[TilePlacement]:
    """``TilePlacement`` of every Leginon mosaic tile (``tile.corner_pos``, ``tile.image.shape``)."""
    return [
        TilePlacement(
            key,
            (float(t.corner_pos[0]), float(t.corner_pos[1])),
            (int(t.image.shape[0]), int(t.image.shape[1])),
        )
        for key, t in tilemap.items()
    ]


class SquareNodeMixin:
    """Overrides of ``MosaicScoreTargetFinder`` (combined with it in :mod:`ptolemy_leginon.register`).

    The factory sets ``_leginon`` (the Leginon modules used) and
    ``_click_add_tile`` (``MosaicClickTargetFinder._addTile``).
    """

    _leginon: dict[str, Any] = {}
    _click_add_tile: Callable[..., Any] | None = None
    #: injectable for tests: ``(image, pixel_size_nm, scorer) -> list[Target]``
    ptolemy_finder: Callable[..., list[Target]] | None = None

    # ---------------------------------------------------------------- state
    def _ptolemy_tiles(self) -> TileFinder:
        tf = self.__dict__.get("_ptolemy_tilefinder")
        if tf is None:
            tf = TileFinder(self.ptolemy_finder, self.logger)
            self.__dict__["_ptolemy_tilefinder"] = tf
        return tf

    def _ptolemy_pixel_size_nm(self, imagedata: Any) -> float | None:
        # not every Leginon finder node has calibration clients: a missing one means "unknown"
        return calibrated_pixel_size_nm(self.settings, getattr(self, "calclients", None), imagedata)

    # ---------------------------------------------------------------- Leginon hooks
    def hasValidScoringScript(self) -> bool:
        """No script: the finder runs in the node."""
        self.script_exists = True
        return True

    def _addTile(self, imagedata: Any) -> None:
        """Add the tile to the mosaics (Leginon) and start finding its squares."""
        type(self)._click_add_tile(self, imagedata)
        try:
            self._ptolemy_tiles().submit(
                imagedata.dbid,
                imagedata["image"],
                self._ptolemy_pixel_size_nm(imagedata),
                self.settings.get("ptolemy scorer", "auto"),
                label=str(imagedata["filename"]),
            )
        except Exception as exc:  # noqa: BLE001
            self.logger.error(
                "Ptolemy square finder could not start on tile %s: %s: %s",
                getattr(imagedata, "dbid", "?"),
                type(exc).__name__,
                exc,
            )

    def clearTiles(self) -> None:
        super().clearTiles()
        self.__dict__.pop("_ptolemy_squares", None)
        self.__dict__["_ptolemy_display"] = {}
        tf = self.__dict__.get("_ptolemy_tilefinder")
        if tf is not None:
            tf.clear()

    def _ptolemy_rescore(self):
        """The interpretable model's visibility re-score for squares cut by tile edges (None for the CNN)."""
        if self.settings.get("ptolemy scorer", "auto") not in ("auto", "interpretable"):
            return None
        from ptolemy_core.squares.score import rescore_visibility

        return rescore_visibility

    def findSquareBlobs(self) -> list[Any]:
        """Gather the tiles' squares, merge them on the mosaic; ``StatsBlob`` s in the finder-mosaic frame."""
        statssquare = self._leginon["statssquare"]
        tilemap = dict(self.tilemap)
        if not tilemap:
            self.finder_blobs = []
            return []
        found = self._ptolemy_tiles().results(list(tilemap.keys()))
        for key, tile in tilemap.items():
            # tiles added before this node existed (or by a reload) are found now
            if key not in found:
                self._ptolemy_tiles().submit(
                    key, tile.image, None, self.settings.get("ptolemy scorer", "auto")
                )
        found.update(self._ptolemy_tiles().results(list(tilemap.keys())))
        squares = squares_from_tiles(found, tile_placements(tilemap), self._ptolemy_rescore())
        scale = self.finder_mosaic.scale or 1.0
        blobs = []
        for i, sq in enumerate(squares):
            tile = tilemap.get(sq.tile_key)
            info = blob_info(sq, scale, getattr(tile, "imagedata", None))
            blob = statssquare.StatsBlob(info, i)
            blob.stats.update(extra_stats(sq))
            blob.ptolemy_square = sq
            blobs.append(blob)
        self.__dict__["_ptolemy_squares"] = squares
        self.finder_blobs = blobs
        self.mblob_values = [b.info_dict for b in blobs]
        self.logger.info(
            "Ptolemy: %d squares on %d tiles (%d before merging overlaps)",
            len(squares),
            len(tilemap),
            sum(len(v) for v in found.values()),
        )
        return list(blobs)

    def setFilterSettings(self, example_blobs: Sequence[Any]) -> None:
        """Take filter-min/max from the user's example squares (Leginon's version raises on any example)."""
        if not example_blobs:
            return
        key = FILTER_KEYS.get(self.settings["filter-key"])
        values = [b.stats.get(key) for b in example_blobs if key is not None]
        values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
        if not values:
            self.logger.error(
                "Filter key %s not found in the example squares' stats", self.settings["filter-key"]
            )
            return
        self.settings["filter-min"] = min(values)
        self.settings["filter-max"] = max(values)
        self.setSettings(self.settings, False)

    def _ptolemy_on_edge(self, center: Sequence[float]) -> bool:
        edge = self.finder_edge_mosaicimage
        if edge is None:
            return False
        r, c = int(round(center[0])), int(round(center[1]))
        if not (0 <= r < edge.shape[0] and 0 <= c < edge.shape[1]):
            return True
        return bool(edge[r, c])

    def filterStats(self, blobs: Sequence[Any]) -> list[Any]:
        """Keep blobs with ``filter-min <= stats[filter-key] <= filter-max`` off the atlas edge."""
        leginondata = self._leginon["leginondata"]
        try:
            self.sq_prefs = self.storeScoreSquareFinderPrefs()
        except Exception as exc:  # noqa: BLE001 - bookkeeping must not stop targeting
            self.logger.warning("could not store square finder prefs: %s", exc)
            self.sq_prefs = None
        fkey = self.settings["filter-key"]
        if fkey not in FILTER_KEYS:
            self.logger.error("Filter key %s is not one of %s", fkey, ", ".join(FILTER_KEYS))
            return []
        passed = filter_mask(
            [b.stats for b in blobs], fkey, self.settings["filter-min"], self.settings["filter-max"]
        )
        good = []
        for blob, ok in zip(blobs, passed, strict=False):
            on_edge = self._ptolemy_on_edge(blob.stats["center"])
            is_good = bool(ok and not on_edge)
            blob.stats["good"] = is_good
            blob.stats["on_edge"] = on_edge
            if is_good:
                good.append(blob)
            try:
                rc = blob.stats["center"]
                stats = leginondata.SquareStatsData(
                    session=self.session,
                    score_prefs=self.sq_prefs,
                    row=int(round(rc[0])),
                    column=int(round(rc[1])),
                    mean=float(blob.stats["mean"]),
                    size=float(blob.stats["size"]),
                    score=float(blob.stats["score"]),
                    tile_image=blob.tile_image,
                )
                stats["good"] = is_good
                stats["on_edge"] = on_edge
                stats.insert()
            except Exception as exc:  # noqa: BLE001
                self.logger.debug("SquareStatsData not stored: %s", exc)
        self.logger.info(
            "Ptolemy: %d of %d squares pass %s in [%s, %s] and are off the atlas edge",
            len(good),
            len(blobs),
            fkey,
            self.settings["filter-min"],
            self.settings["filter-max"],
        )
        return good

    def sampleBlobs(self, blobs: Sequence[Any], total_targets_need: int) -> list[Any]:
        """``target grouping``: deterministic, highest score first in each class of the filter-key value."""
        grouping = self.settings["target grouping"]
        if grouping.get("randomize blobs"):
            self.logger.info("Ptolemy picks the highest scores; 'randomize blobs' is ignored")
        idx = sample_indices(
            [b.stats for b in blobs],
            total_targets_need,
            filter_key=self.settings["filter-key"],
            classes=grouping.get("classes", 1),
            group_method=grouping.get("group method", ""),
            value_range=(self.settings["filter-min"], self.settings["filter-max"]),
        )
        return [blobs[i] for i in idx]

    def blobToDisplayTarget(self, blob: Any, finder_scale: float) -> tuple[float, float]:
        """Display ``(x, y)`` from the square's exact mosaic position (no finder-scale rounding)."""
        sq = getattr(blob, "ptolemy_square", None)
        if sq is None or not self.mosaic.scale:
            return super().blobToDisplayTarget(blob, finder_scale)
        xy = mosaic_to_display(sq.center, self.mosaic.scale)
        self.__dict__.setdefault("_ptolemy_display", {})[xy] = sq
        return xy

    def _mosaicToTarget(self, row: float, col: float) -> tuple[Any, float, float]:
        """Tile and ``delta row/col`` of a displayed position: exact for our squares, else Leginon's math."""
        sq = match_display_target((col, row), self.__dict__.get("_ptolemy_display", {}))
        if sq is not None and sq.tile_key in self.tilemap:
            tile = self.tilemap[sq.tile_key]
            return tile.imagedata, float(sq.delta[0]), float(sq.delta[1])
        return super()._mosaicToTarget(row, col)

    def autoTargetFinder(self) -> None:
        """Leginon's auto finder; any exception is logged with context and leaves no targets."""
        try:
            super().autoTargetFinder()
        except Exception as exc:  # noqa: BLE001 - an unattended cassette must go on
            self.logger.error(
                "Ptolemy square targeting failed on atlas %s (%d tiles): %s: %s",
                getattr(self, "mosaicname", None),
                len(getattr(self, "tilemap", {}) or {}),
                type(exc).__name__,
                exc,
            )
            try:
                self.setTargets([], "acquisition")
            except Exception:  # noqa: BLE001
                pass
