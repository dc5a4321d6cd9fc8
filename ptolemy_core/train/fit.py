"""Training loops for the square CNN, the hole CNN and the hole U-Net.

Pure library code: progress goes through a ``progress(message)`` callable (the
CLI prints it on stderr), nothing is printed here. Every source of randomness
comes from the ``seed`` (numpy generator + ``torch.manual_seed``), so a run is
reproducible on the same machine and thread count.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..metrics import average_precision, roc_auc
from .data import HoleSet, SquareSet

Progress = Callable[[str], None]


class TrainingError(RuntimeError):
    """Training did not do what it must (e.g. ``--quick``: the loss did not fall)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


@dataclass
class TrainResult:
    """A trained network and how it was obtained."""

    model: Any
    arch: dict[str, Any]
    losses: list[float]
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def _quiet(_msg: str) -> None:
    pass


def _dihedral(x, k: int, flip: bool):
    import torch

    x = torch.rot90(x, k, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if flip else x


def _augment(x, rng: np.random.Generator):
    """Random element of the 8 rotations/flips, per sample."""
    import torch

    ks = rng.integers(0, 4, len(x))
    fl = rng.random(len(x)) < 0.5
    out = torch.empty_like(x)
    for k in range(4):
        for f in (False, True):
            m = np.flatnonzero((ks == k) & (fl == f))
            if len(m):
                idx = torch.from_numpy(m)
                out[idx] = _dihedral(x[idx], k, f)
    return out


def _check_falls(losses: list[float], what: str) -> None:
    n = max(2, len(losses) // 5)
    first, last = float(np.mean(losses[:n])), float(np.mean(losses[-n:]))
    if not (last < first):
        raise TrainingError(f"{what}: the training loss did not fall ({first:.4f} -> {last:.4f})")


def _bce(logits, y, pos_weight: float):
    import torch
    import torch.nn.functional as F

    return F.binary_cross_entropy_with_logits(logits, y, pos_weight=torch.tensor(pos_weight))


def _pos_weight(y: np.ndarray) -> float:
    pos = max(1, int(np.count_nonzero(y)))
    return float(np.clip((len(y) - pos) / pos, 0.2, 20.0))


def _auc_block(scores: np.ndarray, y: np.ndarray) -> dict[str, float]:
    return {"auc": roc_auc(scores, y), "ap": average_precision(scores, y),
            "n": int(len(y)), "n_good": int(np.count_nonzero(y))}


# ----------------------------------------------------------------------------- squares
def train_squares(train: list[SquareSet], held: list[SquareSet], *, seed: int = 0, epochs: int = 20,
                  width: int = 16, batch: int = 64, quick: bool = False, max_seconds: float | None = None,
                  progress: Progress = _quiet) -> TrainResult:
    """Train the square CNN on atlases ``train``; evaluate on ``held`` (AUC of score vs good)."""
    import torch

    from ..models.classifiers import SquareCNN

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    x = torch.from_numpy(np.concatenate([s.x for s in train] + [v[0] for s in train for v in s.views]))
    la = torch.from_numpy(np.concatenate([s.scalars for s in train] + [v[1] for s in train for v in s.views]))
    y_np = np.concatenate([s.y for s in train] + [s.y for s in train for _ in s.views])
    y = torch.from_numpy(y_np.astype(np.float32))
    model = SquareCNN(width=width, inputs=2)
    best = (-1.0, None, 0)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    pw = _pos_weight(y_np)
    losses: list[float] = []
    n = len(y)
    steps_per_epoch = max(1, math.ceil(n / batch))
    done = 0
    for ep in range(epochs):
        if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
            progress(f"squares: time budget reached after {ep} epochs")
            break
        done = ep + 1
        model.train()
        order = rng.permutation(n)
        for s in range(steps_per_epoch):
            idx = torch.from_numpy(order[s * batch:(s + 1) * batch])
            xb = _augment(x[idx], rng)
            loss = _bce(model(xb, la[idx]), y[idx], pw)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        msg = f"squares epoch {ep + 1}/{epochs} loss {np.mean(losses[-steps_per_epoch:]):.4f}"
        if held and not quick:
            model.eval()
            v = _square_validation(model, held)
            msg += f" validation AUC {v:.4f}"
            if v > best[0]:
                best = (v, copy.deepcopy(model.state_dict()), ep + 1)
        progress(msg)
    if quick:
        _check_falls(losses, "squares")
    if best[1] is not None:
        # Early stopping: keep the epoch with the best validation AUC (raw + display views).
        model.load_state_dict(best[1])
        progress(f"squares: kept epoch {best[2]} (validation AUC {best[0]:.4f})")
    model.eval()
    metrics = evaluate_squares(model, held) if held else {}
    return TrainResult(model, {"width": width, "inputs": 2, "epochs": done, "kept_epoch": best[2] or done},
                       losses, metrics, time.perf_counter() - t0)


def _square_validation(model, held: list[SquareSet]) -> float:
    from ..models.api import _run_classifier

    s = [_run_classifier(model, h.x, h.scalars) for h in held]
    s += [_run_classifier(model, v[0], v[1]) for h in held for v in h.views]
    y = [h.y for h in held] + [h.y for h in held for _ in h.views]
    return float(roc_auc(np.concatenate(s), np.concatenate(y)))


def evaluate_squares(model, sets: list[SquareSet]) -> dict[str, Any]:
    """Held-out AUC / AP of the square CNN (all squares, and montage vs single frames)."""
    from ..models.api import _run_classifier

    scores = [_run_classifier(model, s.x, s.scalars) for s in sets]
    out = {"all": _auc_block(np.concatenate(scores), np.concatenate([s.y for s in sets]))}
    if any(s.views for s in sets):
        out["display looks"] = _auc_block(
            np.concatenate([_run_classifier(model, v[0], v[1]) for s in sets for v in s.views]),
            np.concatenate([s.y for s in sets for _ in s.views]))
    for tag in (True, False):
        sel = [i for i, s in enumerate(sets) if s.tags.get("montage") is tag]
        if sel:
            out["montage" if tag else "single"] = _auc_block(
                np.concatenate([scores[i] for i in sel]), np.concatenate([sets[i].y for i in sel]))
    return out


# ----------------------------------------------------------------------------- hole CNN
def hole_crops_of(s: HoleSet, work: np.ndarray | None = None, i0: float | None | str = "set"
                  ) -> tuple[list[np.ndarray], float]:
    """Hole-CNN inputs of a :class:`HoleSet` (optionally of another view ``work`` / ``i0``)."""
    from ..models.api import hole_inputs

    return hole_inputs(s.work if work is None else work, s.centres, s.radii,
                       s.i0 if isinstance(i0, str) else i0)


def _hole_views(s: HoleSet, rng: np.random.Generator, views: int) -> list[tuple[list[np.ndarray], float]]:
    """Crops of the image as it is and of ``views`` display looks (I0 unknown there)."""
    from .data import display_look

    out = [hole_crops_of(s)]
    out += [hole_crops_of(s, display_look(s.work, rng), None) for _ in range(views)]
    return out


def train_holes(train: list[HoleSet], held: list[HoleSet], *, seed: int = 0, epochs: int = 20,
                width: int = 16, batch: int = 64, per_image: int = 60, quick: bool = False,
                max_seconds: float | None = None, views: int | None = None,
                progress: Progress = _quiet) -> TrainResult:
    """Train the hole CNN (crops grouped by size into batches); evaluate on ``held``.

    At most ``per_image`` holes (seeded choice) of each training image are used:
    the holes of one image are alike, more images teach more than more holes.
    Each image is also seen as ``views`` display looks
    (:func:`ptolemy_core.train.data.display_look`, default
    :data:`~ptolemy_core.train.data.DISPLAY_VIEWS`, none in ``quick`` mode). Unless ``quick``, the epoch
    with the best validation AUC on ``held`` (≤ ``per_image`` holes per image, both
    views) is kept (early stopping).
    """
    import torch

    from ..models.classifiers import HoleCNN
    from .data import DISPLAY_VIEWS

    # Quick mode checks that the loss falls: no display views (they double the time and make
    # the few-image loss curve noisier).
    views = (0 if quick else DISPLAY_VIEWS) if views is None else int(views)
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)

    def collect(sets: list[HoleSet]):
        crops: list[np.ndarray] = []
        ys: list[bool] = []
        flags: list[float] = []
        for s in sets:
            cand = np.flatnonzero(s.scored)
            for cs, known in _hole_views(s, rng, views):
                for i in rng.permutation(cand)[:per_image]:
                    crops.append(cs[i])
                    ys.append(bool(s.y[i]))
                    flags.append(known)
        return crops, np.array(ys, bool), np.array(flags, np.float32)

    crops, y_np, f_np = collect(train)
    val = collect(held) if held and not quick else None
    by_size: dict[tuple[int, ...], list[int]] = {}
    for i, c in enumerate(crops):
        by_size.setdefault(c.shape, []).append(i)
    groups = {k: (torch.from_numpy(np.stack([crops[i] for i in v])),
                  torch.from_numpy(y_np[v].astype(np.float32)),
                  torch.from_numpy(f_np[v])) for k, v in by_size.items()}
    model = HoleCNN(width=width, in_channels=3)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    pw = _pos_weight(y_np)
    losses: list[float] = []
    keys = list(groups)
    done = 0
    best = (-1.0, None, 0)
    progress(f"holes: {len(crops)} training crops, {len(val[0]) if val else 0} validation crops")
    for ep in range(epochs):
        if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
            progress(f"holes: time budget reached after {ep} epochs")
            break
        done = ep + 1
        model.train()
        batches = []
        for k in keys:
            order = rng.permutation(len(groups[k][1]))
            batches += [(k, order[i:i + batch]) for i in range(0, len(order), batch)]
        ep_losses = []
        for bi in rng.permutation(len(batches)):
            k, idx = batches[bi]
            xg, yg, fg = groups[k]
            ti = torch.from_numpy(idx)
            loss = _bce(model(_augment(xg[ti], rng), fg[ti]), yg[ti], pw)
            opt.zero_grad()
            loss.backward()
            opt.step()
            ep_losses.append(loss.item())
        losses += ep_losses
        msg = f"holes epoch {ep + 1}/{epochs} loss {np.mean(ep_losses):.4f} ({len(crops)} crops)"
        if val is not None:
            model.eval()
            v = float(roc_auc(_scores_by_flag(model, val), val[1]))
            msg += f" validation AUC {v:.4f}"
            if v > best[0]:
                best = (v, copy.deepcopy(model.state_dict()), ep + 1)
        progress(msg)
    if quick:
        _check_falls(losses, "holes")
    if best[1] is not None:
        model.load_state_dict(best[1])
        progress(f"holes: kept epoch {best[2]} (validation AUC {best[0]:.4f})")
    model.eval()
    metrics = {}
    if held:
        metrics = evaluate_holes(lambda s: _hole_cnn_on(model, s), held)
        if val is not None:
            metrics["validation (both views)"] = _auc_block(_scores_by_flag(model, val), val[1])
    return TrainResult(model, {"width": width, "in_channels": 3, "inputs": 2, "epochs": done,
                               "kept_epoch": best[2] or done, "per_image": per_image, "views": views},
                       losses, metrics, time.perf_counter() - t0)


def _scores_by_flag(model, val) -> np.ndarray:
    """Scores of validation crops (grouped by I0 flag, then by size inside the scorer)."""
    from ..models.api import hole_scores_from_crops

    crops, _, flags = val
    out = np.zeros(len(crops))
    for f in np.unique(flags):
        idx = np.flatnonzero(flags == f)
        out[idx] = hole_scores_from_crops(model, [crops[i] for i in idx], float(f))
    return out


def _hole_cnn_on(model, s: HoleSet) -> np.ndarray:
    from ..models.api import hole_scores_from_crops

    return hole_scores_from_crops(model, *hole_crops_of(s))


def evaluate_holes(score_fn: Callable[[HoleSet], np.ndarray], sets: list[HoleSet]) -> dict[str, Any]:
    """AUC/AP of ``score_fn`` vs good over scored holes, overall and per film/contrast/lattice."""
    scores = [score_fn(s)[s.scored] for s in sets]
    ys = [s.y[s.scored] for s in sets]
    out = {"all": _auc_block(np.concatenate(scores), np.concatenate(ys))}
    for key in ("film", "contrast", "lattice"):
        values = sorted({str(s.tags.get(key)) for s in sets if s.tags.get(key) is not None})
        for v in values:
            sel = [i for i, s in enumerate(sets) if str(s.tags.get(key)) == v]
            out[f"{key}={v}"] = _auc_block(np.concatenate([scores[i] for i in sel]),
                                           np.concatenate([ys[i] for i in sel]))
    return out


# ----------------------------------------------------------------------------- U-Net
def _point_map(shape: tuple[int, int], pts: np.ndarray) -> np.ndarray:
    m = np.zeros(shape, np.float32)
    if len(pts):
        r = np.rint(pts[:, 0]).astype(int)
        c = np.rint(pts[:, 1]).astype(int)
        ok = (r >= 0) & (r < shape[0]) & (c >= 0) & (c < shape[1])
        m[r[ok], c[ok]] = 1.0
    return m


def unet_targets(s: HoleSet) -> np.ndarray:
    """(2, H, W) point targets: every hole centre in the image; good/selected centres."""
    inside = ((s.centres[:, 0] >= -0.5) & (s.centres[:, 0] <= s.work.shape[0] - 0.5)
              & (s.centres[:, 1] >= -0.5) & (s.centres[:, 1] <= s.work.shape[1] - 0.5))
    # Holes less than half visible (cut by a bar or the edge) are not holes to report.
    holes = s.centres[inside & s.scored]
    good = s.selected_points if s.selected_points is not None else s.centres[s.y]
    return np.stack([_point_map(s.work.shape, holes), _point_map(s.work.shape, good)])


def _zscore(a: np.ndarray) -> np.ndarray:
    sd = float(a.std()) or 1.0
    return ((a - float(a.mean())) / sd).astype(np.float32)


def train_unet(train: list[HoleSet], held: list[HoleSet], *, seed: int = 0, steps: int = 1500,
               widths: tuple[int, ...] = (8, 16, 16, 32), unshuffle: int = 2, patch: int = 96,
               batch: int = 8, pos_weight: float = 10.0, quick: bool = False,
               max_seconds: float | None = None, progress: Progress = _quiet) -> TrainResult:
    """Train the hole U-Net (paper: learned Gaussian blur, positive weight, rotations, inversion).

    The paper blurs the *output* and compares it to one-pixel targets (positive
    weight 100). Here the one-pixel targets are blurred by the learned Gaussian
    (sigma initialised to e, its own Adam at lr 0.1, bounded to 1.2-3 px) and the
    network learns those blobs directly: on a CPU budget of a few thousand
    steps this converges far faster, and the blobs' centroids are the centres.

    ``unshuffle=2`` (space-to-depth, see :class:`~ptolemy_core.models.unet.HoleUNet`)
    runs every level at half the working resolution: a 1024 × 1440 working image
    (the finder's scale 1) then costs ~4× less, and so does each training step.
    """
    import torch
    import torch.nn.functional as F

    from ..models.unet import HoleUNet, LearnedBlur

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    images = [_zscore(s.work) for s in train]
    targets = [unet_targets(s) for s in train]
    model = HoleUNet(widths=widths, unshuffle=unshuffle)
    blur = LearnedBlur()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    opt_sigma = torch.optim.Adam(blur.parameters(), lr=0.1)   # the paper's sigma optimiser
    losses: list[float] = []
    pw_t = torch.tensor(pos_weight)
    done = 0
    for step in range(steps):
        if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
            progress(f"unet: time budget reached after {step} steps")
            break
        done = step + 1
        model.train()
        xs, ts = [], []
        for _ in range(batch):
            i = int(rng.integers(len(images)))
            img, tgt = images[i], targets[i]
            h, w = img.shape
            ph, pw_ = min(patch, h), min(patch, w)
            r0 = int(rng.integers(0, h - ph + 1))
            c0 = int(rng.integers(0, w - pw_ + 1))
            x = img[r0:r0 + ph, c0:c0 + pw_]
            t = tgt[:, r0:r0 + ph, c0:c0 + pw_]
            if (ph, pw_) != (patch, patch):
                x = np.pad(x, ((0, patch - ph), (0, patch - pw_)), mode="reflect")
                t = np.pad(t, ((0, 0), (0, patch - ph), (0, patch - pw_)))
            if rng.random() < 0.5:
                x = -x                                           # random intensity inversion
            xs.append(x)
            ts.append(t)
        # Same rotation for image and targets: augment them together.
        both = torch.cat([torch.from_numpy(np.stack(xs))[:, None], torch.from_numpy(np.stack(ts))], 1)
        both = _augment(both, rng)
        xb, tb = both[:, :1], both[:, 1:]
        # Targets: hole-centre points blurred by the learned Gaussian (peak 1), BCE with a
        # positive weight (the blobs are still only a few % of the pixels).
        soft = blur(tb)
        loss = F.binary_cross_entropy_with_logits(model(xb), soft, pos_weight=pw_t)
        opt.zero_grad()
        opt_sigma.zero_grad()
        loss.backward()
        opt.step()
        opt_sigma.step()
        losses.append(loss.item())
        if (step + 1) % max(1, steps // 20) == 0 or step + 1 == steps:
            progress(f"unet step {step + 1}/{steps} loss {np.mean(losses[-50:]):.4f} "
                     f"sigma {blur.sigma.item():.2f}")
    if quick:
        _check_falls(losses, "unet")
    model.eval()
    arch = {"widths": list(widths), "out_channels": 2, "unshuffle": int(unshuffle),
            "sigma": round(blur.sigma.item(), 4), "steps": done, "patch": patch, "batch": batch,
            "pos_weight": pos_weight}
    metrics = evaluate_unet(model, held) if held else {}
    return TrainResult(model, arch, losses, metrics, time.perf_counter() - t0)


def evaluate_unet(model, sets: list[HoleSet]) -> dict[str, Any]:
    """Held-out: AUC of the summed good-probability score, and centroid localisation P/R/F1."""
    from ..metrics import points_in_ellipses, score_detections
    from ..models.api import BLOB_MASS, _disk_sum, unet_hole_centres, unet_probability

    def score(s: HoleSet) -> np.ndarray:
        pg = unet_probability(s.work, "good", model=model)
        sums = np.array([_disk_sum(pg, c, r) for c, r in zip(s.centres, s.radii, strict=True)])
        return sums / (sums + BLOB_MASS)

    out = evaluate_holes(score, sets)
    tp = fp = fn = 0
    for s in sets:
        prob = unet_probability(s.work, "hole", model=model)
        cen = unet_hole_centres(prob=prob)
        inside = points_in_ellipses(s.centres, np.c_[s.radii, s.radii], None, cen)
        d = score_detections(inside, optional=~s.scored)
        tp, fp, fn = tp + d.tp, fp + d.fp, fn + d.fn
    p = tp / max(1, tp + fp)
    r = tp / max(1, tp + fn)
    out["centroids"] = {"precision": p, "recall": r, "f1": 2 * p * r / max(1e-9, p + r)}
    return out
