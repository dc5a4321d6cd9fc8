"""``ptolemy train squares|holes|unet --data DIR --out FILE``: train a learned model.

Training data (``--data DIR``, searched recursively): images (MRC, TIFF, PNG,
JPEG) each with a ``<stem>.json`` beside it, either

- operator selections from your own sessions: ``{"selected": [[x, y], ...]}``
  with ``[x, y] = [column, row]`` pixels of that image — atlases for
  ``squares``, square (medium-mag) images for ``holes`` and ``unet``. The
  finders locate every square/hole; those containing a selected point are the
  positives, all others count as not selected. Optional keys:
  ``"pixel_size_nm"``, ``"i0"``.
- or ``ptolemy simulate`` output (truth JSON with squares/holes and ``good``).

20 % of the images (seeded) are held out; their ROC AUC is printed at the end.
The weights file can be used by pointing ``PTOLEMY_WEIGHTS_DIR`` at a folder
holding it and a ``manifest.json`` (``--manifest`` writes/updates that entry).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from ..errors import PtolemyInputError

#: ``ptolemy train`` model name -> registry name.
REGISTRY_NAME = {"squares": "square_cnn", "holes": "hole_cnn", "unet": "unet"}

EPILOG = """\
data format (one JSON per image, same stem):
  {"selected": [[x, y], ...]}        operator-selected squares/holes ([x, y] = [column, row] px)
  ptolemy simulate truth JSON        squares/holes with "good" (simulated sessions)
examples:
  python -m ptolemy_core.train.simdata square 200 train_holes   # simulated training folder
  ptolemy train unet --data train_holes --out unet.pt --seed 0
  ptolemy train squares --data my_atlases --out square_cnn.pt --manifest weights/manifest.json
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = __doc__.split("\n\n", 1)[1] if __doc__ else None
    parser.epilog = EPILOG
    parser.add_argument("model", choices=("squares", "holes", "unet"),
                        help="squares = square CNN (atlases); holes = hole CNN; unet = hole U-Net")
    parser.add_argument("--data", required=True, metavar="DIR", help="training folder (see above)")
    parser.add_argument("--out", required=True, metavar="FILE", help="weights file to write (.pt)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny run (< 60 s, ≤ 6 images): fails unless the training loss falls")
    parser.add_argument("--epochs", type=int, default=None, metavar="N",
                        help="epochs (squares/holes, default 25) or hundreds of steps (unet, default 15)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="use at most N images")
    parser.add_argument("--max-minutes", type=float, default=None, metavar="M",
                        help="stop training after M minutes (epochs/steps done are recorded)")
    parser.add_argument("--manifest", default=None, metavar="JSON",
                        help="also record the weights (sha256, command, metrics) in this manifest")


class _Bar:
    """A one-line progress display on stderr (no dependency)."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.tty = sys.stderr.isatty()

    def __call__(self, msg: str) -> None:
        line = f"[{time.perf_counter() - self.t0:6.1f} s] {msg}"
        if self.tty:
            sys.stderr.write("\r\033[K" + line)
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from ..atomic import write_atomic
    from ..models.registry import sha256_file
    from ..synth.sample import SIMULATOR_VERSION
    from ..train import data as D
    from ..train import fit as F

    if args.epochs is not None and args.epochs < 1:
        raise PtolemyInputError("--epochs must be at least 1")
    out = Path(args.out)
    if out.is_dir():
        raise PtolemyInputError(f"--out {out} is a directory")
    if not out.parent.exists():
        raise PtolemyInputError(f"output folder {out.parent} does not exist")
    pairs = D.find_pairs(args.data)
    limit = 6 if args.quick else args.limit
    if limit is not None:
        pairs = pairs[:max(1, limit)]
    if len(pairs) < 2:
        raise PtolemyInputError(f"need at least 2 labelled images in {args.data} (one is held out)")
    torch.set_num_threads(min(torch.get_num_threads(), 4))
    bar = _Bar()
    rng = np.random.default_rng(args.seed)
    sets = []
    for i, (img, lab) in enumerate(pairs):
        s = D.square_set(img, lab, rng) if args.model == "squares" else D.hole_set(img, lab, rng)
        if s is not None:
            sets.append(s)
        bar(f"read {i + 1}/{len(pairs)} images")
    if len(sets) < 2:
        what = "square" if args.model == "squares" else "hole"
        raise PtolemyInputError(f"fewer than 2 images in {args.data} hold a {what}")
    tr, ho = D.split(len(sets), args.seed)
    train, held = [sets[i] for i in tr], [sets[i] for i in ho]
    # Quick: 30 epochs of a few images (8 left the loss check at the mercy of the seed).
    epochs = args.epochs or (30 if args.quick else 25)
    budget = None if args.max_minutes is None else 60.0 * args.max_minutes
    try:
        if args.model == "squares":
            res = F.train_squares(train, held, seed=args.seed, epochs=epochs, quick=args.quick,
                                  max_seconds=budget, progress=bar)
        elif args.model == "holes":
            res = F.train_holes(train, held, seed=args.seed, epochs=epochs, quick=args.quick,
                                max_seconds=budget, progress=bar)
        elif args.quick:
            steps = min(100 * args.epochs, 100) if args.epochs else 60
            res = F.train_unet(train, held, seed=args.seed, steps=steps, patch=64, batch=4, quick=True,
                               progress=bar)
        else:
            res = F.train_unet(train, held, seed=args.seed, steps=100 * (args.epochs or 15), progress=bar,
                               max_seconds=budget)
    except F.TrainingError as exc:
        bar.done()
        print(f"ptolemy train: error: {exc}", file=sys.stderr)
        return 1
    bar.done()
    meta = {"model": REGISTRY_NAME[args.model], "seed": args.seed, "images_train": len(train),
            "images_held_out": len(held), "simulator_version": SIMULATOR_VERSION,
            "seconds": round(res.seconds, 1)}
    import io

    buf = io.BytesIO()
    torch.save({"model": res.model.state_dict(), "arch": res.arch, "meta": meta}, buf)
    write_atomic(out, buf.getvalue())
    metrics = _round(res.metrics)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB) in {res.seconds:.0f} s; "
          f"trained on {len(train)} images, held out {len(held)}")
    for key, val in metrics.items():
        print(f"held-out {key}: {json.dumps(val)}")
    if args.manifest:
        _update_manifest(Path(args.manifest), REGISTRY_NAME[args.model], out, sha256_file(out), res.arch,
                         metrics, meta)
        print(f"recorded {REGISTRY_NAME[args.model]} in {args.manifest}")
    return 0


def _round(obj):
    if isinstance(obj, float):
        return round(obj, 4)
    if isinstance(obj, dict):
        return {k: _round(v) for k, v in obj.items()}
    return obj


def _update_manifest(path: Path, name: str, weights: Path, sha: str, arch, metrics, meta) -> None:
    from ..atomic import write_atomic

    try:
        doc = json.loads(path.read_text()) if path.exists() else {}
    except ValueError as exc:
        raise PtolemyInputError(f"manifest {path} is not valid JSON: {exc}") from None
    doc.setdefault("models", {})
    command = "ptolemy " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else ""
    doc["models"][name] = {
        "file": weights.name, "sha256": sha, "arch": arch,
        "training_command": command, "simulator_version": meta["simulator_version"],
        "training": {k: v for k, v in meta.items() if k != "model"},
        "held_out_metrics": metrics,
    }
    write_atomic(path, json.dumps(doc, indent=1, sort_keys=False) + "\n")
