"""``ptolemy batch``: run a finder over many images (resumable, all cores, or Dask)."""

from __future__ import annotations

import argparse
import sys
import time

EPILOG = """\
output folder OUT:
  <stem>.json     ranked targets per image (Ptolemy one-line JSON, written atomically)
  summary.jsonl   one record per image: file, status (ok/error), n_targets, best_score,
  summary.csv     seconds, error, kind, output, resumed
Images whose <stem>.json already exists and is valid are skipped (run again to resume;
--force redoes them). Bad files become status=error rows; the exit status is 1 when any
image failed, 0 otherwise. With --scheduler the images are processed by the workers of an
existing Dask distributed cluster, which must see the same paths.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("inputs", nargs="+", metavar="DIR|GLOB",
                        help="folder of images (MRC/TIFF/PNG/JPEG, not recursive), glob pattern "
                             "(quote it; ** allowed) or image files")
    parser.add_argument("--kind", required=True, choices=("lowmag", "medmag", "auto"),
                        help="lowmag = atlases -> squares, medmag = square images -> holes, "
                             "auto = guess per image")
    parser.add_argument("-o", "--out", required=True, metavar="OUT", help="output folder (created)")
    parser.add_argument("--jobs", "-j", type=int, default=None, metavar="N",
                        help="worker processes (default: all cores); 1 = in this process")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="Dask distributed scheduler address, e.g. tcp://10.0.0.5:8786")
    parser.add_argument("--force", action="store_true", help="reprocess images that already have output")
    parser.add_argument("--frame", type=int, default=None, metavar="K", help="frame of multi-frame files")
    parser.add_argument("--pixel-size", type=float, default=None, metavar="NM",
                        help="pixel size in nm for every image (overrides headers)")
    parser.add_argument("--scorer", default=None, help="scorer passed to the finder (default: auto)")
    parser.add_argument("--i0", type=float, default=None, help="vacuum intensity for ice thickness (holes)")
    parser.add_argument("--method", default=None, help="hole-finder method (lattice, unet)")
    parser.add_argument("--finder", default=None, metavar="MODULE:FUNC",
                        help="plug-in finder instead of the built-in one: FUNC(image, kind, **options) "
                             "returning an object with .targets (must be importable by the workers)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


class ProgressBar:
    """A one-line progress bar on stderr (one line per image when stderr is not a terminal)."""

    def __init__(self, stream=sys.stderr, width: int = 28):
        self.stream = stream
        self.width = width
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.start = time.perf_counter()
        self.errors = 0
        self.fresh = 0

    def __call__(self, done: int, total: int, record) -> None:
        if record.status == "error":
            self.errors += 1
        if not record.resumed:
            self.fresh += 1
        elapsed = time.perf_counter() - self.start
        rate = self.fresh / elapsed * 60 if elapsed > 0 and self.fresh else 0.0
        left = (total - done) / (rate / 60) if rate > 0 else None
        eta = "--" if left is None else (f"{left:.0f}s" if left < 120 else f"{left / 60:.0f}min")
        filled = int(self.width * done / max(total, 1))
        bar = "#" * filled + "." * (self.width - filled)
        name = record.file.rsplit("/", 1)[-1]
        state = "skipped" if record.resumed else record.status
        line = (f"[{bar}] {done}/{total} {100 * done / max(total, 1):3.0f}%  {rate:.1f} img/min  "
                f"ETA {eta}  errors {self.errors}  {name}: {state}")
        if self.tty:
            self.stream.write("\r" + line[:160].ljust(100))
            if done == total:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def run(args: argparse.Namespace) -> int:
    from ..batch import collect_inputs, run_batch
    from ..errors import PtolemyInputError

    if args.jobs is not None and args.jobs < 1:
        raise PtolemyInputError(f"--jobs must be at least 1, got {args.jobs}")
    inputs = collect_inputs(args.inputs)
    options = {"frame": args.frame, "pixel_size_nm": args.pixel_size, "scorer": args.scorer,
               "i0": args.i0, "method": args.method, "finder": args.finder}
    options = {k: v for k, v in options.items() if v is not None}
    where = f"Dask scheduler {args.scheduler}" if args.scheduler else f"{args.jobs or 'all'} local worker(s)"
    print(f"ptolemy batch: {len(inputs)} image(s), kind {args.kind}, on {where} -> {args.out}",
          file=sys.stderr)
    result = run_batch(inputs, args.kind, args.out, jobs=args.jobs, scheduler=args.scheduler,
                       options=options, resume=not args.force,
                       progress=None if args.quiet else ProgressBar())
    fresh = len(result.records) - result.n_resumed
    rate = fresh / result.seconds * 60 if result.seconds > 0 and fresh else 0.0
    print(f"ptolemy batch: {result.n_ok} ok ({result.n_resumed} skipped as done), {result.n_error} error(s) "
          f"in {result.seconds:.1f} s ({rate:.1f} images/min); summary: {result.summary_csv}",
          file=sys.stderr)
    for r in result.records:
        if r.status == "error":
            # Reading errors already start with the path.
            msg = r.error if r.error.startswith(r.file) else f"{r.file}: {r.error}"
            print(f"ptolemy batch: error: {msg}", file=sys.stderr)
    print(result.summary_jsonl)
    return 1 if result.n_error else 0
