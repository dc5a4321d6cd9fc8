"""Read a training folder (format: see :mod:`ptolemy_core.train`) into model inputs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PtolemyInputError
from ..models import crops as C

IMAGE_SUFFIXES = (".mrc", ".mrcs", ".tif", ".tiff", ".png", ".jpg", ".jpeg")
#: Working scale for training images with known truth: like the hole finder
#: (``ptolemy_core.holes.finder``: ``s = max(1, int(pitch / 32))``, block means), with the
#: target lattice period drawn in this range (working px) so the models also tolerate
#: other scale choices.
PITCH_WORK = (26.0, 38.0)
#: Fraction of simulated training images whose I0 is given to the models (the rest: unknown),
#: as the finders know I0 only when the image shows vacuum or the caller gives it.
I0_KNOWN_FRACTION = 0.7
#: Extra "display look" views per training image (see :func:`display_look`).
DISPLAY_VIEWS = 1


def illumination_look(data: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The same atlas under other illumination: an off-centre radial fall-off (up to 35 %) and,
    half of the time, montage tiles of different brightness (sd 8 %) — the sample is unchanged."""
    a = np.asarray(data, np.float32)
    h, w = a.shape
    rr, cc = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = h * rng.uniform(0.2, 0.8), w * rng.uniform(0.2, 0.8)
    d2 = ((rr - cy) ** 2 + (cc - cx) ** 2) / (0.25 * (h * h + w * w))
    field = 1.0 - float(rng.uniform(0.0, 0.35)) * np.clip(d2, 0.0, 2.0) / 2.0
    if rng.random() < 0.5:
        t = int(rng.integers(2, 5))
        gains = 1.0 + 0.08 * rng.standard_normal((t, t))
        ti = np.minimum((rr * t / h).astype(int), t - 1)
        tj = np.minimum((cc * t / w).astype(int), t - 1)
        field = field * gains[ti, tj]
    return (a * field).astype(np.float32)


def display_look(data: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The same image as another microscope, detector or program could have saved it.

    A random dose/gain factor (0.3-3x) and detector offset (-0.1 to +0.6 of the
    median), then with probability 0.7 a display mapping: percentile stretch,
    gamma 0.5-2, 8-bit rounding onto a random grey range (black level up to 60,
    as in atlases saved with mid-grey bars). Nothing about the sample changes,
    so a model trained on both views learns scores that do not depend on these.
    """
    a = np.asarray(data, np.float32)
    dose = float(np.exp(rng.uniform(np.log(0.3), np.log(3.0))))
    a = a * dose + float(rng.uniform(-0.1, 0.6)) * float(np.median(a)) * dose
    if rng.random() < 0.7:
        lo, hi = np.percentile(a[::4, ::4], [rng.uniform(0.0, 2.0), rng.uniform(98.0, 100.0)])
        v = np.clip((a - lo) / max(float(hi - lo), 1e-6), 0.0, 1.0)
        v = v ** float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
        black = float(rng.uniform(0.0, 60.0))
        a = np.round(black + float(rng.uniform(150.0, 255.0 - black)) * v)
    return a.astype(np.float32)


@dataclass
class SquareSet:
    """The squares of one atlas, ready for the square CNN."""

    name: str
    x: np.ndarray            # (N, 1, S, S) float32, normalised by the atlas's squares
    scalars: np.ndarray      # (N, 3) float32: log relative area, log(I/I0), I0 known
    y: np.ndarray            # (N,) bool
    tags: dict[str, Any] = field(default_factory=dict)
    #: Extra (x, scalars) views of the same squares under :func:`display_look` (training only).
    views: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)


@dataclass
class HoleSet:
    """The holes of one square image at its working scale."""

    name: str
    work: np.ndarray         # (H, W) float32 working-scale image
    scale: float             # input px per working px
    centres: np.ndarray      # (N, 2) working px (row, col): every labelled/detected hole
    radii: np.ndarray        # (N,) working px
    y: np.ndarray            # (N,) bool: good / selected
    scored: np.ndarray       # (N,) bool: counts in evaluation (≥ half visible, not cut)
    i0: float | None = None  # vacuum counts per input px, when known
    selected_points: np.ndarray | None = None  # (K, 2) working px, operator data only
    tags: dict[str, Any] = field(default_factory=dict)


def find_pairs(folder: str | Path) -> list[tuple[Path, Path]]:
    """``(image, json)`` pairs under ``folder``, sorted by path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PtolemyInputError(f"training data folder {folder} does not exist")
    pairs = []
    for p in sorted(folder.rglob("*")):
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
            j = p.with_suffix(".json")
            if j.is_file():
                pairs.append((p, j))
    if not pairs:
        raise PtolemyInputError(
            f"no image with a <stem>.json label file found under {folder} "
            f"(images: {', '.join(IMAGE_SUFFIXES)})")
    return pairs


def _read_label(path: Path) -> dict[str, Any]:
    try:
        label = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PtolemyInputError(f"{path}: not a readable JSON label file ({exc})") from None
    if not isinstance(label, dict) or not ({"selected", "squares", "holes"} & set(label)):
        raise PtolemyInputError(
            f"{path}: expected {{\"selected\": [[x, y], ...]}} or simulator truth with squares/holes")
    return label


def _xy_to_rc(points) -> np.ndarray:
    a = np.asarray(points, dtype=float).reshape(-1, 2)
    return a[:, ::-1].copy()


def _read(path: Path, label: dict[str, Any]):
    from ..io import read_image

    return read_image(path, pixel_size_nm=label.get("pixel_size_nm"))


def square_set(image_path: Path, label_path: Path, rng: np.random.Generator,
               views: int = DISPLAY_VIEWS) -> SquareSet | None:
    """One atlas as a :class:`SquareSet` (None when it holds no square), with ``views`` display looks."""
    from ..models.api import square_inputs

    label = _read_label(label_path)
    if "holes" in label and "squares" not in label:
        raise PtolemyInputError(f"{label_path}: square-image truth given to square training")
    img = _read(image_path, label)
    if "squares" in label:
        sq = label["squares"]
        if not sq:
            return None
        verts = [_xy_to_rc(s["vertices"]) for s in sq]
        areas = np.array([float(s.get("area", 0.0)) or abs(_poly_area(v)) for s, v in zip(sq, verts,
                                                                                          strict=True)])
        y = np.array([bool(s["good"]) for s in sq])
        tags = {"montage": bool(label.get("params", {}).get("montage", False))}
        # What a vacuum-based estimate measures: dose plus the detector offset.
        i0 = float(label["i0"]) + float(label.get("offset", 0.0)) if "i0" in label else None
        if rng.random() >= I0_KNOWN_FRACTION:
            i0 = None
    else:
        from .. import find_squares

        res = find_squares(img)
        found = res.targets
        i0 = label.get("i0", res.i0)
        if not found:
            return None
        verts = [t.vertices_array() for t in found]
        areas = np.array([t.area for t in found], float)
        from ..metrics import points_in_polygons

        sel = _xy_to_rc(label["selected"])
        y = points_in_polygons(verts, sel).any(axis=1) if len(sel) else np.zeros(len(found), bool)
        tags = {}
    x, sc = square_inputs(img.data, verts, areas, None, i0)
    # Display looks: I0 is not known there (a vacuum level means nothing after a display curve).
    extra = [square_inputs(display_look(illumination_look(img.data, rng), rng), verts, areas, None, None)
             for _ in range(views)]
    return SquareSet(image_path.stem, x, sc, y, tags, extra)


def _poly_area(v: np.ndarray) -> float:
    y, x = v[:, 0], v[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def hole_set(image_path: Path, label_path: Path, rng: np.random.Generator) -> HoleSet | None:
    """One square image as a :class:`HoleSet` (None when it holds no hole)."""
    label = _read_label(label_path)
    if "squares" in label and "holes" not in label:
        raise PtolemyInputError(f"{label_path}: atlas truth given to hole training")
    img = _read(image_path, label)
    if "holes" in label:
        holes = [h for h in label["holes"]]
        if not holes:
            return None
        centres = _xy_to_rc([h["center"] for h in holes])
        radii = np.array([float(h["radius"]) for h in holes])
        y = np.array([bool(h["good"]) for h in holes])
        vis = np.array([float(h.get("visible_fraction", 1.0)) for h in holes])
        # Scored = what the finder must report: centre in the image, at least half visible.
        scored = (vis >= 0.5) & np.array([bool(h.get("in_image", True)) for h in holes])
        lat = label.get("lattice") or {}
        pitch = _pitch(lat, radii)
        scale = float(max(1, int(pitch / float(rng.uniform(*PITCH_WORK)))))
        tags = {"film": label.get("film"), "contrast": label.get("contrast"),
                "lattice": lat.get("kind") if isinstance(lat, dict) else None}
        sel = None
        i0 = float(label["i0"]) if "i0" in label and rng.random() < I0_KNOWN_FRACTION else None
    else:
        from .. import find_holes

        res = find_holes(img, i0=label.get("i0"))
        if not res.targets:
            return None
        from ..models.api import hole_radius_full

        centres = np.array([t.center for t in res.targets], float)
        radii = np.array([hole_radius_full(t) for t in res.targets])
        scale = float(res.working_scale)
        sel = _xy_to_rc(label["selected"])
        if len(sel):
            d = np.hypot(*(centres[:, None, :] - sel[None, :, :]).transpose(2, 0, 1))
            y = (d <= radii[:, None]).any(axis=1)
        else:
            y = np.zeros(len(centres), bool)
        scored = ~np.array([bool(t.features.get("cut", False)) for t in res.targets])
        sel = C.full_to_work(sel, scale)
        tags = {}
        i0 = label.get("i0", res.i0)
    work = C.to_working(img.data, scale)
    return HoleSet(image_path.stem, work, scale, C.full_to_work(centres, scale), radii / scale,
                   y, scored, i0, sel, tags)


def _pitch(lattice: dict, radii: np.ndarray) -> float:
    """Shortest lattice period (px) from simulator truth; 2.2 × diameter when absent."""
    basis = lattice.get("basis") if isinstance(lattice, dict) else None
    if basis:
        return float(np.linalg.norm(np.asarray(basis, float), axis=1).min())
    return 4.4 * float(np.median(radii))


def split(n: int, seed: int, held_out: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Seeded image-level split: (train indices, held-out indices); at least one of each when n ≥ 2."""
    order = np.random.default_rng(seed).permutation(n)
    k = max(1, int(round(n * held_out))) if n >= 2 else 0
    return np.sort(order[k:]), np.sort(order[:k])
