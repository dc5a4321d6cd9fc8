"""Standard-library client of the resident worker (``ptolemy serve``), contract 8.

The drop-in Leginon scripts call :func:`find_via_worker` first and fall back to
running the finder in-process when it returns ``None`` (nothing listening, not
our server, a server-side failure or a timeout). Only a 4xx answer from our
worker, i.e. bad input the user can fix, raises.

No third-party import here: the scripts must be able to ask the worker without
paying for numpy/torch start-up more than once.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from ..errors import PtolemyInputError

DEFAULT_URL = "http://127.0.0.1:8000"
FIND_PATH = "/ptolemy/v1/find"
SERVICE = "ptolemy-leginon"
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
LOG_NAME = "ptolemy-serve.log"


def worker_url(url: str | None = None) -> str:
    """The worker's base URL: argument, else ``$PTOLEMY_WORKER_URL``, else 127.0.0.1:8000."""
    return (url or os.environ.get("PTOLEMY_WORKER_URL") or DEFAULT_URL).rstrip("/")


def default_state_dir() -> Path:
    """``$PTOLEMY_STATE_DIR``, else ``$XDG_STATE_HOME/ptolemy-leginon`` (``~/.local/state/...``)."""
    env = os.environ.get("PTOLEMY_STATE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ptolemy-leginon"


def _opener() -> urllib.request.OpenerDirector:
    # Never route loopback traffic through an http_proxy from the environment.
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _detail(err: urllib.error.HTTPError) -> str | None:
    try:
        payload = json.loads(err.read().decode("utf-8", "replace"))
    except (ValueError, OSError):
        return None
    detail = payload.get("detail") if isinstance(payload, dict) else None
    return " ".join(str(detail).split()) if detail else None


def health(url: str | None = None, timeout: float = 2.0) -> dict | None:
    """Our server's health record, or None (nothing listening, or not our server)."""
    try:
        with _opener().open(worker_url(url) + "/", timeout=timeout) as resp:
            data = json.loads(resp.read().decode("utf-8"))
    except (TimeoutError, urllib.error.URLError, OSError, ValueError):
        return None
    if isinstance(data, dict) and data.get("service") == SERVICE:
        return data
    return None


def find_via_worker(
    kind: str,
    path: str | os.PathLike,
    *,
    frame: int | None = None,
    pixel_size_nm: float | None = None,
    i0: float | None = None,
    timeout: float = 120.0,
    url: str | None = None,
) -> str | None:
    """Ask the resident worker to run a finder on an image file.

    Parameters
    ----------
    kind : {"lowmag", "medmag"}
    path : path-like
        Image file; sent as an absolute path (the worker has its own cwd).
    frame, pixel_size_nm, i0 : optional
        As for ``ptolemy lowmag/medmag`` (``i0``: vacuum intensity, holes only).
    timeout : float
        Seconds to wait for the answer.
    url : str, optional
        Worker base URL (default :func:`worker_url`).

    Returns
    -------
    str or None
        The one-line Ptolemy JSON, or None when no (working) worker answered.

    Raises
    ------
    PtolemyInputError
        The worker rejected the request as bad input (4xx with a reason).
    """
    body = json.dumps({"kind": kind, "path": os.path.abspath(os.fspath(path)), "frame": frame,
                       "pixel_size_nm": pixel_size_nm, "i0": i0}).encode("utf-8")
    req = urllib.request.Request(worker_url(url) + FIND_PATH, data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with _opener().open(req, timeout=timeout) as resp:
            data = json.loads(resp.read().decode("utf-8"))
    except urllib.error.HTTPError as err:
        detail = _detail(err)
        # 404/405: something else listens there (e.g. the reference Ptolemy server).
        if 400 <= err.code < 500 and err.code not in (404, 405) and detail:
            raise PtolemyInputError(detail) from None
        return None
    except (TimeoutError, urllib.error.URLError, OSError, ValueError):
        return None
    line = data.get("json_line") if isinstance(data, dict) else None
    return line if isinstance(line, str) else None


def start_worker_background(
    url: str | None = None, *, state_dir: str | os.PathLike | None = None, wait_s: float = 0.0
) -> bool:
    """Start ``ptolemy serve`` detached on a loopback URL unless it already runs.

    Parameters
    ----------
    url : str, optional
        Where the worker should listen (default :func:`worker_url`); only
        loopback hosts are accepted.
    state_dir : path-like, optional
        The server's state directory (default :func:`default_state_dir`); its
        log goes to ``ptolemy-serve.log`` there.
    wait_s : float
        Wait up to this long for the worker to answer (0 = return at once).

    Returns
    -------
    bool
        True if our worker runs or is being started; False if the URL is not
        loopback, another service holds the port, or the start failed.
    """
    base = worker_url(url)
    parts = urllib.parse.urlsplit(base)
    host = parts.hostname or ""
    if parts.scheme != "http" or host not in LOOPBACK:
        return False
    if health(base, timeout=1.0) is not None:
        return True
    port = parts.port or 80
    if _port_taken(host, port):
        # Listening but not answering as us: another service, or ours still starting.
        return _recently_started(state_dir)
    folder = Path(state_dir) if state_dir else default_state_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if _recently_started(folder):
            return True
        (folder / ".worker-start").write_text(str(time.time()))
        log = open(folder / LOG_NAME, "ab")  # noqa: SIM115 - handed to the child
    except OSError:
        return False
    cmd = [sys.executable, "-m", "ptolemy_core.cli.main", "serve", "--host", host.strip("[]"),
           "--port", str(port), "--state-dir", str(folder)]
    try:
        subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=str(folder),
                         start_new_session=True, close_fds=True,
                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
    except OSError:
        return False
    finally:
        log.close()
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if health(base, timeout=1.0) is not None:
            return True
        time.sleep(0.2)
    return True


def _port_taken(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host.strip("[]"), port), timeout=0.5):
            return True
    except OSError:
        return False


def _recently_started(state_dir, window_s: float = 60.0) -> bool:
    """Whether a start was launched in the last minute (avoid a stampede of starts)."""
    folder = Path(state_dir) if state_dir else default_state_dir()
    try:
        stamp = float((folder / ".worker-start").read_text().strip())
    except (OSError, ValueError):
        return False
    return 0 <= time.time() - stamp < window_s
