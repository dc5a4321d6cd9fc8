"""Batch throughput: images per minute, serial vs all local cores (vs a Dask LocalCluster).

Simulates ``--n`` 1024x1024 atlases and ``--n`` 1024x1440 square images (simulation
time is not counted), then times ``ptolemy_core.batch.run_batch`` — exactly what
``ptolemy batch`` runs — on them:

* serial: ``jobs=1``, in this process (finder imported and warmed up first);
* pool: ``jobs=os.cpu_count()`` spawn worker processes; the time includes starting
  the workers and loading the finder/models in each (what a user waits for);
* dask (``--dask``): a ``LocalCluster`` with one single-threaded worker process per core.

Prints a markdown table and replaces the "## Batch" section of ``benchmarks/README.md``
(unless ``--no-readme``). Figures on a shared machine are inflated by other jobs.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from readme_section import update_section  # noqa: E402  (benchmarks/ is on sys.path)

HERE = Path(__file__).resolve().parent


def simulate(folder: Path, kind: str, n: int, seed0: int) -> list[Path]:
    from ptolemy_core.synth import simulate_atlas, simulate_square_image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        if kind == "lowmag":
            sim = simulate_atlas(seed0 + k, shape=(1024, 1024))
        else:
            sim = simulate_square_image(seed0 + k, shape=(1024, 1440))
        mrc, truth = sim.save(folder / f"{kind}_{k:03d}")
        truth.unlink()  # only images in the input folder
        paths.append(mrc)
    return paths


def time_run(paths, kind, out: Path, **kwargs) -> tuple[float, float, int, int, float]:
    """Wall time, steady rate (images/min between the first and last completion), ok, errors, s/image."""
    from ptolemy_core.batch import run_batch

    stamps: list[float] = []
    start = time.perf_counter()
    res = run_batch(paths, kind, out, resume=False, progress=lambda *a: stamps.append(time.perf_counter()),
                    **kwargs)
    wall = time.perf_counter() - start
    steady = (len(stamps) - 1) / (stamps[-1] - stamps[0]) * 60 if len(stamps) > 1 else float("nan")
    per_image = [r.seconds for r in res.records if r.status == "ok" and r.seconds is not None]
    mean = sum(per_image) / len(per_image) if per_image else float("nan")
    for r in res.records:
        if r.status == "error":
            print(f"  error: {Path(r.file).name}: {r.error}", file=sys.stderr)
    return wall, steady, res.n_ok, res.n_error, mean


def update_readme(section: str) -> None:
    update_section("bench_batch", section)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8, help="images per kind (default 8)")
    parser.add_argument("--kinds", default="lowmag,medmag", help="comma-separated (default lowmag,medmag)")
    parser.add_argument("--dask", action="store_true", help="also time a Dask LocalCluster")
    parser.add_argument("--no-readme", action="store_true", help="do not update benchmarks/README.md")
    opts = parser.parse_args()

    from ptolemy_core.batch.finders import run_finder
    from ptolemy_core.errors import PtolemyUnavailableError
    from ptolemy_core.io import read_image

    cores = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_batch_") as tmp:
        work = Path(tmp)
        for kind in opts.kinds.split(","):
            what = "atlas 1024x1024" if kind == "lowmag" else "square image 1024x1440"
            paths = simulate(work / kind, kind, opts.n, 1000 if kind == "lowmag" else 2000)
            try:  # warm the serial path (imports, model loading) so it is not charged to image 1
                run_finder(read_image(paths[0]), kind)
            except PtolemyUnavailableError as exc:
                rows.append((what, "-", "-", "-", "-", "-", f"finder not available: {exc}"))
                print(f"{kind}: skipped, {exc}", file=sys.stderr)
                continue
            runs = [("serial (jobs=1)", {"jobs": 1}), (f"pool (jobs={cores})", {"jobs": cores})]
            cluster = None
            if opts.dask:
                from dask.distributed import LocalCluster

                cluster = LocalCluster(n_workers=cores, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None)
                runs.append((f"dask LocalCluster ({cores} procs)", {"scheduler": cluster.scheduler_address}))
            try:
                for label, kwargs in runs:
                    wall, steady, ok, err, mean = time_run(paths, kind, work / f"out_{kind}_{len(rows)}",
                                                           **kwargs)
                    rate = ok / wall * 60 if wall > 0 else float("nan")
                    rows.append((what, label, f"{opts.n}", f"{wall:.1f}", f"{rate:.1f}", f"{steady:.1f}",
                                 f"{mean:.2f}" + (f"; {err} errors" if err else "")))
                    print(f"{kind} {label}: {wall:.1f} s, {rate:.1f} images/min ({steady:.1f} steady)",
                          file=sys.stderr)
            finally:
                if cluster is not None:
                    cluster.close()

    head = ["| images | run | n | wall s | images/min (wall) | images/min (steady) | s/image in worker |",
            "|---|---|---|---|---|---|---|"]
    table = "\n".join(head + ["| " + " | ".join(r) + " |" for r in rows])
    cmd = "python benchmarks/bench_batch.py" + (f" --n {opts.n}" if opts.n != 8 else "") + (
        " --dask" if opts.dask else "")
    section = (f"## Batch\n\n`{cmd}` on {platform.node()} ({cores} CPUs, shared with other jobs: "
               f"times are inflated). Wall time includes starting the pool workers and loading the "
               f"finder and models once per worker; simulation is not counted. \"steady\" = rate between "
               f"the first and the last finished image (start-up excluded), what a long batch "
               f"approaches.\n\n{table}\n")
    print(section)
    if not opts.no_readme:
        update_readme(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
