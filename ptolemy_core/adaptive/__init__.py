"""Session-adaptive ranking: re-rank squares and holes from exposure feedback.

A pure library (no server needed): Leginon nodes use :class:`SessionRanker`
in-process; ``ptolemy serve`` wraps the same object behind Ptolemy's HTTP API.
"""

from __future__ import annotations

from .ranker import IceCalibration, Scores, SessionRanker, fit_ice_calibration
from .settings import AdaptiveSettings

__all__ = ["AdaptiveSettings", "IceCalibration", "Scores", "SessionRanker", "fit_ice_calibration"]
