"""Adaptive ranking on simulated sessions + learning-server timings (``make bench``).

1. Plays seeded simulated screening sessions (held-out "test" split: other
   seeds and wider parameter ranges than the "train" split the UCB weights
   were chosen on) with four policies and prints good exposures (CTF < 5 Å)
   within the budget; writes ``benchmarks/adaptive_sessions.png``.
2. Times ``ptolemy serve`` over real loopback HTTP: a 1024² atlas-tile
   ``push_lm`` and a 1024 × 1440 ``push_and_evaluate_mm`` (server time =
   JSON decoding + finder + state update, measured inside the server), with
   the real finders when they are installed.

Updates the "Adaptive ranking" section of ``benchmarks/README.md`` (unless
``--no-readme``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from readme_section import update_section  # noqa: E402  (benchmarks/ is on sys.path)

HERE = Path(__file__).resolve().parent


def update_readme(section: str) -> None:
    update_section("bench_adaptive", section)


def sessions_table(n: int, budget: int, plot: Path) -> str:
    cmd = [sys.executable, "-m", "ptolemy_core.cli.main", "simulate-session", "--sessions", str(n),
           "--budget", str(budget), "--split", "test", "--plot", str(plot)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return out


def _serve(state_dir: Path):
    import uvicorn

    from ptolemy_core.server.app import create_app

    app = create_app(state_dir)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return app, server, thread, f"http://127.0.0.1:{sock.getsockname()[1]}"


def server_timings(repeats: int = 5) -> tuple[str, list[str]]:
    import httpx

    from ptolemy_core.server import state as state_mod

    notes = []
    try:
        from ptolemy_core.synth import simulate_atlas, simulate_square_image

        tile = np.asarray(simulate_atlas(1, shape=(1024, 1024)).data)
        mm = np.asarray(simulate_square_image(1, shape=(1024, 1440)).data)
    except Exception as exc:  # noqa: BLE001 - fall back to plain counts, say so
        notes.append(f"simulators unavailable ({type(exc).__name__}); Poisson images used")
        rng = np.random.default_rng(0)
        tile = rng.poisson(800, (1024, 1024)).astype(np.int32)
        mm = rng.poisson(60, (1024, 1440)).astype(np.int32)
    # Images travel as Leginon sends them: integer counts in nested lists.
    tile = np.rint(tile).astype(np.int64)
    mm = np.rint(mm).astype(np.int64)
    tile_l = tile.tolist()
    mm_l = mm.tolist()
    # A gain-corrected float32 frame (what a client sends with arr.tolist(): 17-digit reprs).
    mm_f = (mm * np.random.default_rng(1).uniform(0.9, 1.1, mm.shape)).astype(np.float32).tolist()
    real = {}
    for name, fn, args in (("squares", state_mod.run_find_squares, (np.asarray(tile, np.float32),)),
                           ("holes", state_mod.run_find_holes, (np.asarray(mm, np.float32), None))):
        try:
            fn(*args)  # warm-up: imports, model loading (once per server process)
            real[name] = True
        except Exception as exc:  # noqa: BLE001 - report which finder is missing
            real[name] = False
            notes.append(f"{name} finder unavailable here ({type(exc).__name__}: {exc}); "
                         "timed with a no-op finder (server overhead only)")
    from types import SimpleNamespace

    empty = SimpleNamespace(targets=[], i0=None, notes=())
    orig = (state_mod.run_find_squares, state_mod.run_find_holes)
    if not real["squares"]:
        state_mod.run_find_squares = lambda image: empty
    if not real["holes"]:
        state_mod.run_find_holes = lambda image, i0: empty
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmp:
            app, server, thread, url = _serve(Path(tmp))
            http = httpx.Client(base_url=url, timeout=600, trust_env=False)
            http.post("/initialize_new_session", content=b'{"historical_state_paths": []}')
            cases = [("push_lm 1024x1024", "/push_lm", "push_lm",
                      {"image": tile_l, "grid_id": 1, "tile_id": 1}, "squares"),
                     ("push_and_evaluate_mm 1024x1440", "/push_and_evaluate_mm", "push_and_evaluate_mm",
                      {"image": mm_l, "grid_id": 1, "square_id": 0, "mm_img_id": 1}, "holes"),
                     ("push_and_evaluate_mm 1024x1440 float32", "/push_and_evaluate_mm",
                      "push_and_evaluate_mm",
                      {"image": mm_f, "grid_id": 1, "square_id": 0, "mm_img_id": 1}, "holes")]
            for label, path, key, payload, finder in cases:
                body = json.dumps(payload).encode()
                server_t, wall, stages = [], [], []
                for k in range(repeats):
                    if "tile_id" in payload:
                        payload["tile_id"] = 10 + k
                        body = json.dumps(payload).encode()
                    t0 = time.perf_counter()
                    r = http.post(path, content=body)
                    wall.append(time.perf_counter() - t0)
                    r.raise_for_status()
                    server_t.append(app.state.timings[key])
                    stages.append([app.state.timings[f"{key}.{x}"] for x in ("decode", "finder", "state")])
                k = int(np.argmin(server_t))
                dec, fnd, sta = stages[k]
                rows.append(f"| {label} | {len(body) / 1e6:.1f} | {'real' if real[finder] else 'no-op'} | "
                            f"{min(server_t):.2f} / {np.median(server_t):.2f} | {dec:.2f} | {fnd:.2f} | "
                            f"{sta:.3f} | {min(wall):.2f} |")
            http.close()
            server.should_exit = True
            thread.join(10)
            app.state.ptolemy.store.close()
    finally:
        state_mod.run_find_squares, state_mod.run_find_holes = orig
    table = "\n".join([
        "| request | body MB | finder | server s (min / median of 5) | of which: JSON decode s "
        "| finder s | ranking + SQLite + CSV s | client wall s (min) |",
        "|---|---:|---|---:|---:|---:|---:|---:|", *rows])
    return table, notes


def decode_timings(repeats: int = 5) -> str:
    """JSON decoding of a 1024 x 1440 image body: plain ``json`` vs the fast path, ints and floats.

    Float bodies are what a client sends for a gain-corrected float32 frame
    (``arr.tolist()``: 17-digit reprs) and for short decimals; each result is
    checked bit-identical to ``np.asarray(json.loads(body)["image"], float32)``.
    """
    from ptolemy_core.server.decode import split_image_body

    rng = np.random.default_rng(0)
    counts = rng.poisson(300.0, (1024, 1440))
    cases = [("integer counts", counts.tolist()),
             ("float32 frame (17-digit reprs)", (counts * rng.uniform(0.9, 1.1, counts.shape))
              .astype(np.float32).tolist()),
             ("2-decimal floats", np.round(counts * rng.uniform(0.9, 1.1, counts.shape), 2).tolist())]
    rows = ["| 1024 x 1440 image body | MB | json s (min / median of "
            f"{repeats}) | json CPU s | fast path s (min / median) | fast CPU s | identical |",
            "|---|---:|---:|---:|---:|---:|---|"]
    for label, img in cases:
        body = json.dumps({"image": img, "grid_id": 1, "square_id": 0, "mm_img_id": 1}).encode()
        out = {}
        for name, fn in (("json", lambda b=body: np.asarray(json.loads(b)["image"], dtype=np.float32)),
                         ("fast", lambda b=body: split_image_body(b)[1])):
            wall, cpu = [], []
            for _ in range(repeats):
                t0, c0 = time.perf_counter(), time.process_time()
                res = fn()
                wall.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            out[name] = (res, min(wall), float(np.median(wall)), min(cpu))
        same = np.array_equal(out["json"][0].view(np.uint32), out["fast"][0].view(np.uint32))
        rows.append(f"| {label} | {len(body) / 1e6:.1f} | {out['json'][1]:.2f} / {out['json'][2]:.2f} | "
                    f"{out['json'][3]:.2f} | {out['fast'][1]:.2f} / {out['fast'][2]:.2f} | "
                    f"{out['fast'][3]:.2f} | {'yes' if same else 'NO'} |")
    return "\n".join(rows)


def end_to_end(seeds, scenarios=("usual", "thick"), n_squares: int = 6, per_square: int = 4, trace=None):
    """Smaller end-to-end variant: real simulators + real finders + the server's state object.

    Per session: one simulated 1024² atlas (its truth gives each square's ice
    and defect), our square finder through ``push_lm``; each visited square is
    rendered by the square-image simulator at that square's ice thickness,
    our hole finder runs through ``push_and_evaluate_mm``, the exposed holes
    are matched to the simulator's truth and the documented CTF model gives
    their CTF. "prior": no feedback (server order = our finders' scores);
    "ours": ``visit_holes`` after each exposure, ``select_next_square`` after
    every second square (looplearn's default interval).
    """
    import csv
    import io

    from ptolemy_core.adaptive.simulate import ctf_resolution, draw_window
    from ptolemy_core.server.state import ServerState, run_find_holes, run_find_squares
    from ptolemy_core.synth import simulate_atlas, simulate_square_image

    def rows_of(text):
        return list(csv.DictReader(io.StringIO(text)))

    cache: dict = {}
    results = {sc: {"prior": [], "ours": []} for sc in scenarios}
    for sc in scenarios:
        for seed in seeds:
            rng = np.random.default_rng([seed, 99])
            window = draw_window(sc, "test", rng)
            r_best = float(rng.uniform(2.8, 3.6))
            key = ("atlas", seed)
            if key not in cache:
                atlas = simulate_atlas(seed, shape=(1024, 1024), montage=False)
                tile = np.asarray(atlas.data, np.float32)
                cache[key] = (atlas.truth, tile, run_find_squares(tile))
            truth, tile, sq_result = cache[key]
            t_sq = truth["squares"]
            t_xy = np.array([q["center"] for q in t_sq])
            for policy in ("prior", "ours"):
                with tempfile.TemporaryDirectory(prefix="e2e_") as tmp:
                    st = ServerState(tmp)
                    st.initialize()
                    st.add_squares(st.square_rows_from_result(sq_result, 1, 1))
                    lm = rows_of(st.lm_state_csv())
                    # Leginon drops squares on the atlas edge: keep those >= 90 % visible in truth.
                    match = {}
                    for r in lm:
                        d = np.hypot(t_xy[:, 0] - float(r["center_x"]), t_xy[:, 1] - float(r["center_y"]))
                        j = int(np.argmin(d))
                        if d[j] < 30 and t_sq[j]["visible_fraction"] >= 0.9:
                            match[int(r["square_id"])] = j
                    lm_sorted = sorted(lm, key=lambda r: -float(r["prior_score"]))
                    order = [int(r["square_id"]) for r in lm_sorted if int(r["square_id"]) in match]
                    good = visited = since = 0
                    done: set[int] = set()
                    while order and visited < n_squares:
                        sid = order.pop(0)
                        if sid in done:
                            continue
                        done.add(sid)
                        q = t_sq[match[sid]]
                        hkey = ("mm", seed, sid)
                        if hkey not in cache:
                            ice = {"broken": 2.0, "empty": 0.0, "opaque": 400.0}.get(
                                q["defect"], q["ice_thickness_nm"])
                            extra = {"defect_rate": 0.4} if q["defect"] in ("contaminated", "cracked") else {}
                            img = simulate_square_image(seed * 1000 + sid, shape=(512, 720),
                                                        ice_nm=max(ice, 0.0), **extra)
                            data = np.asarray(img.data, np.float32)
                            cache[hkey] = (img.truth, run_find_holes(data, None))
                        htruth, h_result = cache[hkey]
                        csv_text = st.add_holes(st.hole_rows_from_result(h_result, 1, sid, len(done)))
                        holes = rows_of(csv_text)[:per_square]
                        th_all = htruth["holes"]
                        hx = np.array([h["center"] for h in th_all]).reshape(-1, 2)
                        for h in holes:
                            x, y = float(h["center_x"]), float(h["center_y"])
                            d = np.hypot(hx[:, 0] - x, hx[:, 1] - y)
                            j = int(np.argmin(d)) if len(d) else -1
                            if j >= 0 and d[j] <= th_all[j]["radius"]:
                                th = th_all[j]
                                t = float(th["ice_thickness_nm"])
                                # One fixed outcome per hole (its own seeded draw), so both
                                # policies see the same CTF when they expose the same hole.
                                hrng = np.random.default_rng([seed, 99, sid, j])
                                ctf = float(ctf_resolution([t], window, r_best,
                                                           [th["defect"] == "contaminated"],
                                                           [th["defect"] == "crystalline"], hrng)[0])
                                ice_m = max(t + float(hrng.normal(0, 5)), 0.0)
                            else:  # not a hole: film or bar, nothing usable
                                ctf, ice_m = 20.0, float("nan")
                            good += ctf < 5.0
                            if trace is not None:
                                trace.append((sc, seed, policy, sid, q["defect"],
                                              round(q["ice_thickness_nm"]), h["prior_score"],
                                              round(t) if ice_m == ice_m else None, round(ctf, 1)))
                            if policy == "ours":
                                st.visit_holes([int(h["hole_id"])], [ctf], [ice_m])
                        visited += 1
                        since += 1
                        if policy == "ours" and since > 1:
                            ranked = rows_of(st.select_next_square(-1))
                            ranked.sort(key=lambda r: -float(r["GP_probs"]))
                            order = [int(r["square_id"]) for r in ranked if int(r["square_id"]) in match]
                            since = 0
                    st.store.close()
                results[sc][policy].append(int(good))
    lines = ["| scenario | sessions | prior | ours | ours vs prior |", "|---|---:|---:|---:|---:|"]
    for sc in scenarios:
        p, o = np.mean(results[sc]["prior"]), np.mean(results[sc]["ours"])
        lines.append(f"| {sc} | {len(results[sc]['prior'])} | {p:.1f} | {o:.1f} | "
                     f"{100 * (o / max(p, 1e-9) - 1):+.0f} % |")
    return "\n".join(lines), results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=30, help="sessions per scenario (default 30)")
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--no-readme", action="store_true")
    parser.add_argument("--skip-sessions", action="store_true", help="only the server timings")
    parser.add_argument("--end-to-end", type=int, default=8, metavar="N",
                        help="seeds per scenario of the real-simulator/real-finder variant (0 = skip)")
    opts = parser.parse_args()
    plot = HERE / "adaptive_sessions.png"
    parts = ["## Adaptive ranking", ""]
    host = f"{platform.node()} ({os.cpu_count()} CPUs, shared: times are inflated by other jobs)"
    if not opts.skip_sessions:
        from ptolemy_core.adaptive import AdaptiveSettings

        margins = (AdaptiveSettings().prior_wrong_log_odds, AdaptiveSettings().hole_prior_wrong_log_odds)
        t0 = time.perf_counter()
        out = sessions_table(opts.sessions, opts.budget, plot)
        print(out, flush=True)
        parts += [
            "Simulated screening sessions (feature level, `ptolemy_core/adaptive/simulate.py`): a grid of "
            "50-110 squares with hidden ice thickness and defects, 25-60 holes per square, observables from "
            "Beer-Lambert with a session-specific mean free path and a mis-set I0, a documented CTF model "
            "of the sample's ice window, Leginon's call order (prior order first, reorder after every "
            "second square as `looplearn --interval 1`), 100 exposures per session, 5 per square. "
            "Scenarios: *usual* (the window our priors assume), *thick* and *thin* (the prior is wrong "
            "for the sample). Policies: random; prior-only (our finders' scores); reference-GP (the "
            "reference server's square GP on crop statistics with its fixed hyper-parameters, holes by "
            "prior); ours (`SessionRanker`: residual GP on squares and holes, session ice calibration, "
            "UCB, and an evidence test per model (squares, holes) that keeps the prior's order *exactly* "
            "until it fires: the GP's log evidence against a 'targets do at least as well as their "
            "scores say, in their order' null model must beat a margin; below it the feedback weight "
            "w is 0 (no move, no exploration), above it w = P(wrong) - P(right) scales the posterior's "
            "move and the exploration bonus). The UCB weights (seeds 0-7 and 100-123) and the evidence "
            f"margins (square {margins[0]:g}, hole {margins[1]:g}; seeds 0-39, rule: the smallest "
            "margin with no usual session worse than prior-only and >= 25 % more good exposures on thick "
            "and thin, else -- as on train, where none met both -- the smallest with no usual session "
            "worse; see `AdaptiveSettings`) were "
            "chosen on the *train* split (narrower ranges); the table is the held-out *test* split "
            "(other seeds, wider ranges), run once with those settings. *ours < prior* counts the "
            "sessions in which ours collected fewer good exposures than prior-only, *worst* is the "
            "largest such shortfall.", "",
            f"`python benchmarks/bench_adaptive.py` (= `ptolemy simulate-session --sessions "
                  f"{opts.sessions} --budget {opts.budget} --split test --plot "
                  f"benchmarks/adaptive_sessions.png`), {time.perf_counter() - t0:.0f} s on {host}.", "",
                  out.strip(), "", "![cumulative good exposures](adaptive_sessions.png)", "",
                  "Against issue #9's goal (>= 25 % over prior-only where the prior is wrong, never worse "
                  "on the rest): before the exact gate (commit 615dd7e: soft weight sigmoid(log BF - 2) "
                  "on squares, holes always adapted) the same test sessions gave usual +18 % with 2/30 "
                  "sessions worse (worst -9), thick +84 %, thin +31 % (3/30 worse, worst -3). With the "
                  "exact gate and margin 4 the usual sessions are never worse on this test split, but "
                  "thin falls just short of +25 % (the train split predicted it: +24.7 % at margin 4; "
                  "the trade-off is in `AdaptiveSettings.prior_wrong_log_odds`).", ""]
    if opts.end_to_end > 0:
        t0 = time.perf_counter()
        e2e, _ = end_to_end(range(opts.end_to_end))
        print(e2e, flush=True)
        parts += ["### End to end: real simulators and finders through the server state", "",
                  f"Seeds 0..{opts.end_to_end - 1} per scenario (test-split windows), "
                  "6 squares x 4 exposures "
                  f"per session, {time.perf_counter() - t0:.0f} s. Square and hole images come from "
                  "`simulate_atlas` / `simulate_square_image` (each visited square rendered at its true ice "
                  "thickness), our finders find them, exposed holes are matched to the simulator's truth and "
                  "the CTF model of `ptolemy_core/adaptive/simulate.py` gives their CTF (one seeded draw "
                  "per hole, so both policies get the same outcome for the same hole). Only 24 exposures "
                  "per session: too few for exploring squares to pay off; the finders' results (and so "
                  "these figures) change as the finders do.", "", e2e, ""]
    load0 = os.getloadavg()[0]
    table, notes = server_timings()
    notes.append(f"1-min load average {load0:.1f} before and {os.getloadavg()[0]:.1f} after the timings "
                 f"({os.cpu_count()} cores); JSON decode = integer and decimal images by numpy "
                 "(`ptolemy_core/server/decode.py`, bit-identical to `json`), anything unusual by `json`")
    print(table)
    for n in notes:
        print("note:", n)
    load1 = os.getloadavg()[0]
    dec = decode_timings()
    print(dec)
    parts += ["### Learning server (`ptolemy serve`), loopback HTTP", "", f"On {host}.", "", table, ""]
    parts += [f"- {n}" for n in notes]
    parts += ["", "JSON decoding alone (`decode_timings` in this script; 1-min load average "
              f"{load1:.1f} before, {os.getloadavg()[0]:.1f} after):", "", dec]
    if not opts.no_readme:
        update_readme("\n".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
