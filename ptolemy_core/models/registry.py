"""Shipped weights: find, verify (sha256 against the manifest), load once per process.

Weights live in the top-level ``weights/`` folder, installed as the package
``ptolemy_core.weights``; they are found with :func:`importlib.resources.files`,
so a non-editable install (wheel) finds them too. ``weights/manifest.json``::

    {"models": {"<name>": {"file": "<name>.pt", "sha256": "...", "arch": {...},
                           "training_command": "...", "simulator_version": "...",
                           "metrics": {...}}}}

A weight file is loaded only after its sha256 matches the manifest, and with
``torch.load(..., weights_only=True)`` (no code from the file is executed).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import PtolemyInputError

#: Model names and the files they are shipped in.
MODEL_FILES = {"square_cnn": "square_cnn.pt", "hole_cnn": "hole_cnn.pt", "unet": "unet.pt"}

_lock = threading.Lock()
_cache: dict[tuple[str, str], Any] = {}
_threads_set = False


def weights_dir() -> Path:
    """Folder of the installed ``ptolemy_core.weights`` package (override: ``PTOLEMY_WEIGHTS_DIR``)."""
    override = os.environ.get("PTOLEMY_WEIGHTS_DIR")
    if override:
        return Path(override)
    return Path(str(resources.files("ptolemy_core.weights")))


def read_manifest(folder: Path | None = None) -> dict[str, Any]:
    """The ``models`` table of ``manifest.json`` (empty dict when absent)."""
    path = (folder or weights_dir()) / "manifest.json"
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text()).get("models", {}))
    except (OSError, ValueError) as exc:
        raise PtolemyInputError(f"weights manifest {path} is unreadable: {exc}") from None


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file (streamed)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def set_threads() -> None:
    """Use half the cores, at most 4, for intra-op threads (2-core machines: 1), once per process.

    Half, because the finders run beside other busy work (Leginon's GUI and acquisition,
    the learning server, other engineers' jobs): when one of two cores is taken, torch's
    2-thread calls wait on the busy core and the U-Net's typical 170×240 call went from
    10 ms (1 thread) to 157 ms median, its 1024×1440 worst case from 185 to 604 ms
    (A/B in benchmarks/README.md, U-Net speed). Respects a caller who
    already lowered the count (e.g. ``torch.set_num_threads(1)``).
    """
    global _threads_set
    if _threads_set:
        return
    import torch

    want = max(1, min(4, (os.cpu_count() or 1) // 2))
    if torch.get_num_threads() > want:
        torch.set_num_threads(want)
    _threads_set = True


def verified_state(path: Path, expected_sha256: str) -> dict[str, Any]:
    """Check ``path`` against ``expected_sha256`` then load it safely.

    Raises
    ------
    PtolemyInputError
        Missing file, or a hash that differs from the manifest (corrupted or
        replaced file): the message names the file and both hashes.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise PtolemyInputError(f"weight file {path} is missing (listed in the manifest)")
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise PtolemyInputError(
            f"weight file {path} is corrupted or does not match weights/manifest.json: "
            f"expected sha256 {expected_sha256}, got {actual}"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
        raise PtolemyInputError(f"weight file {path} cannot be loaded: {type(exc).__name__}: {exc}") from None


def build(name: str, arch: dict[str, Any]):
    """Construct an untrained network of model ``name`` with architecture ``arch``."""
    from .classifiers import HoleCNN, SquareCNN
    from .unet import HoleUNet

    if name == "unet":
        return HoleUNet(widths=tuple(arch.get("widths", (4, 8, 16, 32))),
                        out_channels=int(arch.get("out_channels", 2)),
                        unshuffle=int(arch.get("unshuffle", 1)))
    if name == "square_cnn":
        # Weights without "inputs" predate input version 2.
        return SquareCNN(width=int(arch.get("width", 16)), inputs=int(arch.get("inputs", 1)))
    if name == "hole_cnn":
        return HoleCNN(width=int(arch.get("width", 16)), in_channels=int(arch.get("in_channels", 2)))
    raise PtolemyInputError(f"unknown model {name!r}; known: {', '.join(MODEL_FILES)}")


def load_model(name: str, folder: Path | None = None):
    """The cached, eval-mode network ``name``, or None when no weights are shipped for it.

    Parameters
    ----------
    name : {"square_cnn", "hole_cnn", "unet"}
    folder : Path, optional
        Weights folder (default: the installed package's, see :func:`weights_dir`).

    Raises
    ------
    PtolemyInputError
        The manifest lists the model but its file is missing, corrupted or unloadable.
    """
    folder = Path(folder) if folder is not None else weights_dir()
    key = (name, str(folder))
    with _lock:
        if key in _cache:
            return _cache[key]
        entry = read_manifest(folder).get(name)
        if not entry:
            _cache[key] = None
            return None
        set_threads()
        state = verified_state(folder / entry["file"], entry["sha256"])
        arch = state.get("arch") or entry.get("arch", {}) if isinstance(state, dict) else {}
        model = build(name, arch)
        try:
            model.load_state_dict(state["model"] if "model" in state else state)
        except (RuntimeError, KeyError, TypeError) as exc:
            raise PtolemyInputError(
                f"weight file {folder / entry['file']} does not fit model {name}: {exc}") from None
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        _cache[key] = model
        return model


def recommended_scorer(kind: str, folder: Path | None = None) -> str | None:
    """Scorer the manifest recommends for ``scorer="auto"``: ``"cnn"``, ``"interpretable"`` or None.

    Chosen by held-out AUC when the weights were shipped (``manifest.json``
    ``"defaults": {"squares": ..., "holes": ...}``); None when the manifest says nothing.
    """
    path = (folder or weights_dir()) / "manifest.json"
    try:
        doc = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return None
    value = doc.get("defaults", {}).get(kind)
    return value if value in ("cnn", "interpretable") else None


def model_info(name: str, folder: Path | None = None) -> dict[str, Any]:
    """Manifest entry of ``name`` ({} when not shipped)."""
    return dict(read_manifest(folder).get(name, {}))


def clear_cache() -> None:
    """Forget loaded models (tests, or after replacing weight files)."""
    with _lock:
        _cache.clear()
