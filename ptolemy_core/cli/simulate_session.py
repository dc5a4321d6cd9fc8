"""`ptolemy simulate-session`: play simulated screening sessions and compare ranking policies."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sessions", type=int, default=30, metavar="N",
                        help="seeded sessions per scenario (default: 30)")
    parser.add_argument("--seed", type=int, default=1000, help="first seed (default: 1000)")
    parser.add_argument("--split", choices=("train", "test"), default="test",
                        help="parameter ranges: 'train' (tuning) or held-out 'test' (default)")
    parser.add_argument("--budget", type=int, default=100, help="exposures per session (default: 100)")
    parser.add_argument("--per-square", type=int, default=5, help="exposures per square (default: 5)")
    parser.add_argument("--interval", type=int, default=1,
                        help="reorder after more than this many squares (looplearn --interval, default 1)")
    parser.add_argument("--scenarios", default="usual,thick,thin",
                        help="comma-separated: usual, thick, thin (default: all)")
    parser.add_argument("--policies", default="random,prior,reference-gp,ours",
                        help="comma-separated subset of random, prior, reference-gp, ours")
    parser.add_argument("--ucb-beta", type=float, default=None, help="override the square UCB weight")
    parser.add_argument("--hole-ucb-beta", type=float, default=None, help="override the hole UCB weight")
    parser.add_argument("--prior-wrong-log-odds", type=float, default=None, metavar="TAU",
                        help="override the square evidence test's margin (inf = prior order, -inf = no test)")
    parser.add_argument("--hole-prior-wrong-log-odds", type=float, default=None, metavar="TAU",
                        help="override the hole evidence test's margin (inf = prior order, -inf = no test)")
    parser.add_argument("--hole-square-offset", action="store_true",
                        help="give the hole test's models a random offset per square "
                             "(AdaptiveSettings.hole_square_offset)")
    parser.add_argument("--tune-evidence", action="store_true",
                        help="grid-search the evidence margin (both tests) against prior-only and pick it "
                             "by the rule of AdaptiveSettings.prior_wrong_log_odds (use with --split train)")
    parser.add_argument("--tune-hole-evidence", action="store_true",
                        help="second stage: grid-search the hole test's margin with the square margin "
                             "fixed (--prior-wrong-log-odds), same rule (use with --split train)")
    parser.add_argument("--tune-grid", default="0,1,2,3,5,8", metavar="TAUS",
                        help="margins tried by --tune-evidence / --tune-hole-evidence (default: 0,1,2,3,5,8)")
    parser.add_argument("--tune", action="store_true",
                        help="grid-search the UCB weights (use with --split train) and print the grid")
    parser.add_argument("--plot", default=None, metavar="PNG", help="write cumulative-good curves (PNG)")
    parser.add_argument("--json", default=None, metavar="PATH", help="write per-session counts (JSON)")


def _table(res: dict, scenarios, policies) -> str:
    import numpy as np

    lines = ["| scenario | sessions | " + " | ".join(policies)
             + " | ours vs prior | ours < prior | worst ours - prior |",
             "|---|---:|" + "---:|" * len(policies) + "---:|---:|---:|"]
    for sc in scenarios:
        good = res["good"][sc]
        n = len(next(iter(good.values())))
        cells = [f"{np.mean(good[p]):.1f} ± {np.std(good[p]):.1f}" for p in policies]
        gain = worse = worst = ""
        if "ours" in good and "prior" in good:
            diff = np.asarray(good["ours"]) - np.asarray(good["prior"])
            gain = f"{100 * (np.mean(good['ours']) / max(np.mean(good['prior']), 1e-9) - 1):+.0f} %"
            worse = f"{int(np.sum(diff < 0))}/{n}"
            worst = f"{int(diff.min()):+d}"
        lines.append(f"| {sc} | {n} | " + " | ".join(cells) + f" | {gain} | {worse} | {worst} |")
    return "\n".join(lines)


def _plot(res: dict, scenarios, policies, path: str, budget: int) -> None:
    from PIL import Image, ImageDraw

    colours = {"random": (150, 150, 150), "prior": (31, 119, 180), "reference-gp": (255, 127, 14),
               "ours": (44, 160, 44)}
    pw, ph, m = 360, 300, 40
    img = Image.new("RGB", (pw * len(scenarios), ph + 40), "white")
    d = ImageDraw.Draw(img)
    for k, sc in enumerate(scenarios):
        x0, y0 = k * pw + m, 30
        w, h = pw - m - 15, ph - 60
        d.rectangle([x0, y0, x0 + w, y0 + h], outline=(0, 0, 0))
        d.text((x0, 8), f"{sc} sessions: mean good exposures", fill=(0, 0, 0))
        for frac in (0, 0.5, 1.0):
            yy = y0 + h - frac * h
            d.line([x0 - 4, yy, x0, yy], fill=(0, 0, 0))
            d.text((x0 - 30, yy - 6), f"{frac * budget:.0f}", fill=(0, 0, 0))
            xx = x0 + frac * w
            d.text((xx - 8, y0 + h + 4), f"{frac * budget:.0f}", fill=(0, 0, 0))
        d.text((x0 + w // 2 - 30, y0 + h + 18), "exposures", fill=(0, 0, 0))
        for p in policies:
            curve = res["curves"][sc][p]
            pts = [(x0 + (i + 1) / budget * w, y0 + h - v / budget * h) for i, v in enumerate(curve)]
            if len(pts) > 1:
                d.line(pts, fill=colours.get(p, (0, 0, 0)), width=2)
    for j, p in enumerate(policies):
        x = 10 + j * 150
        d.line([x, ph + 25, x + 25, ph + 25], fill=colours.get(p, (0, 0, 0)), width=3)
        d.text((x + 30, ph + 19), p, fill=(0, 0, 0))
    img.save(path)


def run(args: argparse.Namespace) -> int:
    import json
    from dataclasses import replace

    import numpy as np

    from ..adaptive import AdaptiveSettings
    from ..adaptive.simulate import POLICIES, SCENARIOS, run_benchmark
    from ..errors import PtolemyInputError
    from .common import check_output_path

    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    for s in scenarios:
        if s not in SCENARIOS:
            raise PtolemyInputError(f"unknown scenario {s!r} (choose from {', '.join(SCENARIOS)})")
    for p in policies:
        if p not in POLICIES:
            raise PtolemyInputError(f"unknown policy {p!r} (choose from {', '.join(POLICIES)})")
    if args.sessions < 1 or args.budget < 1 or args.per_square < 1:
        raise PtolemyInputError("--sessions, --budget and --per-square must be positive")
    # output paths are checked before minutes of simulation, not after
    for flag, path in (("--plot", args.plot), ("--json", args.json)):
        if path:
            check_output_path(path, flag)
    settings = AdaptiveSettings()
    if args.ucb_beta is not None:
        settings = replace(settings, ucb_beta=args.ucb_beta)
    if args.hole_ucb_beta is not None:
        settings = replace(settings, hole_ucb_beta=args.hole_ucb_beta)
    for flag, tau in (("--prior-wrong-log-odds", args.prior_wrong_log_odds),
                      ("--hole-prior-wrong-log-odds", args.hole_prior_wrong_log_odds)):
        if tau is not None and np.isnan(tau):
            raise PtolemyInputError(f"{flag} must be a number, inf or -inf, not nan")
    if args.prior_wrong_log_odds is not None:
        settings = replace(settings, prior_wrong_log_odds=args.prior_wrong_log_odds)
    if args.hole_prior_wrong_log_odds is not None:
        settings = replace(settings, hole_prior_wrong_log_odds=args.hole_prior_wrong_log_odds)
    if args.hole_square_offset:
        settings = replace(settings, hole_square_offset=True)
    seeds = range(args.seed, args.seed + args.sessions)
    common = dict(split=args.split, budget=args.budget, per_square=args.per_square, interval=args.interval)
    if args.tune_evidence or args.tune_hole_evidence:
        try:
            taus = [float(t) for t in args.tune_grid.split(",") if t.strip()]
        except ValueError:
            taus = []
        if not taus or any(np.isnan(t) for t in taus):
            raise PtolemyInputError(
                f"--tune-grid: {args.tune_grid!r} is not a comma-separated list of numbers")
        holes_only = bool(args.tune_hole_evidence)
        what = (f"hole margin (square margin {settings.prior_wrong_log_odds:g})" if holes_only
                else "margin (both tests)")
        print(f"| {what} | " + " | ".join(f"{sc}: gain, worse, worst, lost" for sc in scenarios) + " |")
        print("|---:|" + "---|" * len(scenarios))
        base = run_benchmark(seeds, scenarios=scenarios, policies=("prior",), settings=settings, **common)
        chosen = never_worse = None
        for tau in sorted(taus):
            s = (replace(settings, hole_prior_wrong_log_odds=tau) if holes_only
                 else replace(settings, prior_wrong_log_odds=tau, hole_prior_wrong_log_odds=tau))
            res = run_benchmark(seeds, scenarios=scenarios, policies=("ours",), settings=s, **common)
            cells, meets, ok_usual = [], True, False
            for sc in scenarios:
                ours, prior = np.asarray(res["good"][sc]["ours"]), np.asarray(base["good"][sc]["prior"])
                d = ours - prior
                gain = 100 * (ours.mean() / max(prior.mean(), 1e-9) - 1)
                cells.append(f"{gain:+.1f} %, {int(np.sum(d < 0))}/{len(d)}, {int(d.min()):+d}, "
                             f"{int(d[d < 0].sum()):+d}")
                # The rule: no session worse where the prior is right ("usual"), >= 25 % more
                # good exposures where it is wrong ("thick", "thin").
                if sc == "usual":
                    ok_usual = bool(np.all(d >= 0))
                    meets &= ok_usual
                else:
                    meets &= gain >= 25.0
            print(f"| {tau:g} | " + " | ".join(cells) + " |", flush=True)
            if meets and chosen is None:
                chosen = tau
            if "usual" in scenarios and ok_usual and never_worse is None:
                never_worse = tau
        print("rule: the smallest margin with no usual session worse than prior-only and >= 25 % more good "
              "exposures than prior-only on thick and thin: "
              + (f"{chosen:g}" if chosen is not None else "none of the grid; the smallest with no usual "
                 "session worse (never worse first): "
                 + (f"{never_worse:g}" if never_worse is not None else "none")))
        return 0
    if args.tune:
        print("| ucb_beta | hole_ucb_beta | " + " | ".join(scenarios) + " | mean |")
        print("|---:|---:|" + "---:|" * len(scenarios) + "---:|")
        best = None
        for beta in (0.0, 0.5, 1.0, 2.0):
            for hbeta in (0.0, 0.25, 0.5):
                s = replace(settings, ucb_beta=beta, hole_ucb_beta=hbeta)
                res = run_benchmark(seeds, scenarios=scenarios, policies=("ours",), settings=s, **common)
                means = [float(np.mean(res["good"][sc]["ours"])) for sc in scenarios]
                print(f"| {beta} | {hbeta} | " + " | ".join(f"{v:.1f}" for v in means)
                      + f" | {np.mean(means):.1f} |", flush=True)
                if best is None or np.mean(means) > best[0]:
                    best = (float(np.mean(means)), beta, hbeta)
        print(f"best: ucb_beta={best[1]} hole_ucb_beta={best[2]} (mean {best[0]:.1f} good exposures)")
        return 0
    res = run_benchmark(seeds, scenarios=scenarios, policies=policies, settings=settings, **common)
    print(f"good exposures (CTF < {settings.ctf_good_A:g} Å) in a budget of {args.budget}, "
          f"{args.per_square} per square, split {args.split}, "
          f"seeds {args.seed}..{args.seed + args.sessions - 1}, "
          f"ucb_beta {settings.ucb_beta:g}, hole_ucb_beta {settings.hole_ucb_beta:g}, "
          f"prior_wrong_log_odds {settings.prior_wrong_log_odds:g} (mean ± sd):")
    print()
    print(_table(res, scenarios, policies))
    print()
    oracle = ", ".join(f"{sc} {np.mean(res['oracle'][sc]):.1f}" for sc in scenarios)
    print(f"Best possible (all good holes known): {oracle}.")
    if args.plot:
        _plot(res, scenarios, policies, args.plot, args.budget)
        print(f"plot: {args.plot}", file=sys.stderr)
    if args.json:
        from ..atomic import write_atomic

        write_atomic(args.json, json.dumps({"good": res["good"], "oracle": res["oracle"],
                                            "settings": settings.to_dict(), "args": common}, indent=1))
    return 0
