"""Run every benchmark script in this folder, one after the other (``make bench``).

Each script prints its own markdown table and updates its section of
``benchmarks/README.md``; this runner only sequences them and reports failures.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["bench_squares.py", "bench_holes.py", "bench_models.py", "bench_memory.py",
         "bench_batch.py", "bench_leginon.py", "bench_adaptive.py",
         "bench_foreign.py"]


def main() -> int:
    failed = []
    for name in ORDER:
        script = HERE / name
        if not script.exists():
            print(f"== {name}: not present, skipped")
            continue
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        rc = subprocess.call([sys.executable, str(script)])
        print(f"== {name}: exit {rc} in {time.perf_counter() - start:.0f} s", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
