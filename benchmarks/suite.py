"""Fixed, seeded benchmark suites (tuning / held-out splits)."""

from __future__ import annotations

# ---------------------------------------------------------------------------------------------
# Medium-mag square images (holes engineer): fixed seeded sessions for bench_holes.py
# ---------------------------------------------------------------------------------------------

#: Hole-image classes and their fixed overrides.
SQUARE_IMAGE_CLASSES = {
    "gold": dict(film="gold", lattice="square"),
    "carbon normal": dict(film="carbon", contrast="normal", lattice="square"),
    "carbon low": dict(film="carbon", contrast="low", lattice="square"),
    "inverted": dict(film="carbon", contrast="inverted", lattice="square"),
    "oblique": dict(lattice="oblique"),
    "hexagonal": dict(lattice="hex"),
    "4096²": dict(shape=(4096, 4096)),
}

# Tuning and held-out parts differ in seeds AND in parameter ranges (hole size, dose, rotation,
# tilt), so nothing chosen on the tuning part is checked on the very same distribution.
_SQUARE_SPLITS = {
    "tuning": dict(seed0=1000, hole_px=(20.0, 70.0), dose=(25.0, 120.0), tilt=(20.0, 35.0), angle=(0.0, 90.0)),
    "held-out": dict(seed0=5000, hole_px=(24.0, 100.0), dose=(15.0, 80.0), tilt=(30.0, 45.0), angle=(90.0, 180.0)),
}


def square_image_sessions(split: str, per_class: int = 3):
    """Fixed medium-mag sessions: list of ``(class, seed, kwargs)`` for ``simulate_square_image``.

    One simulated image per session; ``per_class`` sessions per class (the 4096² class gets
    ``max(1, per_class - 1)`` to keep the run short).
    """
    import numpy as np

    cfg = _SQUARE_SPLITS[split]
    out = []
    for ci, (name, fixed) in enumerate(SQUARE_IMAGE_CLASSES.items()):
        n = max(1, per_class - 1) if "shape" in fixed else per_class
        for k in range(n):
            seed = cfg["seed0"] + 100 * ci + k
            rng = np.random.default_rng(seed)
            kw = dict(fixed)
            kw.setdefault("shape", (1024, 1440))
            kw["hole_px"] = float(np.exp(rng.uniform(*np.log(cfg["hole_px"]))))
            kw["dose"] = float(np.exp(rng.uniform(*np.log(cfg["dose"]))))
            kw["angle_deg"] = float(rng.uniform(*cfg["angle"]))
            if kw.get("lattice") == "oblique":
                kw["tilt_deg"] = float(rng.uniform(*cfg["tilt"]))
            out.append((name, seed, kw))
    return out
