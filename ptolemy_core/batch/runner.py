"""Run a finder over many images: resumable, all local cores, or a Dask cluster.

Output folder layout (``out_dir``)::

    <stem>.json      one per input image: the ranked targets as Ptolemy's one-line JSON
                     (written atomically; its presence + validity marks the image done)
    summary.jsonl    one JSON record per input image (see SUMMARY_FIELDS)
    summary.csv      the same table as CSV

Two inputs with the same stem (from different folders) get ``<parent>__<stem>.json``.

The summary lists this run's inputs in order, then images of earlier runs into the same
folder whose output still exists.

Resumption: an image whose ``<stem>.json`` exists and parses as targets of the
right kind is not processed again (its summary record is kept from the previous
summary, or rebuilt from the JSON). Images that failed are retried on the next run.

Parallelism: a :class:`concurrent.futures.ProcessPoolExecutor` (``forkserver`` with the
finder preloaded, else ``spawn``) with
one worker per core; each worker loads the finder and its models once (pool
initializer; the model registry caches them per process) and uses one torch
thread. With ``scheduler`` the same per-image function runs on a Dask
distributed cluster (workers must see the same paths, e.g. a shared file system).
"""

from __future__ import annotations

import csv
import glob
import io
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import write_atomic
from ..errors import PtolemyInputError
from ..formats import from_json, to_json_line
from .finders import KINDS, TARGET_KIND, guess_kind

#: Files taken from a folder (case-insensitive suffixes).
IMAGE_SUFFIXES = (".mrc", ".mrcs", ".map", ".st", ".tif", ".tiff", ".png", ".jpg", ".jpeg")

#: Columns of summary.csv (and keys of each summary.jsonl record), in order.
SUMMARY_FIELDS = ("file", "status", "n_targets", "best_score", "seconds", "error",
                  "kind", "output", "resumed")


@dataclass
class BatchRecord:
    """Outcome for one input image (one row of the summary).

    Attributes
    ----------
    file : str
        Input image path (absolute).
    status : {"ok", "error"}
    n_targets : int or None
    best_score : float or None
        Score of the top-ranked target (None without targets).
    seconds : float or None
        Wall time to read + find + write (None when resumed without a previous record).
    error : str
        One-line message when status is "error", else "".
    kind : str
        ``lowmag`` or ``medmag`` (the finder used).
    output : str
        Path of the targets JSON (absolute).
    resumed : bool
        True when the output existed and was kept.
    """

    file: str
    status: str
    n_targets: int | None = None
    best_score: float | None = None
    seconds: float | None = None
    error: str = ""
    kind: str = ""
    output: str = ""
    resumed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in SUMMARY_FIELDS}


@dataclass
class BatchResult:
    """All records of a run plus where the summary went."""

    records: list[BatchRecord]
    out_dir: Path
    summary_jsonl: Path
    summary_csv: Path
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def n_ok(self) -> int:
        return sum(r.status == "ok" for r in self.records)

    @property
    def n_error(self) -> int:
        return sum(r.status == "error" for r in self.records)

    @property
    def n_resumed(self) -> int:
        return sum(r.resumed for r in self.records)


# --------------------------------------------------------------------------- inputs


def collect_inputs(spec: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Expand a folder, a glob pattern or a list of them into sorted image paths.

    Parameters
    ----------
    spec : path-like, glob pattern, or a sequence of these
        A folder gives its image files (suffixes :data:`IMAGE_SUFFIXES`, not
        recursive); a pattern is expanded with :func:`glob.glob` (``**`` allowed);
        a file is taken as it is.

    Returns
    -------
    list of pathlib.Path
        Absolute, de-duplicated, sorted.

    Raises
    ------
    PtolemyInputError
        Nothing matches.
    """
    specs = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    found: set[Path] = set()
    for item in specs:
        text = os.fspath(item)
        p = Path(text)
        if p.is_dir():
            found.update(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            found.add(p)
        elif glob.has_magic(text):
            found.update(Path(m) for m in glob.glob(text, recursive=True) if Path(m).is_file())
        else:
            raise PtolemyInputError(f"{text}: no such file or folder")
    if not found:
        raise PtolemyInputError(f"no image files in {', '.join(os.fspath(s) for s in specs)}")
    return sorted({q.resolve() for q in found})


def output_names(inputs: Sequence[Path]) -> list[str]:
    """Output file name per input: ``<stem>.json``, ``<parent>__<stem>.json`` on clashes."""
    stems = [Path(p).stem for p in inputs]
    counts: dict[str, int] = {}
    for s in stems:
        counts[s] = counts.get(s, 0) + 1
    names = []
    for p, s in zip(inputs, stems, strict=True):
        if counts[s] > 1:
            s = f"{Path(p).parent.name}__{s}"
        names.append(f"{s}.json")
    if len(set(names)) != len(names):  # pathological: fall back to an index
        names = [f"{i:05d}_{n}" for i, n in enumerate(names)]
    return names


# --------------------------------------------------------------------------- one image


def read_output(path: str | os.PathLike, kind: str | None = None):
    """Targets of a finished output file, or None if missing/invalid/of another kind."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        targets = from_json(text)
    except (OSError, UnicodeDecodeError, PtolemyInputError):
        return None
    if not text.endswith("\n"):  # every output we write ends with a newline
        return None
    want = TARGET_KIND.get(kind or "")
    if want is not None and any(t.kind != want for t in targets):
        return None
    return targets


def _one_line(exc: BaseException) -> str:
    msg = " ".join(str(exc).split())
    if isinstance(exc, PtolemyInputError):
        return msg or "bad input"
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def process_image(path: str, output: str, kind: str, options: dict[str, Any] | None = None) -> BatchRecord:
    """Read one image, run the finder, write its JSON atomically; never raises.

    Parameters
    ----------
    path : str
        Input image.
    output : str
        Destination JSON.
    kind : {"lowmag", "medmag", "auto"}
        Finder (``auto``: :func:`~ptolemy_core.batch.finders.guess_kind` per image).
    options : dict, optional
        ``frame``, ``pixel_size_nm`` (reading), ``scorer``, ``i0``, ``method`` (finder).
        ``finder``: ``"module:function"`` replacing the finder (tests, plug-ins);
        it is called as ``function(image, kind, **finder options)`` and returns
        an object with ``.targets``.

    Returns
    -------
    BatchRecord
        status "error" with a one-line message when anything failed.
    """
    from ..io import read_image
    from .finders import run_finder

    opts = dict(options or {})
    start = time.perf_counter()
    used_kind = kind
    try:
        image = read_image(path, frame=opts.pop("frame", None), pixel_size_nm=opts.pop("pixel_size_nm", None))
        if kind == "auto":
            used_kind = guess_kind(image, path)[0]
        finder = opts.pop("finder", None)
        if finder:
            module, _, name = str(finder).partition(":")
            import importlib

            result = getattr(importlib.import_module(module), name)(image, used_kind, **opts)
        else:
            result = run_finder(image, used_kind, **opts)
        targets = list(result.targets)
        write_atomic(output, to_json_line(targets) + "\n")
        best = max((t.score for t in targets), default=None)
        return BatchRecord(
            file=path, status="ok", n_targets=len(targets),
            best_score=None if best is None or not math.isfinite(best) else round(float(best), 6),
            seconds=round(time.perf_counter() - start, 3), kind=used_kind, output=output,
        )
    except Exception as exc:  # noqa: BLE001 - a bad file is a row in the summary, not a stop
        return BatchRecord(file=path, status="error", seconds=round(time.perf_counter() - start, 3),
                           error=_one_line(exc), kind=used_kind, output=output)


def init_worker(kind: str, single_thread: bool = True, options: dict[str, Any] | None = None) -> None:
    """Pool/Dask worker start-up: import the finder and load its models once.

    Parameters
    ----------
    kind : str
        ``lowmag``, ``medmag`` or ``auto`` (both).
    single_thread : bool
        One thread per worker for torch/OpenMP (one worker per core already fills
        the machine; more threads would only compete).
    options : dict, optional
        The per-image options; with a plug-in ``finder`` only that module is imported.
    """
    if single_thread:
        # Read by torch / OpenMP when they initialise in this process.
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = "1"
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(1)
    finder = (options or {}).get("finder")
    if finder:
        import importlib

        try:
            importlib.import_module(str(finder).partition(":")[0])
        except ImportError:
            pass  # reported per image by process_image
        return
    kinds = KINDS if kind == "auto" else (kind,)
    try:
        if "lowmag" in kinds:
            from .. import squares  # noqa: F401
        if "medmag" in kinds:
            from .. import holes  # noqa: F401
        from ..models import registry
    except ImportError:
        return  # reported per image by process_image
    names = ["square_cnn"] if "lowmag" in kinds else []
    names += ["hole_cnn", "unet"] if "medmag" in kinds else []
    for name in names:
        try:
            # Cached in this process for every later image; imports torch only when
            # weights are shipped (no weights: the finders do not need torch).
            registry.load_model(name)
        except Exception:  # noqa: BLE001 - a broken model shows up per image, with its message
            pass


# --------------------------------------------------------------------------- summary


def _records_to_csv(records: Sequence[BatchRecord]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(SUMMARY_FIELDS), lineterminator="\n")
    writer.writeheader()
    for r in records:
        row = r.to_dict()
        row = {k: ("" if v is None else v) for k, v in row.items()}
        writer.writerow(row)
    return buf.getvalue()


def write_summary(records: Sequence[BatchRecord], out_dir: Path) -> tuple[Path, Path]:
    """Write ``summary.jsonl`` and ``summary.csv`` atomically; returns both paths."""
    jsonl = "".join(json.dumps(r.to_dict(), allow_nan=False) + "\n" for r in records)
    a = write_atomic(out_dir / "summary.jsonl", jsonl)
    b = write_atomic(out_dir / "summary.csv", _records_to_csv(records))
    return a, b


def read_summary(path: str | os.PathLike) -> list[BatchRecord]:
    """Records of a ``summary.jsonl`` (unreadable lines are skipped)."""
    out = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return out
    for line in lines:
        try:
            d = json.loads(line)
            out.append(BatchRecord(**{k: d.get(k) for k in SUMMARY_FIELDS if k in d}))
        except (json.JSONDecodeError, TypeError):
            continue
    return out


# --------------------------------------------------------------------------- the run


def run_batch(
    inputs: Sequence[str | os.PathLike],
    kind: str,
    out_dir: str | os.PathLike,
    *,
    jobs: int | None = None,
    scheduler: Any = None,
    options: dict[str, Any] | None = None,
    resume: bool = True,
    progress: Callable[[int, int, BatchRecord], None] | None = None,
) -> BatchResult:
    """Process many images; one JSON per image plus a summary table.

    Parameters
    ----------
    inputs : sequence of path-like
        Image files (see :func:`collect_inputs`).
    kind : {"lowmag", "medmag", "auto"}
        Finder to run.
    out_dir : path-like
        Output folder (created).
    jobs : int, optional
        Worker processes (default: all cores, ``os.cpu_count()``); 1 runs in this process.
    scheduler : str or dask.distributed.Client, optional
        Run on Dask distributed instead: a scheduler address (``tcp://host:8786``)
        or an existing client. ``jobs`` is then ignored.
    options : dict, optional
        Per-image options, see :func:`process_image`.
    resume : bool
        Skip images whose output already exists and is valid.
    progress : callable, optional
        ``progress(done, total, record)`` after every image (resumed ones included).

    Returns
    -------
    BatchResult
        Records in input order; the summary files are written even when
        interrupted (then holding what finished).
    """
    if kind not in KINDS + ("auto",):
        raise PtolemyInputError(f"kind must be lowmag, medmag or auto, got {kind!r}")
    if jobs is not None and jobs < 1:
        raise PtolemyInputError(f"--jobs must be at least 1, got {jobs}")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PtolemyInputError(f"cannot create output folder {out}: {exc.strerror or exc}") from None
    out = out.resolve()
    paths = [Path(p).resolve() for p in inputs]
    outputs = [out / n for n in output_names(paths)]
    total = len(paths)
    start = time.perf_counter()

    previous = {r.file: r for r in read_summary(out / "summary.jsonl")}
    records: list[BatchRecord | None] = [None] * total
    todo: list[int] = []
    done = 0
    for i, (p, o) in enumerate(zip(paths, outputs, strict=True)):
        targets = read_output(o, None if kind == "auto" else kind) if resume else None
        if targets is None:
            todo.append(i)
            continue
        prev = previous.get(str(p))
        if prev is not None and prev.status == "ok" and prev.output == str(o) and prev.kind == (
                kind if kind != "auto" else prev.kind):
            rec = BatchRecord(**{**asdict(prev), "resumed": True})
        else:
            best = max((t.score for t in targets), default=None)
            used = kind if kind != "auto" else ("lowmag" if targets and targets[0].kind == "square"
                                                 else "medmag" if targets else "auto")
            rec = BatchRecord(file=str(p), status="ok", n_targets=len(targets),
                              best_score=best, kind=used, output=str(o), resumed=True)
        records[i] = rec
        done += 1
        if progress:
            progress(done, total, rec)

    def finish(i: int, rec: BatchRecord) -> None:
        nonlocal done
        records[i] = rec
        done += 1
        if progress:
            progress(done, total, rec)

    notes: list[str] = []
    try:
        if not todo:
            pass
        elif scheduler is not None:
            _run_dask(scheduler, todo, paths, outputs, kind, options, finish)
        elif (jobs or os.cpu_count() or 1) == 1 or len(todo) == 1:
            init_worker(kind, single_thread=False, options=options)
            for i in todo:
                finish(i, process_image(str(paths[i]), str(outputs[i]), kind, options))
        else:
            workers = min(jobs or os.cpu_count() or 1, len(todo))
            _run_pool(workers, todo, paths, outputs, kind, options, finish)
    finally:
        final = [r for r in records if r is not None]
        # Earlier runs into the same folder (other inputs) stay in the summary while their
        # output file exists, so the summary describes the whole folder.
        current = {str(p) for p in paths}
        final += [r for f, r in previous.items()
                  if f not in current and r.status == "ok" and r.output and Path(r.output).exists()]
        jsonl, csv_path = write_summary(final, out)
    return BatchResult(final, out, jsonl, csv_path, time.perf_counter() - start, notes)


def _pool_context(options: dict[str, Any] | None = None):
    """Start method for the workers.

    ``forkserver`` with the finder modules preloaded: numpy/scipy/torch are imported
    once, in the fork server (a fresh single-threaded process, so forking it is safe
    even though this process may hold torch/OpenMP threads), and every worker is a
    cheap fork of it instead of importing everything again (``spawn``). Falls back to
    ``spawn`` where forkserver does not exist (Windows, macOS without it).
    """
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    # Only takes effect when this process starts its fork server (its first pool). A plug-in
    # finder is imported by each worker's initializer instead of the built-in finders.
    plugin = bool((options or {}).get("finder"))
    ctx.set_forkserver_preload(["ptolemy_core.batch.runner" if plugin else "ptolemy_core.batch._preload"])
    return ctx


def _run_pool(workers, todo, paths, outputs, kind, options, finish) -> None:
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    ctx = _pool_context(options)
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=init_worker,
                             initargs=(kind, True, options)) as pool:
        futures = {pool.submit(process_image, str(paths[i]), str(outputs[i]), kind, options): i for i in todo}
        try:
            for fut in as_completed(futures):
                i = futures[fut]
                try:
                    rec = fut.result()
                except BrokenProcessPool:
                    rec = BatchRecord(
                        file=str(paths[i]), status="error", kind=kind, output=str(outputs[i]),
                        error="worker process died (out of memory or a crash); run again to retry")
                finish(i, rec)
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise


def _run_dask(scheduler, todo, paths, outputs, kind, options, finish) -> None:
    try:
        from dask.distributed import Client, as_completed
    except ImportError:
        from ..errors import PtolemyUnavailableError

        raise PtolemyUnavailableError(
            "--scheduler needs Dask distributed: pip install 'ptolemy-leginon[dask]'") from None
    own = not isinstance(scheduler, Client)
    if own:
        try:
            client = Client(scheduler, timeout=30)
        except (OSError, TimeoutError) as exc:
            raise PtolemyInputError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
    else:
        client = scheduler
    try:
        # Load the finder and models once in every worker process (cached there).
        client.run(init_worker, kind, False, options)
        futures = client.map(process_image, [str(paths[i]) for i in todo], [str(outputs[i]) for i in todo],
                             kind=kind, options=options, pure=False)
        index = {f.key: i for f, i in zip(futures, todo, strict=True)}
        for fut in as_completed(futures):
            i = index[fut.key]
            try:
                rec = fut.result()
            except Exception as exc:  # noqa: BLE001 - e.g. KilledWorker: a row, not a stop
                rec = BatchRecord(file=str(paths[i]), status="error", kind=kind, output=str(outputs[i]),
                                  error=f"dask: {_one_line(exc)}")
            finish(i, rec)
    finally:
        if own:
            client.close()
