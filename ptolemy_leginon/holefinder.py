"""``PtolemyHoleFinder``: the hole finder node (an ``IceTargetFinder`` / ``ScoreTargetFinder``).

The node logic lives in :class:`HoleNodeMixin`; :mod:`ptolemy_leginon.register`
combines it with Leginon's ``scorefinder.ScoreTargetFinder`` so that Leginon's
own hole statistics, ice filter (``ice min/max mean/std``), focus-hole choice
(``focus hole``), exposure templates, database records and settings panel keep
working on our holes.

What the node does differently:

* our hole finder runs in the node on the **full-resolution** image; each
  hole's centre is handed to Leginon in its shrunk frame (the image binned to
  <= 1440 px), so published targets land on our full-resolution centres for
  every image size (``ScoreTargetFinder`` + script is wrong above 1440 px);
* images of any shape are shrunk (Leginon's ``imagefun.shrink`` fails when the
  row and column offsets differ, e.g. 4102 x 4097);
* ``hf.lattice_matrix`` is our fitted lattice (oblique / hexagonal allowed) in
  the form ``centerCarbon`` uses, so ``focus hole = Center`` lands between holes;
* ``ptolemy auto i0`` uses our vacuum-intensity estimate instead of the
  hand-set ``lattice zero thickness``; ``ptolemy auto radius`` sizes the
  hole-statistics circle from the measured hole radius;
* any exception in the automatic part is logged with context and yields an
  empty target list -- it never stops the node and never falls into the
  user-check wait (which would block an unattended session forever).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from .convert import lattice_matrix_for_leginon, shrink_image
from .holes import hole_records, stats_radius
from .settings import calibrated_pixel_size_nm

log = logging.getLogger(__name__)


def default_hole_finder(
    image: np.ndarray, pixel_size_nm: float | None, i0: float | None, method: str, scorer: str
) -> Any:
    """Run ``ptolemy_core.find_holes`` (imported on first use); returns its ``HoleResult``."""
    from ptolemy_core import find_holes

    return find_holes(image, pixel_size_nm=pixel_size_nm, i0=i0, method=method, scorer=scorer)


class HoleNodeMixin:
    """Overrides of ``ScoreTargetFinder`` (combined with it in :mod:`ptolemy_leginon.register`)."""

    _leginon: dict[str, Any] = {}
    #: injectable for tests: ``(image, pixel_size_nm, i0, method, scorer) -> HoleResult``
    ptolemy_finder: Callable[..., Any] | None = None

    def _getStatsKeys(self) -> list[str]:
        # Leginon's ice() copies these stats into each displayed hole: score and rank in the GUI.
        return [self.settings["score key"], "rank"]

    def _ptolemy_pixel_size_nm(self, imagedata: Any) -> float | None:
        # not every Leginon finder node has calibration clients: a missing one means "unknown"
        return calibrated_pixel_size_nm(self.settings, getattr(self, "calclients", None), imagedata)

    def _ptolemy_i0(self) -> float:
        auto = self.__dict__.get("_ptolemy_auto_i0")
        if self.settings.get("ptolemy auto i0", True) and auto is not None and np.isfinite(auto) and auto > 0:
            return float(auto)
        return float(self.settings["lattice zero thickness"])

    def _ptolemy_radius(self) -> float:
        auto = self.__dict__.get("_ptolemy_auto_radius")
        if self.settings.get("ptolemy auto radius", True) and auto:
            return float(auto)
        return float(self.settings["lattice hole radius"])

    # ---------------------------------------------------------------- Leginon hooks
    def findTargets(self, imdata: Any, targetlist: Any) -> None:
        """``IceTargetFinder.findTargets`` with a shrink that works for every shape and an
        automatic part that never raises (so no user-check wait unless ``user check`` is on)."""
        self.setStatus("processing")
        self.currentimagedata = imdata
        shrunk, b, off = shrink_image(imdata["image"])
        self.shrink_factor = b
        self.shrink_offset = off
        self.hf["original"] = shrunk
        self.setImage(shrunk, "Original")
        if not self.settings["skip"]:
            if self.isFromNewParentImage(imdata):
                self.logger.debug("Reset focus counter")
                self.foc_counter = itertools.count()
                self.resetLastFocusedTargetList(targetlist)
            self.everything()
        if self.settings["user check"]:
            while True:
                self.waitForInteraction(imdata)
                if not self.processPreviewTargets(imdata, targetlist):
                    break
                self.panel.targetsSubmitted()
        self.setStatus("idle")

    def everything(self) -> None:
        """Find holes + ice filter + focus/acquisition targets; on any exception: log, no targets."""
        try:
            super().everything()
        except Exception as exc:  # noqa: BLE001 - an unattended cassette must go on
            self.logger.error(
                "Ptolemy hole targeting failed on %s: %s: %s", self._ptolemy_label(), type(exc).__name__, exc
            )
            for name in ("Hole", "acquisition", "focus"):
                try:
                    self.setTargets([], name, block=True)
                except Exception:  # noqa: BLE001
                    pass

    def _ptolemy_label(self) -> str:
        imdata = getattr(self, "currentimagedata", None)
        try:
            return "{} ({})".format(imdata["filename"], "x".join(str(s) for s in imdata["image"].shape))
        except Exception:  # noqa: BLE001
            return "the current image"

    def _findHoles(self) -> None:
        """Our finder on the full image -> ``StatsHole`` s in ``hf['holes']`` (shrunk frame) + lattice."""
        statshole = self._leginon["statshole"]
        self.__dict__["_ptolemy_auto_i0"] = None
        self.__dict__["_ptolemy_auto_radius"] = None
        imdata = self.currentimagedata
        if imdata is None:
            raise RuntimeError("Need image to find holes")
        image = imdata["image"]
        score_key = self.settings["score key"]
        try:
            finder = self.ptolemy_finder or default_hole_finder
            fixed_i0 = (
                None
                if self.settings.get("ptolemy auto i0", True)
                else float(self.settings["lattice zero thickness"])
            )
            result = finder(
                image,
                self._ptolemy_pixel_size_nm(imdata),
                fixed_i0,
                self.settings.get("ptolemy method", "lattice"),
                self.settings.get("ptolemy scorer", "auto"),
            )
        except Exception as exc:  # noqa: BLE001 - logged with context, then no holes
            self.logger.error(
                "Ptolemy hole finder failed on %s: %s: %s", self._ptolemy_label(), type(exc).__name__, exc
            )
            self.hf.updateHoles([])
            self.hf.lattice_matrix = None
            return
        shape = image.shape
        records = hole_records(
            result.targets, shape, score_key=score_key, threshold=self.settings.get("score threshold")
        )
        holes = []
        for rec in records:
            hole = statshole.StatsHole(rec, len(holes), [score_key, "convolved", "rank"])
            for key in ("ice_thickness_nm", "full_center", "radius"):
                hole.stats["ptolemy " + key] = rec.get(key)
            holes.append(hole)
        self.hf.updateHoles(holes)
        lattice = getattr(result, "lattice", None)
        matrix = (
            lattice_matrix_for_leginon(getattr(lattice, "basis", None), shape)
            if lattice is not None
            else None
        )
        self.hf.lattice_matrix = matrix
        self.lattice_matrix = matrix
        self.__dict__["_ptolemy_auto_i0"] = getattr(result, "i0", None)
        self.__dict__["_ptolemy_auto_radius"] = stats_radius(result.targets, shape)
        self.logger.info(
            "Ptolemy: %d holes (%d with score >= %s) on %s, lattice %s, i0 %s",
            len(result.targets),
            len(holes),
            self.settings.get("score threshold"),
            self._ptolemy_label(),
            getattr(lattice, "kind", None),
            self.__dict__["_ptolemy_auto_i0"],
        )

    def calcHoleStats(self) -> None:
        """Leginon's hole statistics with our I0 and radius when the automatic settings are on."""
        self.icecalc.set_i0(self._ptolemy_i0())
        self.hf.configure_holestats(radius=self._ptolemy_radius())
        try:
            self.hf.calc_holestats(input_name="holes")
        except Exception as exc:  # noqa: BLE001
            self.logger.error("hole statistics failed: %s", exc)

    def filterIce(self, input_name: str = "holes") -> None:
        """Leginon's ice filter with our I0 when ``ptolemy auto i0`` is on."""
        self.logger.info("limit thickness (i0 %.4g)", self._ptolemy_i0())
        self.hf.configure_ice(
            i0=self._ptolemy_i0(),
            tmin=self.settings["ice min mean"],
            tmax=self.settings["ice max mean"],
            tstdmax=self.settings["ice max std"],
            tstdmin=self.settings["ice min std"],
        )
        try:
            self.hf.calc_ice(input_name=input_name)
        except Exception as exc:  # noqa: BLE001
            self.logger.error("ice filter failed: %s", exc)
            return
        self._ptolemy_limit_targets()

    def _ptolemy_limit_targets(self) -> None:
        """Keep the ``ptolemy max targets`` best-scoring good holes (0 = all), as the screening policy."""
        limit = int(self.settings.get("ptolemy max targets") or 0)
        good = self.hf["holes2"]
        if limit <= 0 or good is None or len(good) <= limit:
            return
        key = self.settings["score key"]
        kept = sorted(good, key=lambda h: (-float(h.stats.get(key, 0.0)), h.stats.get("hole_number", 0)))[
            :limit
        ]
        self.hf.update_result("holes2", kept)
        self.logger.info(
            "Ptolemy: kept the %d best of %d good holes ('ptolemy max targets')", limit, len(good)
        )

    def iceOnConvolved(self) -> None:
        """Template targets: statistics with our radius, then the ice filter."""
        self.hf.configure_holestats(radius=self._ptolemy_radius())
        self.hf.calc_holestats(input_name="holes2")
        self.filterIce(input_name="holes2")

    def storeHoleFinderPrefsData(self, imagedata: Any) -> Any:
        """Leginon's prefs record, with the I0 and stats radius actually used."""
        saved = (self.settings["lattice zero thickness"], self.settings["lattice hole radius"])
        self.settings["lattice zero thickness"] = self._ptolemy_i0()
        self.settings["lattice hole radius"] = self._ptolemy_radius()
        try:
            return super().storeHoleFinderPrefsData(imagedata)
        finally:
            self.settings["lattice zero thickness"], self.settings["lattice hole radius"] = saved

    def _getScriptPref(self) -> str:
        return "ptolemy-leginon (in-process)"
