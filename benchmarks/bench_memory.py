"""Peak memory and time of whole CLI calls on an 8192 x 8192 int16 MRC (issue 3: <= 1 GB).

Writes a grid-like atlas (Beer-Lambert transmission through ice of varying
thickness, opaque bars, broken squares, vignetting, Poisson counts) strip by
strip into a memory-mapped MRC in a temporary folder, then runs each command in
its own process and reads that process's peak RSS from ``os.wait4`` (exact per
child, unlike RUSAGE_CHILDREN which keeps the maximum over all children).

Commands: Python + imports only (the floor), ``read_image`` alone (with the
in-process read time), ``ptolemy lowmag`` and ``ptolemy medmag``. A command that
fails is reported with its exit code and first stderr line; exit 3 (sub-command
not available yet) is not counted as a failure.

Usage::

    python benchmarks/bench_memory.py [--size 8192] [--dtype int16] [--keep DIR] [--no-readme]

Prints a markdown table and replaces the ``bench_memory`` section of
``benchmarks/README.md`` (unless ``--no-readme``). Exit status 1 when a command
crashes or goes over the limit.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from readme_section import update_section  # noqa: E402  (benchmarks/ is on sys.path)

HERE = Path(__file__).resolve().parent
LIMIT_MB = 1024.0


def write_atlas(path: Path, size: int, dtype: str, seed: int = 0) -> float:
    """Write a ``size`` x ``size`` grid-like atlas to ``path``; returns seconds taken.

    Strips of 512 rows keep this process small (the measurement is of the
    children, but the machine is shared).
    """
    import mrcfile
    from scipy import ndimage as ndi

    from ptolemy_core.synth.physics import quantise, transmission

    rng = np.random.default_rng(seed)
    pixel_nm = 400.0
    pitch = 125_000.0 / 2 / pixel_nm  # 200-mesh grid: 125 um pitch -> ~156 px at 400 nm/px
    bar = 0.25 * pitch
    angle = np.deg2rad(7.0)
    n_cells = int(size / pitch) + 4
    ice = rng.uniform(20.0, 160.0, (2 * n_cells, 2 * n_cells))  # per-square ice thickness (nm)
    ice[rng.random(ice.shape) < 0.05] = 0.0  # broken / empty squares
    ice[rng.random(ice.shape) < 0.05] = 2000.0  # opaque squares
    dose = 4000.0  # counts through vacuum
    halo = 6  # rows of overlap so the PSF blur has no seams between strips
    start = time.perf_counter()
    with mrcfile.new_mmap(path, shape=(size, size), mrc_mode={"int16": 1, "uint16": 6, "float32": 2}[dtype],
                          overwrite=True) as mrc:
        cols = np.arange(size, dtype=np.float32)[None, :]
        for r0 in range(0, size, 512):
            r1 = min(size, r0 + 512)
            a0, a1 = max(0, r0 - halo), min(size, r1 + halo)
            rows = np.arange(a0, a1, dtype=np.float32)[:, None]
            u = (np.cos(angle) * cols + np.sin(angle) * rows) / pitch
            v = (-np.sin(angle) * cols + np.cos(angle) * rows) / pitch
            iu, iv = np.floor(u).astype(np.int32) + n_cells, np.floor(v).astype(np.int32) + n_cells
            on_bar = (np.minimum(u % 1, 1 - u % 1) * pitch < bar / 2) | \
                (np.minimum(v % 1, 1 - v % 1) * pitch < bar / 2)
            trans = transmission(ice=ice[iu % ice.shape[0], iv % ice.shape[1]]).astype(np.float32)
            trans[on_bar] = 0.002
            trans = ndi.gaussian_filter(trans, 1.5)
            r2 = ((rows / size - 0.5) ** 2 + (cols / size - 0.5) ** 2) / 0.5
            mean = dose * trans * (1.0 - 0.15 * r2)
            counts = rng.poisson(mean).astype(np.float32) + 50.0
            mrc.data[r0:r1] = quantise(counts[r0 - a0:r0 - a0 + (r1 - r0)], dtype)
        mrc.voxel_size = pixel_nm * 10.0
    return time.perf_counter() - start


# Runs one command and reports its own peak RSS. A fork copies the parent's
# resident set into the child's ru_maxrss until exec, so the command is started
# from this small stdlib-only process, not from the benchmark (numpy, the image).
WRAPPER = (
    "import os, subprocess, sys, time; t = time.perf_counter(); "
    "p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL); "
    "_, status, usage = os.wait4(p.pid, 0); "
    "print(os.waitstatus_to_exitcode(status), time.perf_counter() - t, usage.ru_maxrss)"
)


def measure(argv: list[str], log: Path) -> tuple[int, float, float, str]:
    """Run ``argv``; return (exit code, seconds, peak RSS in MB, last stderr line)."""
    with open(log, "wb") as err:
        result = subprocess.run([sys.executable, "-S", "-c", WRAPPER, *argv], stdout=subprocess.PIPE,
                                stderr=err, check=True, text=True)
    rc, seconds, maxrss = result.stdout.split()
    # ru_maxrss is KiB on Linux, bytes on macOS.
    mb = int(maxrss) / (2**20 if sys.platform == "darwin" else 2**10)
    lines = log.read_text(errors="replace").strip().splitlines()
    return int(rc), float(seconds), mb, (lines[-1] if lines else "")


READ_ONLY = (
    "import sys, time; t = time.perf_counter(); from ptolemy_core.io import read_image; "
    "im = read_image(sys.argv[1]); "
    "print(f'read {im.shape} {im.data.dtype} in {time.perf_counter() - t:.2f} s', file=sys.stderr)"
)


def update_readme(section: str) -> None:
    update_section("bench_memory", section)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--dtype", choices=("int16", "uint16", "float32"), default="int16")
    parser.add_argument("--keep", metavar="DIR", help="write the image and logs here and keep them")
    parser.add_argument("--no-readme", action="store_true", help="do not update benchmarks/README.md")
    opts = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
        work = Path(opts.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        image = work / f"atlas_{opts.size}_{opts.dtype}.mrc"
        gen_s = write_atlas(image, opts.size, opts.dtype)
        mb = image.stat().st_size / 2**20
        print(f"wrote {image.name}: {opts.size}x{opts.size} {opts.dtype}, {mb:.0f} MB in {gen_s:.1f} s")

        py = [sys.executable]
        cli = [*py, "-m", "ptolemy_core.cli"]
        imports = "import numpy, mrcfile, tifffile, PIL, ptolemy_core.io"
        runs = [
            ("python + imports (floor)", [*py, "-c", imports]),
            ("read_image only", [*py, "-c", READ_ONLY, str(image)]),
            *[(f"ptolemy {cmd} -f json",
               [*cli, cmd, str(image), "-f", "json", "-o", str(work / f"{cmd}.json")])
              for cmd in ("lowmag", "medmag")],
        ]
        rows, failed = [], False
        for i, (label, argv) in enumerate(runs):
            rc, seconds, rss, last = measure(argv, work / f"stderr_{i}.txt")
            ok = rc in (0, 3) and rss <= LIMIT_MB
            failed |= not ok
            note = "" if rc == 0 and label != "read_image only" else last.replace("|", "/")[:120]
            rows.append(f"| {label} | {rc} | {seconds:.2f} | {rss:.0f} | {note} |")
            print(rows[-1], flush=True)

    table = "\n".join([
        f"### Memory: whole CLI calls on one {opts.size}x{opts.size} {opts.dtype} MRC ({mb:.0f} MB)",
        "",
        f"`python benchmarks/bench_memory.py` on {platform.node() or 'this machine'} "
        f"({os.cpu_count()} CPUs, shared: times are inflated by other jobs); limit {LIMIT_MB:.0f} MB.",
        "",
        "| command | exit | seconds | peak RSS MB | last stderr line |",
        "|---|---|---|---|---|",
        *rows,
    ])
    print()
    print(table)
    if not opts.no_readme:
        update_readme(table)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
