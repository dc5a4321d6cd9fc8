"""``ptolemy screen``: dry run of multi-grid screening on a simulated cassette.

For every grid an atlas is simulated, squares are found and ranked, the
screening policy (:mod:`ptolemy_core.screening`, the same rules the Leginon
nodes apply) picks the squares to image, a medium-magnification image is
simulated for each, holes are found and the policy picks the exposures. The
table shows what would be collected, so operators can see what the settings
do before a session. Square images are simulated independently of the atlas
square (seeded by grid and rank): the holes show the hole policy at work, not
a prediction for that square.
"""

from __future__ import annotations

import argparse
import math


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..screening import CLASS_KEYS, GROUP_METHODS

    g = parser.add_argument_group("cassette (simulated)")
    g.add_argument("--grids", type=int, default=3, metavar="N", help="grids in the cassette (default 3)")
    g.add_argument("--seed", type=int, default=0, help="seed of the first grid (grid k uses seed+k)")
    g.add_argument("--atlas-size", type=int, default=1024, metavar="PX", help="atlas side in pixels (1024)")
    g.add_argument(
        "--square-size",
        type=int,
        nargs=2,
        default=(1024, 1440),
        metavar=("ROWS", "COLS"),
        help="square image shape (1024 1440)",
    )
    p = parser.add_argument_group("policy (Leginon 'target grouping' and per-square holes)")
    p.add_argument("--squares-per-grid", type=int, default=10, metavar="N", help="squares per grid (10)")
    p.add_argument("--classes", type=int, default=1, metavar="K", help="classes to spread squares over (1)")
    p.add_argument("--class-key", choices=CLASS_KEYS, default="size", help="square property of the classes")
    p.add_argument(
        "--group-method",
        choices=GROUP_METHODS,
        default="target count",
        help="equal-count classes or equal value steps",
    )
    p.add_argument("--value-min", type=float, default=None, help="value range start for 'value delta'")
    p.add_argument("--value-max", type=float, default=None, help="value range end for 'value delta'")
    p.add_argument("--min-square-score", type=float, default=0.0, metavar="S", help="skip squares below (0)")
    p.add_argument("--holes-per-square", type=int, default=4, metavar="N", help="exposures per square (4)")
    p.add_argument("--min-hole-score", type=float, default=0.0, metavar="S", help="skip holes below (0)")


# Seams for tests and for swapping the simulators; imported lazily (heavy).
def _simulate_atlas(seed: int, size: int):
    from ..synth import simulate_atlas

    return simulate_atlas(seed, shape=(size, size))


def _simulate_square(seed: int, shape):
    from ..synth import simulate_square_image

    return simulate_square_image(seed, shape=tuple(shape))


def _find_squares(sim):
    from ..squares import find_squares

    return find_squares(sim.data, pixel_size_nm=sim.pixel_size_nm).targets


def _find_holes(sim):
    from ..holes import find_holes

    return find_holes(sim.data, pixel_size_nm=sim.pixel_size_nm).targets


def _fmt(value, spec: str) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "-"
    return format(v, spec) if math.isfinite(v) else "-"


def run(args: argparse.Namespace) -> int:
    from ..errors import PtolemyInputError
    from ..screening import ScreeningPolicy, run_screening

    if args.grids < 1:
        raise PtolemyInputError("--grids must be at least 1")
    if args.atlas_size < 64 or min(args.square_size) < 64:
        raise PtolemyInputError("images must be at least 64 px on a side")
    policy = ScreeningPolicy(
        squares_per_grid=args.squares_per_grid,
        square_classes=args.classes,
        class_key=args.class_key,
        group_method=args.group_method,
        value_min=args.value_min,
        value_max=args.value_max,
        min_square_score=args.min_square_score,
        holes_per_square=args.holes_per_square,
        min_hole_score=args.min_hole_score,
    )
    seeds = [args.seed + k for k in range(args.grids)]
    plans = run_screening(
        seeds,
        policy,
        atlas_for=lambda seed: _simulate_atlas(seed, args.atlas_size),
        find_squares=_find_squares,
        square_image_for=lambda seed, target, rank: _simulate_square(seed * 1000 + rank, args.square_size),
        find_holes=_find_holes,
    )
    print(
        f"policy: {policy.squares_per_grid} squares/grid in {policy.square_classes} class(es) of "
        f"{policy.class_key} ({policy.group_method}), min score {policy.min_square_score:g}; "
        f"{policy.holes_per_square} exposures/square, min hole score {policy.min_hole_score:g}"
    )
    n_sq = n_ex = 0
    for k, plan in enumerate(plans, start=1):
        print(
            f"\ngrid {k} (seed {plan.grid}): {plan.n_squares_found} squares found, {len(plan.squares)} chosen"
        )
        if not plan.squares:
            continue
        print(
            f"  {'rank':>4} {'class':>5} {'score':>6} {'area px2':>9} {'bright':>8} {'ice nm':>7} "
            f"{'x':>7} {'y':>7}  {'holes':>5}  exposures (score)"
        )
        for s in plan.squares:
            t = s.square
            ice = t.features.get("ice_thickness_nm")
            shots = ", ".join(f"{h.score:.2f}" for h in s.holes) or "-"
            print(
                f"  {s.rank:>4} {s.klass + 1:>5} {t.score:6.3f} {_fmt(t.area, '9.0f')} "
                f"{_fmt(t.brightness, '8.1f')} {_fmt(ice, '7.0f'):>7} {t.center[1]:7.1f} {t.center[0]:7.1f}  "
                f"{s.n_holes_found:>5}  {len(s.holes)} ({shots})"
            )
            n_sq += 1
            n_ex += len(s.holes)
    print(f"\ntotal: {len(plans)} grids, {n_sq} squares, {n_ex} exposures")
    return 0
