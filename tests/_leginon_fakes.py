"""Contract fakes of the Leginon API the nodes plug into (see shared/reference/leginon.md and the
harness README). They mirror the documented behaviour; the real code is exercised by
tools/leginon_check.py against a Leginon checkout."""

from __future__ import annotations

import logging
import math
import types

import numpy as np


# ----------------------------------------------------------------- data objects
class Data(dict):
    """sinedon Data: dict-like, ``insert()`` records itself."""

    inserted: list = []

    def __init__(self, initializer=None, **kw):
        super().__init__()
        if initializer:
            self.update(initializer)
        self.update(kw)
        self.dbid = kw.get("dbid")

    def insert(self, force=False):
        Data.inserted.append(self)

    @classmethod
    def typemap(cls):
        return (("session", object), ("name", str))


def make_leginondata():
    mod = types.ModuleType("fake_leginon.leginondata")
    names = [
        "SquareStatsData",
        "ScoreSquareFinderPrefsData",
        "AcquisitionImageData",
        "HoleStatsData",
        "ScoreTargetFinderPrefsData",
        "AcquisitionImageTargetData",
        "SessionData",
    ]
    for n in names:
        setattr(mod, n, type(n, (Data,), {"__module__": mod.__name__}))

    class MosaicScoreTargetFinderSettingsData(Data):
        @classmethod
        def typemap(cls):
            return Data.typemap() + (("filter-key", str), ("filter-min", float))

    class ScoreTargetFinderSettingsData(Data):
        @classmethod
        def typemap(cls):
            return Data.typemap() + (("score key", str),)

    mod.MosaicScoreTargetFinderSettingsData = MosaicScoreTargetFinderSettingsData
    mod.ScoreTargetFinderSettingsData = ScoreTargetFinderSettingsData
    return mod


class StatsBlob:
    """statssquare.StatsBlob(info_dict, index)."""

    def __init__(self, info_dict, index):
        self.stats = {
            "label_index": index,
            "center": tuple(info_dict["center"][:2]),
            "n": info_dict["area"],
            "size": info_dict["area"],
            "mean": info_dict["brightness"],
            "score": info_dict["score"],
        }
        self.vertices = info_dict["vertices"]
        self.info_dict = info_dict
        self.tile_image = info_dict["tile_image"]
        self.squares = info_dict.get("squares", [])


class StatsHole:
    """statshole.StatsHole(info_dict, index, statskeys)."""

    def __init__(self, info_dict, index, statskeys=()):
        self.stats = {"center": info_dict["center"], "hole_number": index + 1}
        for key in statskeys:
            self.stats[key] = info_dict[key]
        self.info_dict = info_dict


# ----------------------------------------------------------------- node base
class FakePanel:
    def __init__(self, node):
        self.node = node

    def getTargetPositions(self, typename):
        out = []
        for t in self.node.targets.get(typename, []):
            out.append((t["x"], t["y"]) if isinstance(t, dict) else tuple(t))
        return out

    def targetsSubmitted(self):
        pass


class FakeNode:
    """What leginon.node.Node + TargetFinder give a target finder (GUI and DB replaced)."""

    defaultsettings: dict = {}

    def __init__(self, settings=None, session=None):
        import copy

        self.settings = copy.deepcopy(dict(type(self).defaultsettings))
        for k, v in (settings or {}).items():
            if isinstance(v, dict) and isinstance(self.settings.get(k), dict):
                self.settings[k].update(v)
            else:
                self.settings[k] = v
        self.logger = logging.getLogger(f"fake.{type(self).__name__}.{id(self)}")
        self.logger.setLevel(logging.DEBUG)
        self.session = session or {"name": "fake", "image path": "/tmp"}
        self.targets = {}
        self.published = []
        self.status = []
        self.panel = FakePanel(self)
        self.calclients = {}
        self.shrink_factor = 1
        self.shrink_offset = (0, 0)
        self.user_waits = 0

    def setTargets(self, targets, typename, block=False):
        self.targets[typename] = list(targets)

    def setImage(self, image, typename=None):
        pass

    def setStatus(self, status):
        self.status.append(status)

    def publish(self, data, **kw):
        self.published.append(data)

    def setSettings(self, settings, isdefault=False):
        self.settings = settings

    def waitForInteraction(self, imdata=None):
        self.user_waits += 1

    def processPreviewTargets(self, imdata, targetlist):
        return []

    def isFromNewParentImage(self, imdata):
        return True

    def resetLastFocusedTargetList(self, targetlist):
        pass

    def newTargetForImage(self, imagedata, drow, dcol, **kw):
        return dict(kw, image=imagedata, **{"delta row": drow, "delta column": dcol})

    newTargetForTile = newTargetForImage

    def publishTargets(self, imagedata, typename, targetlist):
        """TargetFinder.publishTargets: panel (x, y) on the shrunk image -> delta row/col."""
        shape = imagedata["image"].shape
        for number, (x, y) in enumerate(self.panel.getTargetPositions(typename), start=1):
            drow = y * self.shrink_factor + self.shrink_offset[0] - shape[0] / 2
            dcol = x * self.shrink_factor + self.shrink_offset[1] - shape[1] / 2
            self.publish(self.newTargetForImage(imagedata, drow, dcol, type=typename, number=number))


# ----------------------------------------------------------------- mosaic
class Tile:
    def __init__(self, imagedata, corner):
        self.imagedata = imagedata
        self.image = imagedata["image"]
        self.corner_pos = corner


class FakeMosaic:
    """EMMosaic: tiles at corner_pos, scale set when the mosaic image is made."""

    def __init__(self):
        self.tiles = []
        self.scale = None

    def addTile(self, imagedata):
        tile = Tile(imagedata, imagedata["corner"])
        self.tiles.append(tile)
        return tile

    def mosaic2tile(self, pos):
        best = min(
            self.tiles,
            key=lambda t: math.hypot(
                t.corner_pos[0] + t.image.shape[0] // 2 - pos[0],
                t.corner_pos[1] + t.image.shape[1] // 2 - pos[1],
            ),
        )
        return best, (pos[0] - best.corner_pos[0], pos[1] - best.corner_pos[1])

    def unscaled(self, coord):
        return (coord[0] / self.scale, coord[1] / self.scale)


class MosaicClickTargetFinder(FakeNode):
    defaultsettings = {
        "target grouping": {
            "total targets": 10,
            "classes": 1,
            "group method": "value delta",
            "randomize blobs": True,
        },
        "scale size": 512,
        "autofinder": False,
        "skip": False,
        "user check": False,
    }

    def __init__(self, **kw):
        super().__init__(**kw)
        self.mosaic = FakeMosaic()
        self.finder_mosaic = FakeMosaic()
        self.tilemap, self.imagemap, self.targetmap = {}, {}, {}
        self.finder_edge_mosaicimage = None
        self.existing_position_targets = {}
        self.finder_blobs = []
        self.mblob_values = []
        self.script_exists = None
        self.mosaicname = "grid1"

    def _addTile(self, imagedata):
        imid = imagedata.dbid
        self.tilemap[imid] = self.mosaic.addTile(imagedata)
        self.finder_mosaic.addTile(imagedata)
        self.imagemap[imid] = imagedata

    def clearTiles(self):
        self.tilemap, self.imagemap, self.targetmap = {}, {}, {}
        self.mosaic = FakeMosaic()
        self.finder_mosaic = FakeMosaic()

    def createMosaicImage(self, is_final=True):
        rows = max(t.corner_pos[0] + t.image.shape[0] for t in self.mosaic.tiles)
        cols = max(t.corner_pos[1] + t.image.shape[1] for t in self.mosaic.tiles)
        scale = (self.settings["scale size"] - 1) / max(rows, cols)
        self.mosaic.scale = self.finder_mosaic.scale = scale
        shape = (int(rows * scale) + 1, int(cols * scale) + 1)
        edge = np.zeros(shape, bool)
        w = max(1, int(0.03 * max(shape)))
        edge[:w], edge[-w:], edge[:, :w], edge[:, -w:] = True, True, True, True
        self.finder_edge_mosaicimage = edge

    # MosaicTargetFinderBase pieces used by the flow
    def storeScoreSquareFinderPrefs(self):
        return {"filter-key": self.settings["filter-key"]}

    def blobToDisplayTarget(self, blob, finder_scale):
        return (blob.stats["center"][1] * finder_scale, blob.stats["center"][0] * finder_scale)

    def _mosaicToTarget(self, row, col):
        tile, pos = self.mosaic.mosaic2tile(self.mosaic.unscaled((row, col)))
        shape = tile.image.shape
        return tile.imagedata, pos[0] - shape[0] / 2.0, pos[1] - shape[1] / 2.0

    def runBlobRankFilter(self, blobs, xytargets):
        """_runBlobRankFilter (no examples) -> filterStats -> sampleBlobs -> display targets."""
        good = self.filterStats(list(blobs))
        picked = self.sampleBlobs(good, self.settings["target grouping"]["total targets"])
        return [self.blobToDisplayTarget(b, 1) for b in picked]

    def autoTargetFinder(self):
        blobs = self.findSquareBlobs()
        self.setTargets([{"x": b.stats["center"][1], "y": b.stats["center"][0]} for b in blobs], "Blobs")
        xys = self.runBlobRankFilter(blobs, {"example": [], "acquisition": [], "done": []})
        self.setTargets(xys, "acquisition")

    def submitTargets(self):
        """publishNewTargetsOfType('acquisition') -> mosaicToTarget -> newTargetForTile."""
        for x, y in self.panel.getTargetPositions("acquisition"):
            imagedata, drow, dcol = self._mosaicToTarget(y, x)
            self.publish(self.newTargetForTile(imagedata, drow, dcol, type="acquisition"))


class MosaicScoreTargetFinder(MosaicClickTargetFinder):
    defaultsettings = dict(
        MosaicClickTargetFinder.defaultsettings,
        **{
            "scoring script": "sq_finding.sh",
            "filter-key": "Size",
            "filter-min": 100,
            "filter-max": 10000,
            "simpleblobmerge": False,
        },
    )

    def _addTile(self, imagedata):
        super()._addTile(imagedata)
        raise AssertionError("the Ptolemy node must not run the script route")


# ----------------------------------------------------------------- hole finder
class FakeHoleBackEnd:
    """scorefinderback.HoleFinder results + icefinderback statistics."""

    def __init__(self):
        self._r = {"original": None, "holes": None, "holes2": None}
        self.lattice_matrix = None
        self.radius = 15
        self.ice = {}

    def __getitem__(self, key):
        return self._r[key]

    def __setitem__(self, key, value):
        if key == "original":
            self._r = {"original": value, "holes": None, "holes2": None}

    def updateHoles(self, holes):
        self._r["holes"] = holes
        self._r["holes2"] = None

    def update_result(self, key, value):
        self._r[key] = value

    def configure_holestats(self, radius=None):
        self.radius = radius

    def calc_holestats(self, input_name="holes"):
        im = self._r["original"]
        keep = []
        k = int(math.ceil(self.radius))
        for h in self._r[input_name]:
            r, c = h.stats["center"]
            if (
                r - self.radius < 0
                or c - self.radius < 0
                or r + self.radius >= im.shape[0]
                or c + self.radius >= im.shape[1]
            ):
                continue  # circle leaves the image: dropped, as Leginon does
            r0, c0 = max(0, int(r) - k), max(0, int(c) - k)
            rr, cc = np.ogrid[r0 : int(r) + k + 2, c0 : int(c) + k + 2]
            win = im[r0 : r0 + rr.shape[0], c0 : c0 + cc.shape[1]]
            mask = (rr[: win.shape[0]] - r) ** 2 + (cc[:, : win.shape[1]] - c) ** 2 <= self.radius**2
            vals = win[mask]
            h.stats.update(
                hole_stat_radius=self.radius,
                hole_n=int(mask.sum()),
                hole_mean=float(vals.mean()),
                hole_std=float(vals.std()),
            )
            keep.append(h)
        self._r[input_name] = keep

    def configure_ice(self, i0=None, tmin=None, tmax=None, tstdmax=None, tstdmin=None):
        self.ice = {"i0": i0, "tmin": tmin, "tmax": tmax}

    def calc_ice(self, input_name="holes"):
        good = []
        for h in self._r[input_name]:
            t = math.log(self.ice["i0"] / h.stats["hole_mean"])
            h.stats["thickness-mean"] = t
            h.stats["good"] = self.ice["tmin"] <= t <= self.ice["tmax"]
            if h.stats["good"]:
                good.append(h)
        self._r["holes2"] = good


class IceCalc:
    def set_i0(self, i0):
        self.i0 = i0


class ScoreTargetFinder(FakeNode):
    defaultsettings = {
        "skip": False,
        "user check": False,
        "lattice hole radius": 15.0,
        "lattice zero thickness": 1000.0,
        "ice min mean": 0.05,
        "ice max mean": 0.2,
        "ice max std": 0.2,
        "ice min std": 0.0,
        "focus hole": "Off",
        "script": "hole_finding.sh",
        "score key": "score",
        "score threshold": 0,
    }

    def __init__(self, **kw):
        super().__init__(**kw)
        self.hf = FakeHoleBackEnd()
        self.icecalc = IceCalc()
        self.currentimagedata = None

    def findTargets(self, imdata, targetlist):  # the parent's (never reached by our node)
        raise AssertionError("PtolemyHoleFinder must use its own findTargets")

    def findHoles(self):
        try:
            self._findHoles()
            self.calcHoleStats()
            targets = [
                {"x": h.stats["center"][1], "y": h.stats["center"][0], "stats": dict(h.stats)}
                for h in self.hf["holes"]
            ]
        except Exception as exc:  # IceTargetFinder.findHoles logs and goes on
            self.logger.error(exc)
            targets = []
        self.setTargets(targets, "Hole")

    def ice(self):
        if self.hf["holes"] is None:
            self.logger.error("Must run holefinder to filter them with ice")
            return
        self.filterIce("holes")
        acq = [
            {"x": h.stats["center"][1], "y": h.stats["center"][0], "stats": dict(h.stats)}
            for h in self.hf["holes2"]
        ]
        self.setTargets(acq, "acquisition", block=True)
        self.setTargets([], "focus", block=True)

    def everything(self):
        self.findHoles()
        self.ice()


def modules():
    """The dict make_node_classes() takes."""
    leginondata = make_leginondata()
    return {
        "leginondata": leginondata,
        "statshole": types.SimpleNamespace(StatsHole=StatsHole),
        "statssquare": types.SimpleNamespace(StatsBlob=StatsBlob),
        "mosaictargetfinder": types.SimpleNamespace(MosaicClickTargetFinder=MosaicClickTargetFinder),
        "mosaicexternalfinder": types.SimpleNamespace(MosaicScoreTargetFinder=MosaicScoreTargetFinder),
        "scorefinder": types.SimpleNamespace(ScoreTargetFinder=ScoreTargetFinder),
    }


def imagedata(leginondata, image, dbid=None, corner=None, filename="img"):
    d = leginondata.AcquisitionImageData(
        image=image,
        filename=filename,
        preset={"name": "gr"},
        camera={"dimension": {"x": image.shape[1], "y": image.shape[0]}, "binning": {"x": 1, "y": 1}},
        scope={"magnification": 100, "stage position": {"x": 0, "y": 0}},
        target=None,
        corner=corner,
    )
    d.dbid = dbid
    return d
