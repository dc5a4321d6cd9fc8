"""The drop-in scripts, sourced by bash exactly as Leginon does, and their Python entry point.

The bash tests run the scripts under ``bash -c 'source ...'`` with awkward paths
(spaces, quotes, ``$``, ``;``). A fake interpreter (``PTOLEMY_PYTHON``) runs
the real ``ptolemy_leginon.runscript`` with contract fakes of the finders so
the expected first line is known exactly; one test per script uses the real
finders when they are installed.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ptolemy_core.formats import to_json_line
from ptolemy_core.targets import Target
from ptolemy_leginon import convert as cv
from ptolemy_leginon import runscript
from ptolemy_leginon.holes import leginon_json_line

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "ptolemy_leginon" / "scripts"
BASH = shutil.which("bash")
pytestmark = pytest.mark.skipif(BASH is None, reason="bash not installed")

FAKE_ENTRY = textwrap.dedent("""
    import os, runpy, sys
    import numpy as np
    import ptolemy_core
    from ptolemy_core.targets import Target

    NHOLES = __file__ + ".nholes"

    def squares(image, **kw):
        data = np.asarray(getattr(image, "data", image))
        class R: pass
        r = R()
        r.targets = [Target("square", (10.0, 20.0), ((5.0, 15.0), (5.0, 25.0), (15.0, 25.0), (15.0, 15.0)),
                            100.0, 0.9, float(data.mean()), {"touches_edge": False}),
                     Target("square", (40.0, 50.5), ((35.0, 45.0), (35.0, 55.0), (45.0, 55.0), (45.0, 45.0)),
                            100.0, 0.4, 7.0, {})]
        return r

    def holes(image, **kw):
        data = np.asarray(getattr(image, "data", image))
        rows, cols = data.shape
        class R: pass
        r = R()
        n = int(open(NHOLES).read()) if os.path.exists(NHOLES) else 3
        r.targets = [Target("hole", (rows * (i + 1) / 4.0 + 0.25, cols * (i + 1) / 5.0 + 0.75),
                            ((0.0, 0.0), (0.0, 8.0), (8.0, 8.0), (8.0, 0.0)), 64.0, 0.9 - 0.1 * i, 5.0,
                            {"radius": 12.0}) for i in range(n)]
        return r

    ptolemy_core.find_squares = squares
    ptolemy_core.find_holes = holes
    sys.argv = ["runscript"] + sys.argv[3:]   # argv: [entry, "-m", module, args...] -> args
    runpy.run_module("ptolemy_leginon.runscript", run_name="__main__")
""")


def _write_mrc(path: Path, data: np.ndarray) -> None:
    import mrcfile

    with mrcfile.new(str(path), overwrite=True) as m:
        m.set_data(data.astype(np.float32))


@pytest.fixture
def fakepy(tmp_path):
    """An executable standing in for Python: runs runscript with fake finders."""
    entry = tmp_path / "fake_entry.py"
    entry.write_text(FAKE_ENTRY)
    exe = tmp_path / "fakepy"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{entry}" "$@"\n')
    exe.chmod(0o755)
    return exe, entry


AWKWARD = ["plain", "with space", "quote'and\"dq", "dollar$HOME;semi", "star*[x]"]


def _source(script: Path, *args: str, env=None, pre: str = ""):
    """``bash -c 'source SCRIPT "$@"'`` with arguments passed verbatim; reports rc and leaks."""
    prog = (
        pre + 'x_before=1; source "$0" "$@"; rc=$?; '
        'echo "RC=$rc"; declare -F | grep -c ptolemy || true; '
        'set | grep -c "^__ptolemy" || true; echo "OPTS=$-"'
    )
    return subprocess.run(
        [BASH, "-c", prog, str(script), *args], capture_output=True, text=True, env=env, timeout=120
    )


def _env(py: Path | str, **extra):
    env = dict(os.environ, PTOLEMY_PYTHON=str(py), PTOLEMY_NO_WORKER="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


@pytest.mark.parametrize("name", AWKWARD)
def test_sq_script_sourced_with_awkward_paths_writes_expected_first_line(tmp_path, fakepy, name):
    folder = tmp_path / name
    folder.mkdir()
    img = np.full((64, 80), 3.0, np.float32)
    _write_mrc(folder / "tile 1.mrc", img)
    res = _source(
        SCRIPTS / "sq_finding.sh", "sess_12", str(folder / "tile 1.mrc"), str(folder), env=_env(fakepy[0])
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.split()
    assert lines[0] == "RC=0"
    assert lines[1] == "0" and lines[2] == "0", "function or variable leaked into the caller"
    assert "e" not in lines[3].split("=")[1], "set -e leaked"
    out = (folder / "sess_12.json").read_text()
    first = out.splitlines()[0]
    expected = to_json_line(
        [
            Target(
                "square",
                (10.0, 20.0),
                ((5.0, 15.0), (5.0, 25.0), (15.0, 25.0), (15.0, 15.0)),
                100.0,
                0.9,
                3.0,
                {"touches_edge": False},
            ),
            Target(
                "square",
                (40.0, 50.5),
                ((35.0, 45.0), (35.0, 55.0), (45.0, 55.0), (45.0, 45.0)),
                100.0,
                0.4,
                7.0,
                {},
            ),
        ]
    )
    assert first == expected
    rec = json.loads(first)
    assert rec[0]["center"] == [20.0, 10.0] and {"center", "vertices", "area", "brightness", "score"} <= set(
        rec[0]
    )
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []  # no temp file left


@pytest.mark.parametrize("shape", [(1024, 1440), (2048, 2048), (4102, 4097)])
def test_hole_script_writes_shrunk_frame_centres(tmp_path, fakepy, shape):
    folder = tmp_path / "se ss'$x"
    folder.mkdir()
    _write_mrc(folder / "hl.mrc", np.zeros(shape, np.float32))
    res = _source(
        SCRIPTS / "hole_finding.sh",
        "sess_Exposure_Targeting",
        str(folder / "hl.mrc"),
        str(folder),
        env=_env(fakepy[0], PTOLEMY_SCORE_KEY="probability"),
    )
    assert res.returncode == 0 and res.stdout.split()[0] == "RC=0", res.stderr
    first = (folder / "sess_Exposure_Targeting.json").read_text().splitlines()[0]
    recs = json.loads(first)
    truth = [(shape[0] * (i + 1) / 4.0 + 0.25, shape[1] * (i + 1) / 5.0 + 0.75) for i in range(3)]
    b, off = cv.shrink_factor(shape), cv.shrink_offset(shape)
    for rec, (r, c) in zip(recs, truth, strict=True):
        x, y = rec["center"]
        # what ScoreTargetFinder + TargetFinder.publishTargets make of it: full-res position of the target
        drow = y * b + off[0] - shape[0] / 2
        dcol = x * b + off[1] - shape[1] / 2
        assert (drow + shape[0] / 2, dcol + shape[1] / 2) == pytest.approx((r, c), abs=1e-6)
        assert rec["probability"] == rec["score"]
        assert rec["full_center"] == pytest.approx([c, r])
        assert rec["shrink_factor"] == b
    assert recs[0]["score"] > recs[1]["score"]


def test_failure_writes_nothing_and_returns_nonzero_one_line(tmp_path, fakepy):
    folder = tmp_path / "a b"
    folder.mkdir()
    (folder / "bad.mrc").write_bytes(b"not an mrc")
    res = _source(SCRIPTS / "sq_finding.sh", "job", str(folder / "bad.mrc"), str(folder), env=_env(fakepy[0]))
    assert res.stdout.split()[0] != "RC=0"
    assert list(folder.iterdir()) == [folder / "bad.mrc"]
    err = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("ptolemy-leginon lowmag: error:"), res.stderr
    # missing image, missing output folder
    res = _source(
        SCRIPTS / "hole_finding.sh",
        "job",
        str(folder / "nope.mrc"),
        str(folder / "nodir"),
        env=_env(fakepy[0]),
    )
    assert res.stdout.split()[0] == "RC=2"
    assert len(res.stderr.strip().splitlines()) == 1
    # too few arguments
    res = _source(SCRIPTS / "sq_finding.sh", "job", env=_env(fakepy[0]))
    assert res.stdout.split()[0] == "RC=2" and "usage" in res.stderr


def test_failure_does_not_exit_the_callers_shell_even_with_errexit(tmp_path, fakepy):
    res = subprocess.run(
        [
            BASH,
            "-c",
            'set -e; source "$0" job /nonexistent.mrc /tmp || echo "CALLER ALIVE rc=$?"',
            str(SCRIPTS / "sq_finding.sh"),
        ],
        capture_output=True,
        text=True,
        env=_env(fakepy[0]),
        timeout=60,
    )
    assert "CALLER ALIVE rc=2" in res.stdout


def test_leginon_unquoted_command_with_space_in_session_path(tmp_path, fakepy):
    # scorefinderback: cmd = 'source %s %s %s %s' % (script, job, mrc_path, out_dir), shell=True, no quotes
    folder = tmp_path / "my session"
    folder.mkdir()
    _write_mrc(folder / "t.mrc", np.ones((32, 32), np.float32))
    cmd = "source {} {} {} {}".format(SCRIPTS / "sq_finding.sh", "s_1", folder / "t.mrc", folder)
    res = subprocess.run(
        cmd, shell=True, executable=BASH, capture_output=True, text=True, env=_env(fakepy[0]), timeout=60
    )
    assert res.returncode == 0, res.stderr
    assert json.loads((folder / "s_1.json").read_text().splitlines()[0])[0]["score"] == 0.9


def test_fewer_than_two_holes_writes_nothing(tmp_path, fakepy):
    (fakepy[1].parent / "fake_entry.py.nholes").write_text("1")
    _write_mrc(tmp_path / "h.mrc", np.zeros((100, 100), np.float32))
    res = _source(
        SCRIPTS / "hole_finding.sh", "j", str(tmp_path / "h.mrc"), str(tmp_path), env=_env(fakepy[0])
    )
    assert res.stdout.split()[0] == "RC=0"
    assert not (tmp_path / "j.json").exists()
    assert "fewer than two holes" in res.stderr


def test_ptolemy_leginon_scripts_command_bakes_python(tmp_path, capsys):
    from ptolemy_core.cli.main import main

    assert main(["leginon", "scripts", str(tmp_path)]) == 0
    out = capsys.readouterr().out.split()
    assert sorted(Path(p).name for p in out) == ["hole_finding.sh", "sq_finding.sh"]
    text = (tmp_path / "sq_finding.sh").read_text()
    assert sys.executable in text and "@PTOLEMY_PYTHON@" not in text.split("case")[0]
    assert main(["leginon", "scripts", "--print", "hole"]) == 0
    assert "hole_finding.sh" in capsys.readouterr().out
    assert main(["leginon", "scripts", str(tmp_path / "missing" / "dir")]) == 2


# ------------------------------------------------------------------ runscript in-process
def test_rejoin_split_words():
    assert runscript.rejoin(["/a b/c d/x.mrc", "/a b/c d"]) == ("/a b/c d/x.mrc", "/a b/c d")
    words = "/data/my session/rawdata/x y.mrc /data/my session/rawdata".split(" ")
    assert runscript.rejoin(words) == ("/data/my session/rawdata/x y.mrc", "/data/my session/rawdata")
    with pytest.raises(Exception, match="cannot tell"):
        runscript.rejoin(["/a/x.mrc", "/b", "c"])


def test_runscript_uses_worker_line_and_converts_medmag_frame(tmp_path, mocker):
    shape = (2048, 2048)
    _write_mrc(tmp_path / "m.mrc", np.zeros(shape, np.float32))
    t = [
        Target(
            "hole",
            (1000.0, 501.0),
            ((990.0, 491.0), (990.0, 511.0), (1010.0, 511.0), (1010.0, 491.0)),
            400.0,
            0.8,
            3.0,
            {},
        ),
        Target(
            "hole",
            (100.0, 101.0),
            ((90.0, 91.0), (90.0, 111.0), (110.0, 111.0), (110.0, 91.0)),
            400.0,
            0.5,
            3.0,
            {},
        ),
    ]
    worker = mocker.patch("ptolemy_core.server.client.find_via_worker", return_value=to_json_line(t))
    monkey_env = mocker.patch.dict(os.environ, {}, clear=False)
    os.environ.pop("PTOLEMY_NO_WORKER", None)
    assert monkey_env is not None
    out = tmp_path / "o.json"
    assert runscript.main(["medmag", str(tmp_path / "m.mrc"), str(out)]) == 0
    worker.assert_called_once()
    first = out.read_text().splitlines()[0]
    expected = leginon_json_line([t_.with_score(t_.score) for t_ in t], shape)
    got = json.loads(first)
    assert [r["center"] for r in got] == [r["center"] for r in json.loads(expected)]
    assert got[0]["center"] == pytest.approx([501.0 / 2, 1000.0 / 2])


def test_runscript_worker_input_error_is_one_line_and_no_file(tmp_path, mocker, capsys):
    from ptolemy_core.errors import PtolemyInputError

    _write_mrc(tmp_path / "m.mrc", np.zeros((10, 10), np.float32))
    mocker.patch("ptolemy_core.server.client.find_via_worker", side_effect=PtolemyInputError("bad frame 3"))
    mocker.patch.dict(os.environ, {"PTOLEMY_NO_WORKER": ""})
    rc = runscript.main(["lowmag", str(tmp_path / "m.mrc"), str(tmp_path / "o.json")])
    assert rc == 2
    assert capsys.readouterr().err.strip() == "ptolemy-leginon lowmag: error: bad frame 3"
    assert not (tmp_path / "o.json").exists()


def test_runscript_internal_error_is_one_line(tmp_path, mocker, capsys):
    _write_mrc(tmp_path / "m.mrc", np.zeros((10, 10), np.float32))
    mocker.patch.dict(os.environ, {"PTOLEMY_NO_WORKER": "1"})
    mocker.patch("ptolemy_core.find_squares", side_effect=RuntimeError("boom\nsecond line"), create=True)
    rc = runscript.main(["lowmag", str(tmp_path / "m.mrc"), str(tmp_path / "o.json")])
    assert rc == 70
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "RuntimeError: boom second line" in err
    assert not (tmp_path / "o.json").exists()


# ------------------------------------------------------------------ real finders (when installed)
def _have(name):
    try:
        mod = __import__("ptolemy_core." + name.split(".")[0], fromlist=["x"])
        return hasattr(mod, name.split(".")[1])
    except Exception:  # noqa: BLE001
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _have("squares.find_squares"), reason="square finder not installed")
def test_sq_script_with_real_finder_matches_ptolemy_lowmag(tmp_path):
    from ptolemy_core import read_image
    from ptolemy_core.squares import find_squares
    from ptolemy_core.synth import simulate_atlas

    folder = tmp_path / "real session $1"
    folder.mkdir()
    sim = simulate_atlas(3, shape=(512, 512), montage=False)
    path, _ = sim.save(folder / "tile")
    res = _source(SCRIPTS / "sq_finding.sh", "s_7", str(path), str(folder), env=_env(sys.executable))
    assert res.stdout.split()[0] == "RC=0", res.stderr
    first = (folder / "s_7.json").read_text().splitlines()[0]
    assert first == to_json_line(find_squares(read_image(str(path))).targets)


def test_copied_script_runs_with_baked_interpreter_of_awkward_name(tmp_path, fakepy):
    from ptolemy_core.cli.main import main

    weird = tmp_path / "bin dir" / "py th'on$x"
    weird.parent.mkdir()
    weird.symlink_to(fakepy[0])
    dest = tmp_path / "scripts"
    dest.mkdir()
    assert main(["leginon", "scripts", str(dest), "--python", str(weird)]) == 0
    _write_mrc(tmp_path / "t.mrc", np.ones((16, 16), np.float32))
    env = _env("unused")
    del env["PTOLEMY_PYTHON"]
    res = _source(dest / "sq_finding.sh", "s_2", str(tmp_path / "t.mrc"), str(tmp_path), env=env)
    assert res.stdout.split()[0] == "RC=0", res.stderr
    assert json.loads((tmp_path / "s_2.json").read_text().splitlines()[0])[0]["score"] == 0.9
