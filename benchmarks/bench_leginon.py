"""Cost of one drop-in script call as Leginon makes it: in-process vs the resident worker.

Leginon's MosaicScoreTargetFinder sources ``sq_finding.sh`` once per atlas
tile and ScoreTargetFinder sources ``hole_finding.sh`` once per square image.
This times ``bash -c 'source SCRIPT JOB IMAGE OUTDIR'`` on a simulated
1024² atlas tile and a 2048² square image, first with the finder in the
script's own process (``PTOLEMY_NO_WORKER=1``), then with ``ptolemy serve``
running on a free loopback port (first call warms the worker up and is shown
separately). Prints a markdown table.

    .venv/bin/python benchmarks/bench_leginon.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "ptolemy_leginon" / "scripts"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _call(script: Path, job: str, image: Path, env: dict) -> float:
    start = time.perf_counter()
    res = subprocess.run(
        ["bash", "-c", 'source "$0" "$1" "$2" "$3"', str(script), job, str(image), str(image.parent)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    dt = time.perf_counter() - start
    if res.returncode != 0 or not (image.parent / f"{job}.json").exists():
        raise SystemExit(f"{script.name} failed: {res.stderr.strip()}")
    (image.parent / f"{job}.json").unlink()
    return dt


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from ptolemy_core.synth import simulate_atlas, simulate_square_image

    tmp = Path(tempfile.mkdtemp(prefix="bench leginon "))
    try:
        tile, _ = simulate_atlas(5, shape=(1024, 1024), montage=False).save(tmp / "tile")
        hole, _ = simulate_square_image(
            40, shape=(2048, 2048), film="gold", contrast="normal", lattice="square"
        ).save(tmp / "hole")
        base = dict(os.environ, PTOLEMY_PYTHON=sys.executable)
        rows = []
        inproc = dict(base, PTOLEMY_NO_WORKER="1")
        for name, script, image in (
            ("sq_finding.sh, 1024² tile", SCRIPTS / "sq_finding.sh", tile),
            ("hole_finding.sh, 2048² image", SCRIPTS / "hole_finding.sh", hole),
        ):
            rows.append(
                [name, "in-process"] + [_call(script, "j", image, inproc) for _ in range(args.repeat)]
            )
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        state = tmp / "state"
        state.mkdir()
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ptolemy_core.cli.main",
                "serve",
                "--port",
                str(port),
                "--state-dir",
                str(state),
                "--log-level",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(120):
                try:
                    urllib.request.urlopen(url + "/", timeout=1)
                    break
                except OSError:
                    time.sleep(0.5)
            worker = dict(base, PTOLEMY_WORKER_URL=url)
            worker.pop("PTOLEMY_NO_WORKER", None)
            for name, script, image in (
                ("sq_finding.sh, 1024² tile", SCRIPTS / "sq_finding.sh", tile),
                ("hole_finding.sh, 2048² image", SCRIPTS / "hole_finding.sh", hole),
            ):
                first = _call(script, "j", image, worker)
                rows.append(
                    [name, f"worker (first call {first:.1f} s)"]
                    + [_call(script, "j", image, worker) for _ in range(args.repeat)]
                )
        finally:
            server.terminate()
            server.wait(timeout=30)
        print(f"\n| script call | finder | median s (of {args.repeat}) | min s |")
        print("|---|---|---|---|")
        for name, mode, *t in rows:
            print(f"| {name} | {mode} | {statistics.median(t):.2f} | {min(t):.2f} |")
        print(f"\n{os.cpu_count()} CPUs; timings include bash, Python start-up and the JSON write.")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
