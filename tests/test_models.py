"""Learned models: training quick mode, verified weights, batch independence, monotonicity, packaging."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from ptolemy_core.cli.main import main
from ptolemy_core.errors import PtolemyInputError
from ptolemy_core.models import api, registry
from ptolemy_core.models import crops as C
from ptolemy_core.models.classifiers import HoleCNN, SquareCNN
from ptolemy_core.models.unet import HoleUNet
from ptolemy_core.targets import Target
from ptolemy_core.train import fit

REPO = Path(__file__).resolve().parents[1]


def _hole_targets(truth: dict) -> list[Target]:
    out = []
    for h in truth["holes"]:
        if h["visible_fraction"] < 0.5 or not h.get("in_image", True):
            continue
        x, y = h["center"]
        r = h["radius"]
        verts = ((y - r, x - r), (y - r, x + r), (y + r, x + r), (y + r, x - r))
        out.append(Target("hole", (y, x), verts, 4 * r * r, features={"radius": r}))
    return out


def _square_targets(truth: dict) -> list[Target]:
    return [Target("square", (s["center"][1], s["center"][0]),
                   tuple((v[1], v[0]) for v in s["vertices"]), s["area"]) for s in truth["squares"]]


@pytest.fixture(scope="module")
def tiny_holes(tmp_path_factory) -> Path:
    from ptolemy_core.synth import simulate_square_image

    d = tmp_path_factory.mktemp("holes")
    for seed in range(100000, 100004):
        simulate_square_image(seed, shape=(256, 384), hole_px=22.0, film="gold",
                              lattice="square").save(d / f"sq_{seed}")
    return d


# ----------------------------------------------------------------------------- training
@pytest.mark.slow  # ~10-25 s each on the shared 2-core machine
@pytest.mark.parametrize("model", ["holes", "unet"])
def test_quick_training_writes_loadable_weights(tiny_holes, tmp_path, capsys, model):
    out = tmp_path / f"{model}.pt"
    manifest = tmp_path / "manifest.json"
    rc = main(["train", model, "--data", str(tiny_holes), "--out", str(out), "--quick", "--seed", "3",
               "--manifest", str(manifest)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "held-out all:" in printed and '"auc"' in printed
    name = {"holes": "hole_cnn", "unet": "unet"}[model]
    entry = json.loads(manifest.read_text())["models"][name]
    assert entry["sha256"] == registry.sha256_file(out)
    registry.clear_cache()
    net = registry.load_model(name, tmp_path)
    assert not net.training and isinstance(net, HoleCNN if model == "holes" else HoleUNet)


@pytest.mark.slow  # runs the hole finder on every image
def test_training_from_operator_selections(tiny_holes, tmp_path, capsys):
    """The facility format: images + {"selected": [[x, y], ...]}; the finder supplies the candidates."""
    data = tmp_path / "session"
    data.mkdir()
    for mrc in sorted(tiny_holes.glob("*.mrc")):
        truth = json.loads(mrc.with_suffix(".json").read_text())
        shutil.copyfile(mrc, data / mrc.name)
        picked = [h["center"] for h in truth["holes"] if h["good"]]
        (data / mrc.with_suffix(".json").name).write_text(json.dumps({"selected": picked}))
    out = tmp_path / "hole_cnn.pt"
    rc = main(["train", "holes", "--data", str(data), "--out", str(out), "--quick", "--seed", "1",
               "--epochs", "30"])
    assert rc == 0, capsys.readouterr().err
    assert "held-out all:" in capsys.readouterr().out
    state = torch.load(out, weights_only=True)
    assert state["meta"]["images_train"] == 3 and state["meta"]["images_held_out"] == 1


def test_quick_check_raises_when_loss_does_not_fall():
    msg = r"unet: the training loss did not fall \(0\.5000 -> 0\.6000\)"
    with pytest.raises(fit.TrainingError, match=msg):
        fit._check_falls([0.5] * 5 + [0.6] * 5, "unet")
    fit._check_falls([0.9, 0.8, 0.7, 0.6, 0.5], "unet")  # falls: no error


def test_train_cli_bad_data_is_one_line_error(tmp_path, capsys):
    rc = main(["train", "squares", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "x.pt")])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err == f"ptolemy train: error: training data folder {tmp_path / 'nope'} does not exist"


def test_label_file_format_is_checked(tmp_path, capsys):
    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "a.json").write_text('{"picked": []}')
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "b.json").write_text('{"picked": []}')
    rc = main(["train", "holes", "--data", str(tmp_path), "--out", str(tmp_path / "x.pt")])
    assert rc == 2
    assert "expected {\"selected\": [[x, y], ...]}" in capsys.readouterr().err


# ----------------------------------------------------------------------------- registry
def _tiny_weights(folder: Path) -> Path:
    torch.manual_seed(0)
    net = HoleCNN(width=4)
    path = folder / "hole_cnn.pt"
    torch.save({"model": net.state_dict(), "arch": {"width": 4, "in_channels": 3}}, path)
    manifest = {"models": {"hole_cnn": {"file": "hole_cnn.pt", "sha256": registry.sha256_file(path)}}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return path


def test_corrupted_weights_give_clear_error(tmp_path):
    path = _tiny_weights(tmp_path)
    registry.clear_cache()
    assert registry.load_model("hole_cnn", tmp_path) is not None
    expected = registry.sha256_file(path)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    actual = registry.sha256_file(path)
    registry.clear_cache()
    with pytest.raises(PtolemyInputError) as exc:
        registry.load_model("hole_cnn", tmp_path)
    assert str(exc.value) == (f"weight file {path} is corrupted or does not match weights/manifest.json: "
                              f"expected sha256 {expected}, got {actual}")


def test_shipped_manifest_hashes_match():
    folder = registry.weights_dir()
    models = registry.read_manifest(folder)
    for name, entry in models.items():
        assert registry.sha256_file(folder / entry["file"]) == entry["sha256"], name


def test_no_weights_means_none(tmp_path, monkeypatch):
    monkeypatch.setenv("PTOLEMY_WEIGHTS_DIR", str(tmp_path))
    registry.clear_cache()
    work = np.ones((40, 40), np.float32)
    assert api.unet_probability(work) is None
    assert api.hole_cnn_scores(work, [], 1.0) is None
    assert api.square_cnn_scores(work, []) is None
    registry.clear_cache()


# ----------------------------------------------------------------------------- inference
def test_hole_scores_do_not_depend_on_the_batch(tiny_holes):
    from ptolemy_core.io import read_image

    img = read_image(tiny_holes / "sq_100000.mrc")
    truth = json.loads((tiny_holes / "sq_100000.json").read_text())
    targets = _hole_targets(truth)
    assert len(targets) > 5
    torch.manual_seed(1)
    net = HoleCNN(width=4).eval()
    together = api.hole_cnn_scores(img, targets, 2.0, model=net, i0=truth["i0"])
    alone = np.array([api.hole_cnn_scores(img, [t], 2.0, model=net, i0=truth["i0"])[0] for t in targets])
    np.testing.assert_array_equal(together, alone)
    assert together.std() > 0  # the scores do differ between holes


def test_square_scores_do_not_depend_on_the_batch():
    from ptolemy_core.synth import simulate_atlas

    sim = simulate_atlas(100001, shape=(384, 384))
    targets = _square_targets(sim.truth)
    assert len(targets) >= 4
    torch.manual_seed(2)
    net = SquareCNN(width=4).eval()
    norm = api.square_norm(sim.data, [t.vertices_array() for t in targets],
                           np.array([t.area for t in targets]))
    together = api.square_cnn_scores(sim.data, targets, norm, model=net, i0=1000.0)
    alone = np.array([api.square_cnn_scores(sim.data, [t], norm, model=net, i0=1000.0)[0] for t in targets])
    np.testing.assert_array_equal(together, alone)


def test_square_inputs_ignore_dose_gain_and_gamma():
    """Version-2 square inputs: a dose/gain factor and a display gamma leave them unchanged."""
    from ptolemy_core.synth import simulate_atlas

    sim = simulate_atlas(100002, shape=(512, 512))
    targets = _square_targets(sim.truth)
    verts = [t.vertices_array() for t in targets]
    areas = np.array([t.area for t in targets])
    data = np.asarray(sim.data, np.float64)
    dark = C.image_levels(data)[0]
    base, _ = api.square_inputs(data, verts, areas)
    # I' = dark' + a (I - dark)^g: another dose, offset and gamma of the same sample
    other = 5.0 + 3.0 * np.clip(data - dark, 0, None) ** 0.6
    moved, _ = api.square_inputs(other, verts, areas)
    # Square pixels (within 3 spreads of the population); bar pixels near the dark level are
    # noise around the floor, where no transform can be undone.
    inside = np.abs(base) < 3.0
    assert inside.mean() > 0.4
    # Exact up to resampling: a crop pixel averages 16 bilinear samples, and the mean of I**g
    # is not (mean I)**g where the intensity changes inside a pixel (square edges).
    diff = np.abs(moved[inside] - base[inside])
    assert np.median(diff) < 0.01 and np.mean(diff < 0.05) > 0.95, (np.median(diff), np.mean(diff < 0.05))
    # ... while the session-1 inputs (raw mean/std) change under the gamma
    v1, _ = api.square_inputs(data, verts, areas, version=1)
    v1m, _ = api.square_inputs(other, verts, areas, version=1)
    assert np.abs(v1m - v1).max() > 0.3


def test_hole_inputs_ignore_dose_and_offset():
    """Version-2 hole channels 0 and 2 do not change when the image is scaled and offset."""
    rng = np.random.default_rng(0)
    work = (1000 + 200 * rng.random((120, 160))).astype(np.float32)
    centres = np.array([[40.0, 50.0], [80.5, 100.25]])
    a, known = api.hole_inputs(work, centres, np.array([8.0, 8.0]))
    b, _ = api.hole_inputs(0.2 * work + 37.0, centres, np.array([8.0, 8.0]))
    assert known == 0.0 and a[0].shape == (3, 23, 23)  # half-side ceil(1.3 * 8) = 11
    for ca, cb in zip(a, b, strict=True):
        np.testing.assert_allclose(cb[[0, 2]], ca[[0, 2]], atol=1e-3)
        assert not cb[1].any()  # no I0: no optical-depth channel


@pytest.mark.parametrize("unshuffle", [1, 2])
def test_unet_tiles_match_whole_image(unshuffle):
    torch.manual_seed(3)
    net = HoleUNet(widths=(4, 4, 8, 8), unshuffle=unshuffle).eval()
    work = np.random.default_rng(0).normal(size=(900, 260)).astype(np.float32)
    tile = 128 * unshuffle                  # several tiles per side with their margins
    tiled = api._unet_tiled(net, work, tile=tile)
    with torch.inference_mode():
        whole = torch.sigmoid(net(torch.from_numpy((work - work.mean()) / work.std())[None, None]))[0].numpy()
    assert tiled.shape == (2, 900, 260)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
    # The public call (one piece at this size, channels-last weights) gives the same maps.
    np.testing.assert_allclose(api.unet_probability(work, "both", model=net), whole, atol=1e-5)


def test_unet_space_to_depth_keeps_resolution_and_localises_each_phase():
    """unshuffle=2: odd-sized inputs come back at their size, and a one-pixel change moves the map
    only near that pixel, whatever its phase in the 2 × 2 cell (no half-resolution blocking)."""
    torch.manual_seed(0)
    net = HoleUNet(widths=(4, 8), unshuffle=2).eval()
    assert net.multiple == 4
    with torch.inference_mode():
        for shape in [(37, 53), (64, 64), (5, 3)]:
            assert net(torch.zeros((1, 1, *shape))).shape == (1, 2, *shape)
        base = net(torch.zeros((1, 1, 80, 80)))
        for r, c in [(40, 40), (40, 41), (41, 40), (41, 41)]:
            x = torch.zeros((1, 1, 80, 80))
            x[0, 0, r, c] = 5.0
            changed = (net(x) - base).abs().amax(dim=(0, 1)) > 1e-6
            rows, cols = torch.nonzero(changed, as_tuple=True)
            assert changed[r, c]
            # Receptive field (2 levels of two 3x3 convs from half resolution, down and up): ~±20 px.
            assert (rows - r).abs().max() <= 24 and (cols - c).abs().max() <= 24
    with pytest.raises(ValueError, match="unshuffle must be >= 1, got 0"):
        HoleUNet(unshuffle=0)


@pytest.mark.parametrize("unshuffle", [1, 2, 3])
def test_unet_inference_maps_equal_sigmoid_of_forward(unshuffle):
    """probabilities() (the inference path: sigmoid before a permute-based pixel shuffle, channels-last
    input) is sigmoid(forward(x)) on odd-sized images, with phases in the right places."""
    torch.manual_seed(unshuffle)
    net = HoleUNet(widths=(4, 8, 8), unshuffle=unshuffle).eval()
    nn_init = torch.nn.init
    nn_init.normal_(net.head.bias, 0.0, 2.0)          # distinct maps per phase channel
    x = torch.randn(1, 1, 45, 67)
    with torch.inference_mode():
        ref = torch.sigmoid(net(x))[0]
        got = net.probabilities(x.contiguous(memory_format=torch.channels_last))
    assert got.shape == (2, 45, 67) and got.is_contiguous()
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


def test_registry_builds_unet_layout_from_arch():
    old = registry.build("unet", {"widths": [4, 8, 16, 32], "out_channels": 2})
    new = registry.build("unet", {"widths": [8, 16, 16, 32], "out_channels": 2, "unshuffle": 2})
    assert old.unshuffle == 1 and old.down[0][0].in_channels == 1 and old.head.out_channels == 2
    assert new.unshuffle == 2 and new.down[0][0].in_channels == 4 and new.head.out_channels == 8


def test_working_scale_round_trip():
    pts = np.array([[0.0, 0.0], [10.5, 33.25], [1023.0, 1439.0]])
    np.testing.assert_allclose(C.work_to_full(C.full_to_work(pts, 3.7), 3.7), pts, atol=1e-9)
    img = np.arange(24, dtype=np.float32).reshape(4, 6)
    np.testing.assert_allclose(C.to_working(img, 2.0), [[3.5, 5.5, 7.5], [15.5, 17.5, 19.5]])


@pytest.mark.parametrize("kind", ["square", "hex"])
def test_anchor_lattice_fit_recovers_nodes(kind):
    rng = np.random.default_rng(5)
    shape = (220, 300)
    b1 = 24.0 * np.array([np.cos(0.3), np.sin(0.3)])
    turn = np.pi / 2 if kind == "square" else np.pi / 3
    b2 = 24.0 * np.array([np.cos(0.3 + turn), np.sin(0.3 + turn)])
    ii, jj = np.meshgrid(np.arange(-20, 20), np.arange(-20, 20), indexing="ij")
    nodes = np.array([7.0, 9.0]) + np.c_[ii.ravel(), jj.ravel()] @ np.stack([b1, b2])
    inside = (nodes[:, 0] >= 0) & (nodes[:, 0] < shape[0]) & (nodes[:, 1] >= 0) & (nodes[:, 1] < shape[1])
    nodes = nodes[inside]
    keep = rng.random(len(nodes)) > 0.2  # 20 % of holes missed by the U-Net
    pts = np.r_[nodes[keep] + rng.normal(0, 0.5, (keep.sum(), 2)), rng.uniform(0, 1, (6, 2)) * shape]
    fit_ = api.fit_anchor_lattice(pts, None, shape, kind="general")
    d = np.hypot(*(fit_.nodes[:, None, :] - nodes[None, :, :]).transpose(2, 0, 1)).min(axis=0)
    assert np.mean(d < 2.0) >= 0.98                       # every true hole has a node
    assert abs(len(fit_.nodes) - len(nodes)) <= 2          # and hardly any extra node
    if kind == "hex":  # the paper's square-only fit cannot describe a hexagonal lattice
        sq = api.fit_anchor_lattice(pts, None, shape, kind="square")
        assert sq.cost > 3 * fit_.cost


# ----------------------------------------------------------------------------- shipped weights
def _shipped(name: str):
    registry.clear_cache()
    net = registry.load_model(name)
    if net is None:
        pytest.fail(f"no shipped {name} weights (weights/manifest.json)")
    return net


def test_thicker_ice_lowers_hole_score():
    from ptolemy_core.synth import simulate_square_image

    means = []
    for ice in (45.0, 160.0):
        sim = simulate_square_image(7, shape=(512, 720), film="carbon", contrast="normal", lattice="square",
                                    hole_px=40.0, ice_nm=ice, defect_rate=0.0, gradient_nm=0.0)
        targets = _hole_targets(sim.truth)
        scale = max(1, int(sim.truth["params"]["pitch_px"] / 32))  # the hole finder's rule
        s = api.hole_cnn_scores(sim.data, targets, scale, i0=sim.truth["i0"], model=_shipped("hole_cnn"))
        means.append(float(np.median(s)))
    assert means[1] < means[0] - 0.2, means


def test_contamination_lowers_hole_score():
    from ptolemy_core.synth import simulate_square_image

    sim = simulate_square_image(8, shape=(512, 720), film="carbon", contrast="normal", lattice="square",
                                hole_px=40.0, ice_nm=50.0, defect_rate=0.0, gradient_nm=0.0)
    targets = [t for t in _hole_targets(sim.truth)
               if 60 < t.row < 450 and 60 < t.col < 660][:6]
    net = _shipped("hole_cnn")
    scale = max(1, int(sim.truth["params"]["pitch_px"] / 32))  # the hole finder's rule
    clean = api.hole_cnn_scores(sim.data, targets, scale, i0=sim.truth["i0"], model=net)
    dirty = sim.data.astype(np.float32).copy()
    rr, cc = np.mgrid[: dirty.shape[0], : dirty.shape[1]]
    for t in targets:  # two dark (opaque-ish) ice blobs inside each hole
        for dr, dc in ((-7.0, -5.0), (6.0, 8.0)):
            blob = np.exp(-((rr - t.row - dr) ** 2 + (cc - t.col - dc) ** 2) / (2 * 4.0 ** 2))
            dirty *= (1 - 0.8 * blob).astype(np.float32)
    contaminated = api.hole_cnn_scores(dirty, targets, scale, i0=sim.truth["i0"], model=net)
    assert np.all(contaminated < clean), (clean, contaminated)


def test_thicker_ice_lowers_square_score():
    from ptolemy_core.synth import simulate_atlas

    net = _shipped("square_cnn")
    means = []
    for ice in (55.0, 170.0):
        sim = simulate_atlas(11, shape=(768, 768), montage=False, ice_mean_nm=ice,
                             defect_rates={k: 0.0 for k in ("broken", "empty", "thick", "opaque",
                                                             "cracked", "contaminated")})
        targets = _square_targets(sim.truth)
        i0 = sim.truth["i0"] + sim.truth.get("offset", 0.0)
        means.append(float(np.median(api.square_cnn_scores(sim.data, targets, i0=i0, model=net))))
    # The shipped square CNN responds only weakly to thickness (see the manifest's held-out AUC);
    # an earlier model trained without thick sessions scored the thick atlas HIGHER and fails here.
    assert means[1] < means[0] - 0.03, means


# ----------------------------------------------------------------------------- packaging
@pytest.mark.slow
def test_wheel_ships_the_weights(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git needed to copy the tree")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "-w", str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheel = next(tmp_path.glob("ptolemy_leginon-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "ptolemy_core/weights/manifest.json" in names
    manifest = json.loads(zipfile.ZipFile(wheel).read("ptolemy_core/weights/manifest.json"))
    for entry in manifest["models"].values():
        assert f"ptolemy_core/weights/{entry['file']}" in names
    assert {"square_cnn", "hole_cnn", "unet"} <= set(manifest["models"])


def test_manifest_tool_records_json_hashes_and_rejects_a_missing_folder(tmp_path, capsys):
    from ptolemy_core.models import manifest_tool

    folder = tmp_path / "w"
    folder.mkdir()
    (folder / "square_interpretable.json").write_text('{"features": []}')
    net_entry = {"file": "unet.pt", "sha256": "x"}
    (folder / "manifest.json").write_text(json.dumps({"models": {"unet": net_entry}}))
    assert manifest_tool.main([str(folder)]) == 0
    doc = json.loads((folder / "manifest.json").read_text())
    sha = registry.sha256_file(folder / "square_interpretable.json")
    assert doc["models"]["square_interpretable"] == {"file": "square_interpretable.json", "sha256": sha}
    assert doc["models"]["unet"]["sha256"] == "x"  # network entries untouched
    assert capsys.readouterr().out == f"square_interpretable: {sha}\n"
    # "--help" or a mistyped folder used to be taken as a folder and died in a traceback.
    with pytest.raises(SystemExit) as exc:
        manifest_tool.main([str(tmp_path / "nope")])
    assert exc.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"python -m ptolemy_core.models.manifest_tool: error: no such folder: {tmp_path / 'nope'}")
    with pytest.raises(SystemExit) as exc:
        manifest_tool.main(["--help"])
    assert exc.value.code == 0 and "WEIGHTS_DIR" in capsys.readouterr().out
