#!/usr/bin/env python3
# ruff: noqa: UP031  (printf-style report lines, like the shared harness)
"""Run ptolemy-leginon through REAL Leginon target-finder code (harness driver).

Contains no Leginon code. It uses the shared harness
(``/work/shared/tools/leginon_harness/harness.py``, override with
``LEGINON_HARNESS``) to import Leginon from a checkout (``LEGINON_SRC``) with the
GUI, database and TCP server stubbed, then runs:

1. holes, script route: Leginon's ``ScoreTargetFinder`` sourcing OUR
   ``hole_finding.sh`` on simulated square images (1024x1440, 2048², 4096²);
2. holes, native node: ``PtolemyHoleFinder`` (subclass of the real
   ``ScoreTargetFinder``) through the real ``findTargets`` /
   ``publishFoundTargets`` / ``ice()`` / ``centerCarbon`` code;
3. squares, script route: Leginon's ``MosaicScoreTargetFinder`` sourcing OUR
   ``sq_finding.sh`` per tile of a simulated atlas;
4. squares, native node: ``PtolemySquareFinder`` (subclass of the real
   ``MosaicScoreTargetFinder``) on the same tiles;
5. ``register()`` with the real ``leginon.noderegistry`` and our application
   XML through Leginon's ``importexport.XMLApplicationImport``.

Every published target is mapped back to full-resolution pixels and compared
with the simulator's truth. Run it with the harness venv (Python 3.11, numpy<2)::

    LEGINON_SRC=~/leginon-src /tmp/lgvenv/bin/python tools/leginon_check.py [--only holes|squares|misc]

The finders themselves run in the project's venv (``PTOLEMY_PYTHON``, default
``.venv/bin/python``): the scripts call it, and the native nodes get a finder
that calls it on a temporary MRC (the harness venv has no torch/scikit-image).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HARNESS = Path(os.environ.get("LEGINON_HARNESS", "/work/shared/tools/leginon_harness"))
PY = os.environ.get("PTOLEMY_PYTHON") or str(ROOT / ".venv" / "bin" / "python")
sys.path.insert(0, str(HARNESS))
sys.path.insert(0, str(ROOT))

import harness as H  # noqa: E402

from ptolemy_core.formats import from_json  # noqa: E402

SCRIPTS = ROOT / "ptolemy_leginon" / "scripts"


def run_project(code: str, *args: str) -> str:
    """Run ``code`` in the project's venv; returns stdout."""
    res = subprocess.run([PY, "-c", code, *args], capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        raise RuntimeError(res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "failed")
    return res.stdout


SIM = """
import sys, json
from ptolemy_core.synth import simulate_square_image, simulate_atlas
kind, seed, rows, cols, stem = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
if kind == "square":
    sim = simulate_square_image(seed, shape=(rows, cols), film="gold", contrast="normal", lattice=sys.argv[6])
else:
    sim = simulate_atlas(seed, shape=(rows, cols), montage=False)
sim.save(stem)
"""

FIND = """
import sys, json
from ptolemy_core import read_image
from ptolemy_core.formats import to_json_line
kind, path = sys.argv[1], sys.argv[2]
img = read_image(path)
if kind == "holes":
    from ptolemy_core.holes import find_holes
    r = find_holes(img)
    lat = None
    if r.lattice is not None:
        lat = {"kind": r.lattice.kind, "basis": [list(map(float, v)) for v in r.lattice.basis]}
    print(json.dumps({"line": to_json_line(r.targets), "i0": r.i0, "lattice": lat}))
else:
    from ptolemy_core.squares import find_squares
    print(json.dumps({"line": to_json_line(find_squares(img).targets)}))
"""


def simulate(kind, seed, shape, stem, lattice="square"):
    run_project(SIM, kind, str(seed), str(shape[0]), str(shape[1]), str(stem), lattice)
    from pyami import mrc

    return mrc.read(str(stem) + ".mrc").astype(np.float32), json.loads(Path(str(stem) + ".json").read_text())


class ProjectHoleFinder:
    """The node's finder hook: our find_holes, run in the project venv on a temporary MRC."""

    def __init__(self):
        self.seconds = 0.0

    def __call__(self, image, pixel_size_nm, i0, method, scorer):
        import types

        from pyami import mrc

        t = time.time()
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "img.mrc")
            mrc.write(np.asarray(image, np.float32), p)
            out = json.loads(run_project(FIND, "holes", p))
        self.seconds += time.time() - t
        lat = out["lattice"]
        lattice = None
        if lat:
            basis = np.array(lat["basis"], float)  # Lattice.basis: (row, col) vectors (contract 5)
            lattice = types.SimpleNamespace(kind=lat["kind"], basis=basis)
        return types.SimpleNamespace(
            targets=from_json(out["line"], kind="hole"), lattice=lattice, i0=out["i0"]
        )


def project_square_finder(image, pixel_size_nm, scorer):
    from pyami import mrc

    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "tile.mrc")
        mrc.write(np.asarray(image, np.float32), p)
        out = json.loads(run_project(FIND, "squares", p))
    return from_json(out["line"], kind="square")


def errors_to_truth(points, truth_rc):
    if not len(points):
        return np.array([])
    t = np.asarray(truth_rc, float)
    return np.array([np.min(np.hypot(*(t - np.asarray(p)).T)) for p in points])


def hole_settings(i0, radius_shrunk=None):
    st = copy.deepcopy(H.HOLE_SETTINGS)
    st.update(
        {
            "lattice zero thickness": float(i0),
            "ice min mean": 0.0,
            "ice max mean": 0.5,
            "ice max std": 0.5,
            "focus hole": "Center",
            "score threshold": 0.0,
        }
    )
    if radius_shrunk is not None:
        st["lattice hole radius"] = float(radius_shrunk)
    return st


def demo_holes(shapes=((1024, 1440), (2048, 2048), (4096, 4096), (4102, 4097)), lattice="square"):
    H.bootstrap()
    from leginon import ice, leginondata, scorefinder, scorefinderback

    from ptolemy_leginon.register import make_node_classes

    classes = make_node_classes()
    session = H.make_session("ptolemycheck")
    print("\n=== holes: real ScoreTargetFinder + our hole_finding.sh, and PtolemyHoleFinder (native)")
    os.environ["PTOLEMY_PYTHON"] = PY
    os.environ["PTOLEMY_NO_WORKER"] = "1"
    results = {}
    for k, shape in enumerate(shapes):
        fn = "ptolemycheck_%05dhl" % k
        img, truth = simulate("square", 40 + k, shape, Path(session["image path"]) / fn, lattice)
        truth_rc = [(h["center"][1], h["center"][0]) for h in truth["holes"]]
        good_rc = [(h["center"][1], h["center"][0]) for h in truth["holes"] if h["good"]]
        print(
            "\n-- %s image %s: %d truth holes (%d good), i0 %.0f, lattice %s"
            % (lattice, shape, len(truth_rc), len(good_rc), truth["i0"], truth["lattice"]["kind"])
        )
        for route in ("script", "native"):
            rec = H.Recorder()
            # the script route cannot size Leginon's stats circle: set it as an operator would (0.7 r / b)
            from ptolemy_leginon.convert import shrink_factor

            r_stats = 0.7 * float(np.median([h["radius"] for h in truth["holes"]])) / shrink_factor(shape)
            st = hole_settings(truth["i0"], r_stats)
            common = dict(
                rec=rec,
                name="Exposure Targeting",
                session=session,
                hf=scorefinderback.HoleFinder(),
                icecalc=ice.IceCalculator(),
                foc_counter=itertools.count(),
                lattice_matrix=None,
                parent_imageid=None,
                ignore_focus_targets=False,
            )
            if route == "script":
                st["script"] = str(SCRIPTS / "hole_finding.sh")
                node = H.fake_node(scorefinder.ScoreTargetFinder, settings=st, **common)
            else:
                node = H.fake_node(classes["PtolemyHoleFinder"], settings=st, **common)
                node.__dict__["ptolemy_finder"] = ProjectHoleFinder()
            imd = leginondata.AcquisitionImageData(image=img, filename=fn, session=session)
            tl = leginondata.ImageTargetListData(session=session, image=imd, queue=None)
            t = time.time()
            err = None
            try:
                with H.capture_db(rec):
                    node.findTargets(imd, tl)
                    node.publishFoundTargets(imd, tl)
            except Exception as exc:  # noqa: BLE001 - report, go on
                err = f"{type(exc).__name__}: {exc}"
            dt = time.time() - t
            tds = rec.published_of("AcquisitionImageTargetData")
            acq = [
                (d["delta row"] + shape[0] / 2, d["delta column"] + shape[1] / 2)
                for d in tds
                if d["type"] == "acquisition"
            ]
            foc = [
                (d["delta row"] + shape[0] / 2, d["delta column"] + shape[1] / 2)
                for d in tds
                if d["type"] == "focus"
            ]
            e = errors_to_truth(acq, truth_rc)
            radius = float(np.median([h["radius"] for h in truth["holes"]]))
            hits = int(np.sum(e < 0.5 * radius)) if len(e) else 0
            errs = [m for m in rec.logs if m.startswith("ERROR")]
            print(
                "  %-6s Hole=%d acquisition published=%d (on a truth hole: %d; median error %.2f px, "
                "max %.2f px)"
                " focus=%d  shrink=%s  %.1f s%s%s"
                % (
                    route,
                    len(rec.targets.get("Hole", [])),
                    len(acq),
                    hits,
                    float(np.median(e)) if len(e) else float("nan"),
                    float(np.max(e)) if len(e) else float("nan"),
                    len(foc),
                    getattr(node, "shrink_factor", None),
                    dt,
                    ("  EXCEPTION " + err) if err else "",
                    ("  ERRORS " + "; ".join(errs[:2])) if errs else "",
                )
            )
            if foc:
                fe = errors_to_truth(foc, truth_rc)
                print(
                    "         focus target {:.0f} px from the nearest hole centre "
                    "(hole radius {:.0f} px): {}".format(
                        fe[0], radius, "in the carbon" if fe[0] > radius else "ON A HOLE"
                    )
                )
            if route == "native":
                print(
                    "         lattice_matrix (shrunk px, columns = vectors) {}; auto i0 {} "
                    "(truth {:.0f})".format(
                        None
                        if node.hf.lattice_matrix is None
                        else np.round(node.hf.lattice_matrix, 1).tolist(),
                        None
                        if node.__dict__.get("_ptolemy_auto_i0") is None
                        else round(node._ptolemy_auto_i0),
                        truth["i0"],
                    )
                )
            results[(shape, route)] = {
                "published": len(acq),
                "hits": hits,
                "median_err": float(np.median(e)) if len(e) else None,
                "error": err,
            }
    return results


def demo_failure():
    """A finder that raises inside the real findTargets: empty targets, a logged error, no user wait."""
    H.bootstrap()
    from leginon import ice, leginondata, scorefinderback

    from ptolemy_leginon.register import make_node_classes

    print("\n=== failure: our hole finder raises inside Leginon's findTargets/publishFoundTargets")
    session = H.make_session("ptolemycheck")
    rec = H.Recorder()

    def broken(*args):
        raise RuntimeError("simulated finder crash")

    node = H.fake_node(
        make_node_classes()["PtolemyHoleFinder"],
        settings=hole_settings(1000.0),
        rec=rec,
        name="Exposure Targeting",
        session=session,
        hf=scorefinderback.HoleFinder(),
        icecalc=ice.IceCalculator(),
        foc_counter=itertools.count(),
        lattice_matrix=None,
        parent_imageid=None,
        ignore_focus_targets=False,
        ptolemy_finder=broken,
    )
    img = np.ones((2048, 2048), np.float32)
    imd = leginondata.AcquisitionImageData(image=img, filename="ptolemycheck_crash", session=session)
    tl = leginondata.ImageTargetListData(session=session, image=imd, queue=None)
    try:
        with H.capture_db(rec):
            node.findTargets(imd, tl)  # the harness node has no userpause: a user-check wait would raise
            node.publishFoundTargets(imd, tl)
        outcome = "returned normally"
    except Exception as exc:  # noqa: BLE001
        outcome = "RAISED %s: %s" % (type(exc).__name__, exc)
    print(
        "  findTargets %s; targets %s; published %d; status %s"
        % (
            outcome,
            {k: len(v) for k, v in rec.targets.items()},
            len(rec.published_of("AcquisitionImageTargetData")),
            rec.status,
        )
    )
    print("  ERROR logs: %s" % [m for m in rec.logs if m.startswith("ERROR")])


def atlas_tiles(seed=5, shape=(1024, 1024), tile=576, overlap=128, stem=None):
    img, truth = simulate("atlas", seed, shape, stem)
    step = tile - overlap
    tiles = []
    for r in range(0, shape[0] - overlap, step):
        for c in range(0, shape[1] - overlap, step):
            r0, c0 = min(r, shape[0] - tile), min(c, shape[1] - tile)
            tiles.append((np.ascontiguousarray(img[r0 : r0 + tile, c0 : c0 + tile]), (r0, c0)))
    return tiles, truth


def demo_squares():
    H.bootstrap()
    from leginon import mosaic, multihole
    from pyami import convolver

    from ptolemy_leginon.register import make_node_classes

    classes = make_node_classes()
    session = H.make_session("ptolemycheck")
    print("\n=== squares: real MosaicScoreTargetFinder + our sq_finding.sh, and PtolemySquareFinder (native)")
    os.environ["PTOLEMY_PYTHON"] = PY
    os.environ["PTOLEMY_NO_WORKER"] = "1"
    tiles, truth = atlas_tiles(stem=Path(session["image path"]) / "ptolemycheck_atlas")
    truth_rc = [(s["center"][1], s["center"][0]) for s in truth["squares"]]
    pitch = truth["grid"]["pitch_px"]
    print(
        "simulated atlas %s, %d truth squares, pitch %.0f px -> %d tiles of %d px (128 px overlap)"
        % (tuple(truth["shape"]), len(truth_rc), pitch, len(tiles), tiles[0][0].shape[0])
    )
    out = {}
    for route in ("script", "native"):
        st = copy.deepcopy(H.SQUARE_SETTINGS)
        st.update(
            {
                "filter-key": "Score",
                "filter-min": 0.0,
                "filter-max": 1.0,
                "target grouping": {
                    "total targets": 8,
                    "classes": 2,
                    "group method": "value delta",
                    "randomize blobs": False,
                },
            }
        )
        rec = H.Recorder()
        calc = H.FakeStageCalibrationClient(pixelsize=1e-6)
        if route == "script":
            st["scoring script"] = str(SCRIPTS / "sq_finding.sh")
            node = H._atlas_node(st, rec, session)
        else:
            cls = classes["PtolemySquareFinder"]
            node = H.fake_node(
                cls,
                settings=st,
                rec=rec,
                name="Square Targeting",
                session=session,
                calclients={"stage position": calc},
                mosaic=mosaic.EMMosaic(calc),
                finder_mosaic=mosaic.EMMosaic(calc),
                tilemap={},
                imagemap={},
                targetmap={},
                targetlist=None,
                p={},
                ext_blobs={},
                tileblobmap={},
                finder_blobs=[],
                mblob_values=[],
                script_exists=None,
                mosaicimagelist=None,
                mosaicimagedata=None,
                mosaicimage=None,
                mosaicimagescale=None,
                finder_scale_factor=1,
                convolver=convolver.Convolver(),
                multihole=multihole.TemplateConvolver(),
                targetimagevectors={"x": (0, 0), "y": (0, 0)},
                mask_xys=[],
                existing_position_targets={},
                displayTargets=lambda: None,
                publishMosaicImage=lambda: None,
                ptolemy_finder=project_square_finder,
            )
            node.__dict__["refreshDatabaseDisplayedTargets"] = node.createExistingPositionTargets
        imds = H._atlas_tiles_as_imagedata(session, tiles, tiles[0][0].shape[0])
        offsets = {imd.dbid: off for imd, (_, off) in zip(imds, tiles, strict=True)}
        t = time.time()
        err = None
        try:
            with H.capture_db(rec):
                for imd in imds:
                    node._addTile(imd)
                node.createMosaicImage(True)
                node.autoTargetFinder()
        except Exception as exc:  # noqa: BLE001
            err = f"{type(exc).__name__}: {exc}"
        dt = time.time() - t
        acq = rec.targets.get("acquisition", [])
        full = []
        for x, y in acq:
            imd, drow, dcol = node._mosaicToTarget(y, x)
            ro, co = offsets[imd.dbid]
            shp = imd["image"].shape
            full.append((ro + shp[0] / 2 + drow, co + shp[1] / 2 + dcol))
        e = errors_to_truth(full, truth_rc)
        blobs = node.finder_blobs
        stats_keys = sorted(blobs[0].stats.keys()) if blobs else []
        sq = rec.published_of("SquareStatsData")
        errs = [m for m in rec.logs if m.startswith("ERROR")]
        print(
            "\n-- %s: blobs after merging %d; targets %d (%.1f s)%s"
            % (route, len(blobs), len(acq), dt, ("  EXCEPTION " + err) if err else "")
        )
        if len(e):
            print(
                f"   target -> tile + delta -> atlas: error to nearest truth square centre "
                f"median {np.median(e):.2f} px,"
                f" max {np.max(e):.2f} px (pitch {pitch:.0f} px)"
            )
        scores = [b.stats["score"] for b in blobs]
        picked = (
            [
                min(
                    blobs,
                    key=lambda b: np.hypot(
                        b.stats["center"][1] * node.finder_scale_factor - x,
                        b.stats["center"][0] * node.finder_scale_factor - y,
                    ),
                )
                for x, y in acq
            ]
            if blobs
            else []
        )
        print(
            "   picked scores {} (best available {})".format(
                [round(p.stats["score"], 3) for p in picked],
                sorted(np.round(scores, 3).tolist(), reverse=True)[:8],
            )
        )
        print(f"   StatsBlob.stats keys {stats_keys}")
        print(
            "   SquareStatsData stored %d (good=%d)  ERROR logs: %s"
            % (len(sq), sum(1 for s in sq if s["good"]), errs[:3] or "none")
        )
        out[route] = {
            "targets": len(acq),
            "median_err": float(np.median(e)) if len(e) else None,
            "error": err,
        }
        # filter-key Signal (no squares with Leginon's own code)
        if route == "native":
            node.settings["filter-key"] = "Signal"
            node.settings["filter-min"], node.settings["filter-max"] = 1.0, 1e12
            with H.capture_db(rec):
                node.autoTargetFinder()
            print("   filter-key=Signal -> %d targets" % len(rec.targets.get("acquisition", [])))
            # already-targeted squares: put the first picks into the tiles' target map as Leginon's
            # database would hold them, then run the auto finder again (real createExistingPositionTargets,
            # real _runBlobRankFilter with our outlines)
            from leginon import leginondata

            first = list(full)
            for x, y in acq:
                imd, drow, dcol = node._mosaicToTarget(y, x)
                td = leginondata.AcquisitionImageTargetData(
                    session=session,
                    type="acquisition",
                    status="new",
                    **{"delta row": drow, "delta column": dcol},
                )
                node.targetmap.setdefault(imd.dbid, {"acquisition": [], "focus": []})["acquisition"].append(
                    td
                )
            node.settings["filter-key"] = "Score"
            node.settings["filter-min"], node.settings["filter-max"] = 0.0, 1.0
            with H.capture_db(rec):
                node.autoTargetFinder()
            again = []
            for x, y in rec.targets.get("acquisition", []):
                imd, drow, dcol = node._mosaicToTarget(y, x)
                ro, co = offsets[imd.dbid]
                again.append((ro + imd["image"].shape[0] / 2 + drow, co + imd["image"].shape[1] / 2 + dcol))
            repeated = sum(
                1 for p in again if min(np.hypot(p[0] - q[0], p[1] - q[1]) for q in first) < 0.1 * pitch
            )
            print(
                "   with the first %d targets in the database: %d new targets, %d of them repeats"
                % (len(first), len(again), repeated)
            )
    return out


def demo_misc():
    H.bootstrap()
    print("\n=== register() with the real noderegistry, application XML through Leginon's importer")
    from leginon import importexport, noderegistry

    from ptolemy_leginon.register import register

    n0 = len(noderegistry.getNodeClassNames())
    register()
    for name in ("PtolemySquareFinder", "PtolemyHoleFinder"):
        cls = noderegistry.getNodeClass(name)
        print(
            "  %s registered as %s; bases %s; settingsclass %s (%d typemap fields)"
            % (
                name,
                cls.classtype,
                [b.__name__ for b in cls.__mro__[1:3]],
                cls.settingsclass.__name__,
                len(cls.settingsclass.typemap()),
            )
        )
    print("  node classes: %d -> %d" % (n0, len(noderegistry.getNodeClassNames())))
    import pymysql
    import pymysql.converters

    if not hasattr(pymysql, "escape_string"):  # removed in PyMySQL 1.0; sinedon.sqldb.escape still calls it
        pymysql.escape_string = pymysql.converters.escape_string
        print("  (PyMySQL >= 1.0 has no escape_string: harness aliases pymysql.converters.escape_string)")
    xml = ROOT / "ptolemy_leginon" / "ptolemy_screening.xml"
    imp = importexport.XMLApplicationImport(str(xml), "leginondb")
    fv = imp.getFieldValues()
    print(
        "  %s: %d CREATE TABLE, %d INSERT; application %s"
        % (
            xml.name,
            len(imp.getSQLDefinitionQueries()),
            len(imp.getSQLDataQueries()),
            fv["ApplicationData"]["name"],
        )
    )
    classes = [q for q in imp.getSQLDataQueries() if "Ptolemy" in q and "NodeSpecData" in q]
    for q in classes:
        print("   ", q[q.index("VALUES") :])


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=["holes", "squares", "misc"])
    ap.add_argument("--lattice", default="square", choices=["square", "oblique", "hex"])
    args = ap.parse_args()
    H.report_imports()
    if args.only in (None, "misc"):
        demo_misc()
        demo_failure()
    if args.only in (None, "holes"):
        demo_holes(lattice=args.lattice)
    if args.only in (None, "squares"):
        demo_squares()
