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

HERE = Path(__file__).resolve().parent
MARK_START, MARK_END = "<!-- bench_adaptive:start -->", "<!-- bench_adaptive:end -->"


def update_readme(section: str) -> None:
    from ptolemy_core.atomic import write_atomic

    readme = HERE / "README.md"
    text = readme.read_text() if readme.exists() else "# Benchmarks\n"
    block = f"{MARK_START}\n{section.rstrip()}\n{MARK_END}"
    if MARK_START in text and MARK_END in text:
        head, rest = text.split(MARK_START, 1)
        text = head + block + rest.split(MARK_END, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    write_atomic(readme, text)


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


def server_timings(repeats: int = 3) -> tuple[str, list[str]]:
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
    tile_l = np.rint(tile).astype(np.int64).tolist()
    mm_l = np.rint(mm).astype(np.int64).tolist()
    real, finder_s = {}, {}
    for name, fn, args in (("squares", state_mod.run_find_squares, (np.asarray(tile, np.float32),)),
                           ("holes", state_mod.run_find_holes, (np.asarray(mm, np.float32), None))):
        try:
            fn(*args)  # warm-up: imports, model loading (once per server process)
            t0 = time.perf_counter()
            fn(*args)
            finder_s[name] = time.perf_counter() - t0
            real[name] = True
        except Exception as exc:  # noqa: BLE001 - report which finder is missing
            real[name] = False
            finder_s[name] = float("nan")
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
                      {"image": mm_l, "grid_id": 1, "square_id": 0, "mm_img_id": 1}, "holes")]
            for label, path, key, payload, finder in cases:
                body = json.dumps(payload).encode()
                t0 = time.perf_counter()
                json.loads(body)
                decode = time.perf_counter() - t0
                server_t, wall = [], []
                for k in range(repeats):
                    if "tile_id" in payload:
                        payload["tile_id"] = 10 + k
                        body = json.dumps(payload).encode()
                    t0 = time.perf_counter()
                    r = http.post(path, content=body)
                    wall.append(time.perf_counter() - t0)
                    r.raise_for_status()
                    server_t.append(app.state.timings[key])
                ft = finder_s[finder]
                rows.append(f"| {label} | {len(body) / 1e6:.1f} | {'real' if real[finder] else 'no-op'} | "
                            f"{decode:.2f} | {ft:.2f} | {np.median(server_t):.2f} | "
                            f"{np.median(server_t) - (ft if real[finder] else 0.0):.2f} | "
                            f"{np.median(wall):.2f} |")
            http.close()
            server.should_exit = True
            thread.join(10)
            app.state.ptolemy.store.close()
    finally:
        state_mod.run_find_squares, state_mod.run_find_holes = orig
    table = "\n".join([
        "| request | body MB | finder | json.loads s | finder alone s | server s (median) "
        "| server minus finder s | client wall s |",
        "|---|---:|---|---:|---:|---:|---:|---:|", *rows])
    return table, notes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=30, help="sessions per scenario (default 30)")
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--no-readme", action="store_true")
    parser.add_argument("--skip-sessions", action="store_true", help="only the server timings")
    opts = parser.parse_args()
    plot = HERE / "adaptive_sessions.png"
    parts = ["## Adaptive ranking", ""]
    host = f"{platform.node()} ({os.cpu_count()} CPUs, shared: times are inflated by other jobs)"
    if not opts.skip_sessions:
        t0 = time.perf_counter()
        out = sessions_table(opts.sessions, opts.budget, plot)
        print(out, flush=True)
        parts += [f"`python benchmarks/bench_adaptive.py` (= `ptolemy simulate-session --sessions "
                  f"{opts.sessions} --budget {opts.budget} --split test --plot "
                  f"benchmarks/adaptive_sessions.png`), {time.perf_counter() - t0:.0f} s on {host}.", "",
                  out.strip(), "", "![cumulative good exposures](adaptive_sessions.png)", ""]
    table, notes = server_timings()
    print(table)
    for n in notes:
        print("note:", n)
    parts += ["### Learning server (`ptolemy serve`), loopback HTTP", "", f"On {host}.", "", table, ""]
    parts += [f"- {n}" for n in notes]
    if not opts.no_readme:
        update_readme("\n".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
