"""`ptolemy serve`: real HTTP on loopback against the reference API's formats.

The finders are replaced by small deterministic fakes (pytest-mock) so these
tests check the server, not the finders; ``test_server_with_real_finders``
runs the real ones when they are installed.
"""

from __future__ import annotations

import csv
import io
import json
import socket
import threading
import time
from types import SimpleNamespace

import httpx
import numpy as np
import pytest

from ptolemy_core.errors import PtolemyInputError
from ptolemy_core.server import client
from ptolemy_core.server import state as state_mod
from ptolemy_core.server.app import create_app
from ptolemy_core.server.tables import HOLE_COLUMNS, SQUARE_COLUMNS
from ptolemy_core.targets import Target

uvicorn = pytest.importorskip("uvicorn")


# ------------------------------------------------------------------ fakes
def fake_find_squares(image):
    """Three squares per tile at fixed spots; score and brightness from the pixels there."""
    targets = []
    for k, (r, c) in enumerate([(20.0, 30.0), (40.0, 12.0), (50.0, 50.0)]):
        b = float(image[int(r), int(c)])
        verts = ((r - 5, c - 5), (r - 5, c + 5), (r + 5, c + 5), (r + 5, c - 5))
        targets.append(Target("square", (r, c), verts, 100.0 + k, score=0.9 - 0.2 * k, brightness=b,
                              features={"segment_area": 90.0, "std": 1.0 + k, "visible_fraction": 1.0,
                                        "touches_edge": False, "ice_thickness_nm": None,
                                        "relative_thickness": 0.1 * k}))
    return SimpleNamespace(targets=targets, i0=None, notes=())


def fake_find_holes(image, i0=None):
    """Four holes; intensity from the image, score decreasing."""
    targets = []
    for k in range(4):
        r, c = 10.0 + 10 * k, 20.0 + 5 * k
        m = float(image[int(r), int(c)])
        verts = ((r - 4, c - 4), (r - 4, c + 4), (r + 4, c + 4), (r + 4, c - 4))
        targets.append(Target("hole", (r, c), verts, 64.0, score=0.8 - 0.1 * k, brightness=m,
                              features={"radius": 4.0, "ellipse": {"a": 4, "b": 4, "angle_deg": 0},
                                        "mean": m, "std": 2.0, "ice_thickness_nm": 50.0 + k,
                                        "cut": False, "lattice_index": [k, 0]}))
    return SimpleNamespace(targets=targets, i0=1000.0 if i0 is None else i0, notes=())


# ------------------------------------------------------------------ server
class Running:
    def __init__(self, state_dir, max_body_mb=512.0):
        self.app = create_app(state_dir, max_body_mb=max_body_mb)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.app, log_level="error", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.server.started
        self.http = httpx.Client(base_url=self.url, timeout=30, trust_env=False)

    def post(self, path, payload=None, raw: bytes | None = None):
        # Leginon sends JSON text with no Content-Type header.
        body = raw if raw is not None else json.dumps(payload).encode()
        return self.http.post(path, content=body)

    def get(self, path):
        return self.http.get(path)

    def stop(self):
        self.http.close()
        self.server.should_exit = True
        self.thread.join(10)
        self.app.state.ptolemy.store.close()


@pytest.fixture
def fakes(mocker):
    mocker.patch.object(state_mod, "run_find_squares", side_effect=fake_find_squares)
    mocker.patch.object(state_mod, "run_find_holes", side_effect=fake_find_holes)


@pytest.fixture
def srv(tmp_path, fakes):
    s = Running(tmp_path / "state")
    yield s
    s.stop()


def tile(value=500.0, shape=(64, 64)):
    img = np.full(shape, value, dtype=np.float32)
    img[40, 12] = value / 2  # second square darker
    return img.tolist()


def parse_csv(text):
    rows = list(csv.reader(io.StringIO(text)))
    return rows[0], rows[1:]


def push_tile(s, grid_id, tile_id, value=500.0):
    r = s.post("/push_lm", {"image": tile(value), "grid_id": grid_id, "tile_id": tile_id})
    assert r.status_code == 200, r.text
    assert r.json() is None


def push_mm(s, square_id, mm_img_id, grid_id=1, value=400.0):
    img = np.full((64, 80), value, np.float32)
    r = s.post("/push_and_evaluate_mm", {"image": img.tolist(), "grid_id": grid_id,
                                         "square_id": square_id, "mm_img_id": mm_img_id, "tile_id": 9})
    assert r.status_code == 200, r.text
    return parse_csv(r.json())


# ------------------------------------------------------------------ tests
def test_health_and_session_initialisation(srv):
    r = srv.get("/")
    assert r.status_code == 200 and r.json()["service"] == "ptolemy-leginon"
    r = srv.post("/initialize_new_session", {"historical_state_paths": []})
    assert r.status_code == 200 and r.json() is None


def test_square_csv_format_and_ids(srv):
    srv.post("/initialize_new_session", {"historical_state_paths": []})
    push_tile(srv, grid_id=7, tile_id=11)
    push_tile(srv, grid_id=7, tile_id=12)
    text = srv.get("/current_lm_state").json()
    assert isinstance(text, str) and text.endswith("\n") and "\r" not in text
    header, rows = parse_csv(text)
    assert header == list(SQUARE_COLUMNS)
    assert [int(r[0]) for r in rows] == list(range(6))
    assert [r[1] for r in rows] == ["11"] * 3 + ["12"] * 3
    assert {r[2] for r in rows} == {"7"}
    first = dict(zip(header, rows[0], strict=True))
    assert (first["center_x"], first["center_y"]) == ("30", "20")  # x = column, y = row
    assert first["visited"] == "False"
    assert float(first["vert_1_x"]) == 25.0 and float(first["vert_1_y"]) == 15.0
    assert float(first["prior_score"]) == pytest.approx(0.9)
    assert float(first["brightness"]) == 500.0 and float(first["area"]) == 100.0
    # A new session restarts the ids at 0.
    srv.post("/initialize_new_session", {"historical_state_paths": []})
    assert parse_csv(srv.get("/current_lm_state").json())[1] == []
    push_tile(srv, grid_id=8, tile_id=1)
    assert [int(r[0]) for r in parse_csv(srv.get("/current_lm_state").json())[1]] == [0, 1, 2]


def test_hole_csv_visit_and_select_next_square(srv):
    push_tile(srv, grid_id=1, tile_id=1)
    push_tile(srv, grid_id=2, tile_id=2)
    assert srv.post("/set_noice_hole_intensity", {"value": 1000.0}).json() is None
    header, rows = push_mm(srv, square_id=0, mm_img_id=33)
    assert header == list(HOLE_COLUMNS)
    assert sorted(int(r[0]) for r in rows) == [0, 1, 2, 3]
    rec = [dict(zip(header, r, strict=True)) for r in rows]
    assert all(r["visited"] == "False" and r["ctf"] == "" and r["ice_thickness"] == "" for r in rec)
    assert all(r["mm_img_id"] == "33" and r["square_id"] == "0" and r["grid_id"] == "1" for r in rec)
    scores = [float(r["prior_score"]) for r in rec]
    assert scores == sorted(scores, reverse=True)  # best first: Leginon acquires in row order
    # Before feedback: GP_probs keeps the prior's order, all unvisited squares are listed.
    header, rows = parse_csv(srv.post("/select_next_square", {"value": -1}).json())
    assert header == list(SQUARE_COLUMNS) + ["GP_probs"]
    assert len(rows) == 6 and all(r[-1] != "" for r in rows)
    # One exposure: the hole and its square become visited.
    r = srv.post("/visit_holes", {"hole_ids": [2], "ctfs": [3.5], "ice_thicknesses": [42.0]})
    assert r.status_code == 200 and r.json() is None
    header, rows = parse_csv(srv.get("/current_mm_state").json())
    visited = [dict(zip(header, r, strict=True)) for r in rows if r[0] == "2"][0]
    assert visited["visited"] == "True" and float(visited["ctf"]) == 3.5
    assert float(visited["ice_thickness"]) == 42.0
    lm = parse_csv(srv.get("/current_lm_state").json())[1]
    assert [r[6] for r in lm] == ["True"] + ["False"] * 5
    header, rows = parse_csv(srv.post("/select_next_square", {"value": -1}).json())
    assert [int(r[0]) for r in rows] == [1, 2, 3, 4, 5]
    # Grid filter; ids and centres agree with current_lm_state.
    header, rows = parse_csv(srv.post("/select_next_square", {"value": 2}).json())
    assert [int(r[0]) for r in rows] == [3, 4, 5]
    assert [r[:5] for r in rows] == [r[:5] for r in lm[3:]]
    # Active holes: the visited one is gone.
    header, rows = parse_csv(srv.get("/rerun_mm_on_active_holes").json())
    assert sorted(int(r[0]) for r in rows) == [0, 1, 3]
    header, rows = parse_csv(srv.post("/rerun_mm_on_arbitrary_holes", {"ints": [3, 0]}).json())
    assert [int(r[0]) for r in rows] == [3, 0]
    feats = srv.get("/current_lm_features").json()
    assert feats["ids"] == list(range(6)) and len(feats["features"][0]) == len(feats["columns"])
    feats = srv.get("/current_mm_features").json()
    assert feats["ids"] == [0, 1, 2, 3]


def test_restart_continues_session_from_sqlite(tmp_path, fakes):
    s = Running(tmp_path / "st")
    push_tile(s, 1, 1)
    push_mm(s, square_id=1, mm_img_id=5)
    s.post("/visit_holes", {"hole_ids": [0, 1], "ctfs": [4.0, 9.0], "ice_thicknesses": [30.0, 120.0]})
    lm_before = s.get("/current_lm_state").json()
    mm_before = s.get("/current_mm_state").json()
    s.stop()
    s2 = Running(tmp_path / "st")
    try:
        assert s2.get("/current_lm_state").json() == lm_before
        assert s2.get("/current_mm_state").json() == mm_before
        push_tile(s2, 1, 2)  # ids continue after a restart
        assert [int(r[0]) for r in parse_csv(s2.get("/current_lm_state").json())[1]] == list(range(6))
        header, rows = push_mm(s2, square_id=2, mm_img_id=6)
        assert sorted(int(r[0]) for r in rows) == [4, 5, 6, 7]
    finally:
        s2.stop()


def test_bad_requests_get_one_line_4xx_and_server_lives(srv):
    cases = [
        ("/push_lm", b"not json", 400, "not JSON"),
        ("/push_lm", b"[1, 2]", 400, "JSON object"),
        ("/push_lm", json.dumps({"grid_id": 1, "tile_id": 1}).encode(), 400, "missing field 'image'"),
        ("/push_lm", json.dumps({"image": [[1, 2], [3]], "grid_id": 1, "tile_id": 1}).encode(), 400,
         "rows of equal length"),
        ("/push_lm", json.dumps({"image": [[1] * 40] * 40, "grid_id": "a", "tile_id": 1}).encode(), 400,
         "'grid_id' must be an integer"),
        ("/push_and_evaluate_mm", json.dumps({"image": [[1.0] * 4] * 4, "grid_id": 1, "square_id": 1,
                                              "mm_img_id": 1}).encode(), 400, "too small"),
        ("/visit_holes", json.dumps({"hole_ids": [99], "ctfs": [3.0],
                                     "ice_thicknesses": [50.0]}).encode(), 404, "unknown hole id"),
        ("/visit_holes", json.dumps({"hole_ids": [0, 1], "ctfs": [3.0],
                                     "ice_thicknesses": [50.0]}).encode(), 400, "differ in length"),
        ("/select_next_square", json.dumps({"value": -1}).encode(), 409, "no squares"),
        ("/set_noice_hole_intensity", b"{}", 400, "missing field 'value'"),
    ]
    for path, body, status, text in cases:
        r = srv.post(path, raw=body)
        assert r.status_code == status, (path, r.text)
        detail = r.json()["detail"]
        assert text in detail and "\n" not in detail
    assert srv.get("/").status_code == 200


def test_body_size_limit(tmp_path, fakes):
    s = Running(tmp_path / "st", max_body_mb=0.01)
    try:
        r = s.post("/push_lm", {"image": tile(), "grid_id": 1, "tile_id": 1})
        assert r.status_code == 413
        assert "larger than 0.01 MB" in r.json()["detail"]
        # A chunked body (no Content-Length) is cut off while streaming.
        chunks = (b" " * 4096 for _ in range(10))
        r = s.http.post("/push_lm", content=chunks)
        assert r.status_code == 413
        assert s.get("/").status_code == 200
    finally:
        s.stop()


def test_state_paths_confined_and_save_load_roundtrip(srv, tmp_path):
    push_tile(srv, 3, 4)
    push_mm(srv, square_id=0, mm_img_id=2, grid_id=3)
    srv.post("/visit_holes", {"hole_ids": [1], "ctfs": [4.5], "ice_thicknesses": [60.0]})
    for bad in ("../escape", str(tmp_path / "elsewhere"), "/etc", "a/../../b"):
        r = srv.post("/save_state", {"path": bad})
        assert r.status_code == 403, bad
        assert "outside the server's state directory" in r.json()["detail"]
    assert not (tmp_path / "escape").exists() and not (tmp_path / "elsewhere").exists()
    assert srv.post("/save_state", {"path": "saved/one"}).status_code == 200
    folder = tmp_path / "state" / "saved" / "one"
    assert sorted(p.name for p in folder.iterdir()) == ["lm_feats.npy", "lmstate.csv", "mm_feats.npy",
                                                        "mmstate.csv"]
    assert np.load(folder / "lm_feats.npy").shape == (3, 4)
    assert np.load(folder / "mm_feats.npy").shape == (4, 4)
    header, rows = parse_csv((folder / "lmstate.csv").read_text())
    assert header == list(SQUARE_COLUMNS) and len(rows) == 3
    header, rows = parse_csv((folder / "mmstate.csv").read_text())
    assert header == list(HOLE_COLUMNS) and [r[9] for r in rows] == ["", "4.5", "", ""]
    lm = srv.get("/current_lm_state").json()
    # New session from the saved state: same squares, same ids.
    r = srv.post("/initialize_new_session", {"historical_state_paths": [], "new_state_path": "saved/one"})
    assert r.status_code == 200, r.text
    assert srv.get("/current_lm_state").json() == lm
    r = srv.post("/overwrite_current_state", {"path": "../../x"})
    assert r.status_code == 403
    assert srv.post("/load_historical_state", {"path": "saved/one"}).status_code == 200
    assert srv.post("/append_current_state", {"path": "saved/one"}).status_code == 200
    assert [int(r[0]) for r in parse_csv(srv.get("/current_lm_state").json())[1]] == list(range(6))
    assert srv.post("/load_historical_state", {"path": "nothing-here"}).status_code == 400
    assert srv.get("/clear_historical_state").status_code == 200
    assert srv.get("/clear_current_state").status_code == 200
    assert parse_csv(srv.get("/current_lm_state").json())[1] == []


def test_concurrent_pushes_are_serialised(srv):
    errors = []

    def push(k):
        try:
            push_tile(srv, grid_id=1, tile_id=100 + k)
        except AssertionError as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=push, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    rows = parse_csv(srv.get("/current_lm_state").json())[1]
    assert [int(r[0]) for r in rows] == list(range(24))
    by_tile = {}
    for r in rows:
        by_tile.setdefault(r[1], []).append(int(r[0]))
    assert len(by_tile) == 8
    # Each tile's squares got consecutive ids (one push = one locked update).
    assert all(ids == list(range(ids[0], ids[0] + 3)) for ids in by_tile.values())


def test_worker_endpoint_and_client(srv, tmp_path, mocker):
    from PIL import Image as PILImage

    path = tmp_path / "tile with space.png"
    PILImage.fromarray(np.full((64, 64), 120, np.uint8)).save(path)
    mocker.patch("ptolemy_core.squares.find_squares", create=True,
                 side_effect=lambda img, **kw: fake_find_squares(img.data))
    line = client.find_via_worker("lowmag", path, url=srv.url)
    records = json.loads(line)
    assert len(records) == 3 and records[0]["center"] == [30.0, 20.0]
    assert "\n" not in line
    with pytest.raises(PtolemyInputError, match="'kind' must be 'lowmag' or 'medmag'"):
        client.find_via_worker("atlas", path, url=srv.url)
    with pytest.raises(PtolemyInputError):
        client.find_via_worker("lowmag", tmp_path / "missing.mrc", url=srv.url)
    # Nothing listening -> None (the scripts then run in-process).
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free = sock.getsockname()[1]
    assert client.find_via_worker("lowmag", path, url=f"http://127.0.0.1:{free}", timeout=2) is None
    assert client.health(srv.url)["service"] == "ptolemy-leginon"
    assert client.health(f"http://127.0.0.1:{free}") is None
    # Only loopback workers are ever started.
    assert client.start_worker_background("http://192.0.2.1:8000") is False


@pytest.mark.slow
def test_server_with_real_finders(tmp_path, mocker):
    """No fakes: a simulated atlas tile and square image through HTTP and the real finders."""
    synth = pytest.importorskip("ptolemy_core.synth")
    spy_sq = mocker.spy(state_mod, "run_find_squares")
    spy_h = mocker.spy(state_mod, "run_find_holes")

    atlas = synth.simulate_atlas(3, shape=(512, 512))
    square = synth.simulate_square_image(3, shape=(512, 720))
    s = Running(tmp_path / "st")
    try:
        s.post("/initialize_new_session", {"historical_state_paths": []})
        tile_counts = np.rint(atlas.data).astype(np.int64)
        r = s.post("/push_lm", {"image": tile_counts.tolist(), "grid_id": 1, "tile_id": 5})
        assert r.status_code == 200, r.text
        header, rows = parse_csv(s.get("/current_lm_state").json())
        expected = spy_sq.spy_return.targets
        assert len(rows) == len(expected) > 0
        got = {(int(r[3]), int(r[4])) for r in rows}
        assert got == {(round(t.center[1]), round(t.center[0])) for t in expected}
        sq = int(rows[0][0])
        mm_counts = np.rint(square.data).astype(np.int64)
        r = s.post("/push_and_evaluate_mm", {"image": mm_counts.tolist(), "grid_id": 1, "square_id": sq,
                                             "mm_img_id": 1})
        assert r.status_code == 200, r.text
        header, holes = parse_csv(r.json())
        expected = spy_h.spy_return.targets
        assert header == list(HOLE_COLUMNS) and len(holes) == len(expected) > 0
        assert all(0 <= float(h[7]) <= 1 for h in holes)
    finally:
        s.stop()


@pytest.mark.slow
def test_ptolemy_serve_started_in_background(tmp_path, capsys):
    """start_worker_background spawns `ptolemy serve` detached; a second server on the same
    state directory is refused; the client then talks to the real process."""
    import os
    import signal

    from ptolemy_core.cli.main import main

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    state_dir = tmp_path / "worker state"
    assert client.start_worker_background(url, state_dir=state_dir, wait_s=60) is True
    pid = int((state_dir / ".serve.lock").read_text())
    try:
        info = client.health(url)
        assert info is not None and info["service"] == "ptolemy-leginon"
        assert client.start_worker_background(url, state_dir=state_dir) is True  # already running
        assert (state_dir / client.LOG_NAME).exists()
        assert main(["serve", "--state-dir", str(state_dir), "--port", str(port + 1)]) == 2
        assert "already uses the state directory" in capsys.readouterr().err
        assert int((state_dir / ".serve.lock").read_text()) == pid
        with pytest.raises(PtolemyInputError, match="'kind' must be"):
            client.find_via_worker("x", tmp_path / "a.mrc", url=url)
    finally:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while client.health(url) is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert client.health(url) is None


@pytest.mark.parametrize("margin", [None, -np.inf], ids=["default-margin", "no-evidence-test"])
def test_adapted_hole_scores_where_leginon_reads_them(srv, mocker, tmp_path, margin):
    """Feedback says thick ice is good: later images list thick holes first, in prior_score.

    With the hole evidence test off, 15 exposures re-rank; at the default
    margin 15 exposures are not enough evidence and the prior's order stays.
    """
    if margin is not None:
        (tmp_path / "state" / "cfg.json").write_text(
            json.dumps({"adaptive": {"hole_prior_wrong_log_odds": margin}}))
        assert srv.post("/set_config", {"path": "cfg.json"}).status_code == 200
    lam, i0 = 350.0, 1000.0
    thick = np.linspace(20, 160, 15)

    def finder(image, i0=None):
        targets = []
        for k in range(15):
            m = float(image[0, k])
            t = lam * np.log(1000.0 / m)
            targets.append(Target("hole", (20.0, 10.0 + 5 * k), ((15, 5), (15, 15), (25, 15), (25, 5)), 100.0,
                                  score=float(np.exp(-0.5 * ((t - 40) / 25) ** 2)), brightness=m,
                                  features={"radius": 5.0, "mean": m, "std": 1.0, "ice_thickness_nm": t}))
        targets.sort(key=lambda t: -t.score)
        return SimpleNamespace(targets=targets, i0=1000.0, notes=())

    mocker.patch.object(state_mod, "run_find_holes", side_effect=finder)
    push_tile(srv, 1, 1)
    img = np.full((32, 64), 500.0, np.float32)
    img[0, :15] = i0 * np.exp(-thick / lam)
    header, rows = push_mm(srv, square_id=0, mm_img_id=1)
    col = {h: i for i, h in enumerate(header)}
    r = srv.post("/push_and_evaluate_mm", {"image": img.tolist(), "grid_id": 1, "square_id": 0,
                                           "mm_img_id": 2})
    header, rows = parse_csv(r.json())

    def t_of(row):
        return float(thick[(int(row[col["center_x"]]) - 10) // 5])

    assert t_of(rows[0]) < 70  # prior: thin ice first
    for row in rows:  # one exposure per visit_holes, as looplearn sends them
        t = t_of(row)
        ok = 90 <= t <= 140
        srv.post("/visit_holes", {"hole_ids": [int(row[0])], "ctfs": [3.2 if ok else 9.0],
                                  "ice_thicknesses": [t]})
    r = srv.post("/push_and_evaluate_mm", {"image": img.tolist(), "grid_id": 1, "square_id": 1,
                                           "mm_img_id": 3})
    header, rows = parse_csv(r.json())
    top = [t_of(row) for row in rows[:3]]
    if margin is None:
        assert all(t < 70 for t in top), top  # still the prior's thin-ice-first order
    else:
        assert all(85 <= t <= 145 for t in top), top
    scores = [float(row[col["prior_score"]]) for row in rows]
    assert scores == sorted(scores, reverse=True)
    ice_pred = [float(row[col["ice_pred"]]) for row in rows]
    np.testing.assert_allclose(ice_pred, [t_of(row) for row in rows], atol=3.0)


def test_reference_i0_when_the_finder_has_none(tmp_path, mocker):
    """Images without a vacuum intensity share one session reference (kept across restarts)."""

    def no_i0(image, i0=None):
        res = fake_find_holes(image, i0)
        res.i0 = None
        return res

    mocker.patch.object(state_mod, "run_find_squares", side_effect=fake_find_squares)
    mocker.patch.object(state_mod, "run_find_holes", side_effect=no_i0)
    s = Running(tmp_path / "st")
    try:
        push_mm(s, square_id=0, mm_img_id=1, value=400.0)
        push_mm(s, square_id=0, mm_img_id=2, value=800.0)
        feats = s.get("/current_mm_features").json()
        i0s = [row[feats["columns"].index("i0")] for row in feats["features"]]
        assert i0s == pytest.approx([480.0] * 8)  # 1.2 x the first image's brightest hole
    finally:
        s.stop()
    s = Running(tmp_path / "st")
    try:
        push_mm(s, square_id=0, mm_img_id=3, value=900.0)
        feats = s.get("/current_mm_features").json()
        assert feats["features"][-1][feats["columns"].index("i0")] == pytest.approx(480.0)
    finally:
        s.stop()


def test_server_only_endpoints(srv, tmp_path):
    push_tile(srv, 1, 1)
    assert srv.post("/save_state", {"path": "h1"}).status_code == 200
    assert srv.post("/save_state", {"path": "h2"}).status_code == 200
    r = srv.post("/append_multi_historical_states", {"paths": ["h1", "h2"]})
    assert r.status_code == 200 and srv.app.state.ptolemy.hist_squares[-1].square_id == 5
    assert srv.post("/append_multi_historical_states", {"paths": ["h1", "../x"]}).status_code == 403
    (tmp_path / "state" / "cfg.json").write_text(json.dumps({"adaptive": {"ucb_beta": 2.0}}))
    assert srv.post("/set_config", {"path": "cfg.json"}).status_code == 200
    assert srv.app.state.ptolemy.ranker.settings.ucb_beta == 2.0
    (tmp_path / "state" / "bad.json").write_text(json.dumps({"beta": 1}))
    r = srv.post("/set_config", {"path": "bad.json"})
    assert r.status_code == 400 and r.json()["detail"] == "unknown adaptive setting(s): beta"
    img = np.full((64, 80), 300.0, np.float32).tolist()
    r = srv.post("/push_mm", {"image": img, "grid_id": 1, "square_id": 2, "mm_img_id": 4})
    assert r.status_code == 200 and r.json() is None
    assert len(parse_csv(srv.get("/rerun_mm_on_active_holes").json())[1]) == 4
    records = srv.post("/process_stateless_lm", {"image": tile()}).json()
    assert len(records) == 3 and records[0]["center"] == [30.0, 20.0] and "brightness" in records[0]
    records = srv.post("/process_stateless_mm", {"image": img}).json()
    assert len(records) == 4 and records[0]["kind"] == "hole"
    assert len(parse_csv(srv.get("/current_lm_state").json())[1]) == 3  # stateless: nothing stored
    assert srv.post("/visit_square", {"square_id": 1}).status_code == 200
    assert srv.post("/visit_square", {"square_id": 77}).status_code == 404
    rows = parse_csv(srv.post("/select_next_square", {"value": -1}).json())[1]
    assert [int(r[0]) for r in rows] == [0, 2]


# ------------------------------------------------ fast image decoding (decode.py)
def _plain(body: bytes) -> np.ndarray:
    return np.asarray(json.loads(body)["image"], dtype=np.float32)


def test_fast_decode_is_bit_identical_to_json():
    from ptolemy_core.server.decode import split_image_body

    rng = np.random.default_rng(3)
    for k in range(40):
        shape = (int(rng.integers(1, 30)), int(rng.integers(1, 30)))
        hi = [10, 70000, 2**31, 10**17][k % 4]  # counts ... beyond float32's exact integers
        img = rng.integers(-hi, hi, shape)
        seps = [(", ", ": "), (",", ":")][k % 2]
        body = json.dumps({"grid_id": 3, "image": img.tolist(), "tile_id": -1}, separators=seps).encode()
        fast = split_image_body(body)
        assert fast is not None, body[:80]
        data, image = fast
        ref = _plain(body)
        assert image.dtype == np.float32 and image.shape == ref.shape
        assert np.array_equal(image.view(np.uint32), ref.view(np.uint32))
        assert {k: v for k, v in data.items() if k != "image"} == {"grid_id": 3, "tile_id": -1}
    # Other whitespace, NaN: left to json (None), never a different answer.
    for body in (b'{"image": [[1.5,\n2]]}', b'{"image": [[1,\n2]]}', b'{"image": [[NaN, 2]]}',
                 b'{"image": [ [1, 2]]}', b'{"image": [[1, 2]], "image": [[3, 4]]}'):
        assert split_image_body(body) is None, body
    # "image" text inside a string does not fool it.
    data, image = split_image_body(b'{"note": "\\"image\\": [[7]]", "image": [[5, 6]]}')
    assert image.tolist() == [[5.0, 6.0]] and data["note"] == '"image": [[7]]'


def _float_images(rng):
    """Float images as clients send them: float32/float64 reprs, exponents, ints mixed in."""
    shape = (int(rng.integers(1, 25)), int(rng.integers(1, 25)))
    f32 = (rng.random(shape) * 4000).astype(np.float32)
    near_mid = np.nextafter(f32, np.float32(np.inf)).astype(np.float64) / 2 + f32.astype(np.float64) / 2
    yield f32.tolist()  # Leginon's corrected float32 frames: 17-digit reprs
    yield (rng.standard_normal(shape) * 10.0 ** rng.integers(-30, 30, shape)).tolist()  # exponents
    yield (rng.standard_normal(shape) * 10.0 ** rng.integers(-30, 30, shape)).astype(np.float32).tolist()
    yield np.full(shape, 1e-7).tolist()
    yield np.round(rng.standard_normal(shape) * 100, int(rng.integers(0, 4))).tolist()  # short decimals
    yield (near_mid * (1 + rng.integers(-2, 3, shape) * 2.0**-52)).tolist()  # float32 rounding ties
    mixed = (-rng.random(shape) * 100).tolist()
    for row in mixed:
        row[0] = int(rng.integers(-(2**60), 2**60))  # integers beyond float32's exact range
        row[-1] = -0.0
    yield mixed


def test_fast_float_decode_is_bit_identical_to_json():
    from ptolemy_core.server.decode import split_image_body

    rng = np.random.default_rng(11)
    fast_used = 0
    for k in range(30):
        for j, img in enumerate(_float_images(rng)):
            seps = [(", ", ": "), (",", ":")][(k + j) % 2]
            body = json.dumps({"grid_id": 3, "image": img, "tile_id": -1}, separators=seps).encode()
            fast = split_image_body(body)
            if j in (0, 3, 4):  # ordinary float images must take the fast path
                assert fast is not None, body[:80]
            if fast is None:
                continue
            fast_used += 1
            data, image = fast
            ref = _plain(body)
            assert image.dtype == np.float32 and image.shape == ref.shape
            assert np.array_equal(image.view(np.uint32), ref.view(np.uint32)), body[:200]
            assert {k: v for k, v in data.items() if k != "image"} == {"grid_id": 3, "tile_id": -1}
    assert fast_used >= 150  # most of the 210 images, exponents and ties included
    # Exact edge cases, each next to an ordinary number.
    for text in (b"1e-7", b"1E5", b"1e+05", b"-0.0", b"-0", b"-0e3", b"3.4028235e38", b"1.4e-45", b"1e-400",
                 b"16777217", b"16777217.0", b"0.000012345678901234567", b"1e-0005", b"2.5e-39"):
        body = b'{"image": [[' + text + b", 1.5]]}"
        fast = split_image_body(body)
        assert fast is not None, text
        assert np.array_equal(fast[1].view(np.uint32), _plain(body).view(np.uint32)), text
    # json's NaN/Infinity, a float32 overflow, other whitespace, and numbers longer
    # than the digit scan is bounded for (one pass per digit): left to json (None).
    for text in (b"NaN", b"Infinity", b"-Infinity", b"1e39", b"1.5 ", b"1.5\n", b"0." + b"0" * 70 + b"1"):
        assert split_image_body(b'{"image": [[' + text + b", 1.5]]}") is None, text


MALFORMED_INT_BODIES = [
    b'{"image": [[1, 2], [3]], "grid_id": 1, "tile_id": 1}',
    b'{"image": [[01, 2], [3, 4]], "grid_id": 1, "tile_id": 1}',
    b'{"image": [[1, 2], [], [3, 4]], "grid_id": 1, "tile_id": 1}',
    b'{"image": [[1, , 2]], "grid_id": 1, "tile_id": 1}',
    b'{"image": [[1, 2,]], "grid_id": 1, "tile_id": 1}',
    b'{"image": [[1-2, 2]], "grid_id": 1, "tile_id": 1}',
    b'{"image": [[--1, 2]], "grid_id": 1, "tile_id": 1}',
    b'{"image": [[[1], 2]], "grid_id": 1, "tile_id": 1}',
    b'{"image": [[1 2]], "grid_id": 1, "tile_id": 1}',
    b'{"image": [[1, 2]], "grid_id": 1, "tile_id": 1',
    b'{"image": [[1, 2]], "grid_id": "x", "tile_id": 1}',
    b'{"image": [[1, 2]], "tile_id": 1}',
    b'{"image": [[1, 2]], "grid_id": 1, "tile_id": 1}',
    b'{"image": [[5, 6]], "image": [[1] * 3], "grid_id": 1, "tile_id": 1}',
    b'[{"image": [[1, 2]]}]',
]


MALFORMED_FLOAT_BODIES = [
    b'{"image": [[1.5, 2.5], [3.5]], "grid_id": 1, "tile_id": 1}',
    b'{"image": [[01.5, 2.5], [3.5, 4.5]], "grid_id": 1, "tile_id": 1}',
    b'{"image": [[1., 2.5]], "grid_id": 1, "tile_id": 1}',
    b'{"image": [[.5, 2.5]], "grid_id": 1, "tile_id": 1}',
    b'{"image": [[1.5e, 2.5]], "grid_id": 1, "tile_id": 1}',
    b'{"image": [[1.5e+-3, 2.5]], "grid_id": 1, "tile_id": 1}',
    b'{"image": [[+1.5, 2.5]], "grid_id": 1, "tile_id": 1}',
    b'{"image": [[1.5.2, 2.5]], "grid_id": 1, "tile_id": 1}',
    b'{"image": [[1e5e5, 2.5]], "grid_id": 1, "tile_id": 1}',
    b'{"image": [[1e5.3, 2.5]], "grid_id": 1, "tile_id": 1}',
    b'{"image": [[1.5-2, 2.5]], "grid_id": 1, "tile_id": 1}',
    b'{"image": [[1.5, , 2.5]], "grid_id": 1, "tile_id": 1}',
    b'{"image": [[1.5, 2.5,]], "grid_id": 1, "tile_id": 1}',
    b'{"image": [[1.5], [], [2.5]], "grid_id": 1, "tile_id": 1}',
    b'{"image": [[1.5] [2.5]], "grid_id": 1, "tile_id": 1}',
    b'{"image": [[[1.5], 2.5]], "grid_id": 1, "tile_id": 1}',
    b'{"image": [[1.5 2.5]], "grid_id": 1, "tile_id": 1}',
    b'{"image": [[1.5, 2.5]], "grid_id": 1, "tile_id": 1',
    b'{"image": [[1.5, 2.5]], "grid_id": 1, "tile_id": 1}',
    b'{"image": [[1.5, 1e39]], "grid_id": 1, "tile_id": 1}',
    b'{"image": [[1.5, NaN], [Infinity, -Infinity]], "grid_id": 1, "tile_id": 1}',
]


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")
@pytest.mark.parametrize("bodies", [MALFORMED_INT_BODIES, MALFORMED_FLOAT_BODIES], ids=["int", "float"])
def test_malformed_bodies_get_the_plain_paths_errors(srv, mocker, bodies):
    from ptolemy_core.server import app as app_mod

    fast = []
    for body in bodies:
        r = srv.post("/push_lm", raw=body)
        fast.append((r.status_code, r.json()["detail"]))
    mocker.patch.object(app_mod, "split_image_body", return_value=None)  # json only
    for body, (status, detail) in zip(bodies, fast, strict=True):
        r = srv.post("/push_lm", raw=body)
        assert (r.status_code, r.json()["detail"]) == (status, detail), body
        assert 400 <= status < 500 and "\n" not in detail
    assert srv.get("/").status_code == 200
    # both lists: ragged rows first, a non-JSON number second, a valid too-small image third from last
    assert "too small" in fast[-3][1] and "not JSON" in fast[1][1] and "equal length" in fast[0][1]


def test_integer_push_decoded_exactly_over_http(srv):
    img = np.full((64, 64), 700, np.int64)
    img[20, 30], img[40, 12], img[50, 50] = 1234, 98765, 16777217  # 2^24 + 1 rounds in float32
    r = srv.post("/push_lm", {"image": img.tolist(), "grid_id": 1, "tile_id": 1})
    assert r.status_code == 200, r.text
    _, rows = parse_csv(srv.get("/current_lm_state").json())
    # The fake finder reports the pixel at each square's centre as its brightness.
    assert [float(r[-2]) for r in rows] == [1234.0, 98765.0, float(np.float32(16777217))]


# ---------------------------------------------------- hole centre coordinate frame
@pytest.mark.parametrize("shape", [(64, 80), (1000, 1440), (600, 1441), (23, 2903), (3000, 1800)])
def test_hole_centres_in_leginons_shrunk_frame_round_trip(srv, mocker, shape):
    convert = pytest.importorskip("ptolemy_leginon.convert")
    rows, cols = shape
    spots = [(rows * 0.31, cols * 0.77), (rows - 2.0, 1.0), (1.0, cols - 2.0)]

    def finder(image, i0=None):
        assert image.shape == shape
        ts = [Target("hole", (r, c), ((r, c),) * 4, 50.0, score=0.9 - 0.1 * k, brightness=300.0,
                     features={"radius": 8.0, "mean": 300.0, "std": 1.0}) for k, (r, c) in enumerate(spots)]
        return SimpleNamespace(targets=ts, i0=1000.0, notes=())

    mocker.patch.object(state_mod, "run_find_holes", side_effect=finder)
    body = b'{"grid_id": 1, "square_id": 0, "mm_img_id": 7, "image": [' + b", ".join(
        [b"[" + b", ".join([b"100"] * cols) + b"]"] * rows) + b"]}"
    r = srv.post("/push_and_evaluate_mm", raw=body)
    assert r.status_code == 200, r.text
    header, out = parse_csv(r.json())
    col = {h: k for k, h in enumerate(header)}
    b = convert.shrink_factor(shape)
    assert state_mod.leginon_shrink(shape) == (b, tuple(convert.shrink_offset(shape)))
    for row, (rr, cc) in zip(out, spots, strict=True):  # CSV is best first = spot order here
        x, y = float(row[col["center_x"]]), float(row[col["center_y"]])
        assert 0 <= x <= cols / b and 0 <= y <= rows / b
        back = convert.shrunk_to_full((y, x), shape)  # what Leginon does with them
        assert abs(back[0] - rr) <= b / 2 + 1e-9 and abs(back[1] - cc) <= b / 2 + 1e-9
        assert float(row[col["radius"]]) == pytest.approx(8.0 / b)
        if max(shape) <= 1440:  # the reference's frame: the pushed array's pixels
            assert (x, y) == (round(cc), round(rr))
