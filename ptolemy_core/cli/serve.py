"""`ptolemy serve`: the resident worker + Ptolemy's learning-server API for Leginon."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1, loopback only)")
    parser.add_argument("--port", type=int, default=8000,
                        help="port (default: 8000, as Leginon's ptolemy.cfg template)")
    parser.add_argument("--state-dir", default=None, metavar="DIR",
                        help="session database, saved states and log; request paths are confined "
                             "to it (default: $PTOLEMY_STATE_DIR or ~/.local/state/ptolemy-leginon)")
    parser.add_argument("--max-body-mb", type=float, default=512.0, metavar="N",
                        help="largest request body accepted, MB (default: 512)")
    parser.add_argument("--log-level", default="info",
                        choices=("critical", "error", "warning", "info", "debug"))


def run(args: argparse.Namespace) -> int:
    import fcntl
    import ipaddress
    import os
    from pathlib import Path

    from ..errors import PtolemyInputError, PtolemyUnavailableError
    from ..server.client import default_state_dir

    try:
        import uvicorn
    except ImportError:
        raise PtolemyUnavailableError("install ptolemy-leginon[server]") from None
    from ..server.app import create_app

    if not 0 < args.port < 65536:
        raise PtolemyInputError(f"--port {args.port} is not a TCP port")
    if args.max_body_mb <= 0:
        raise PtolemyInputError("--max-body-mb must be positive")
    host = args.host
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        print(f"ptolemy serve: warning: listening on {host}, not loopback: anyone who can reach "
              "this port can drive the server", file=sys.stderr)
    folder = Path(args.state_dir).expanduser() if args.state_dir else default_state_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # "a": a refused second server must not truncate the running one's pid.
        lock = open(folder / ".serve.lock", "a")  # noqa: SIM115 - held for the process lifetime
    except OSError as exc:
        raise PtolemyInputError(f"cannot use state directory {folder}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise PtolemyInputError(
            f"another 'ptolemy serve' already uses the state directory {folder}") from None
    lock.truncate(0)
    lock.write(str(os.getpid()))
    lock.flush()
    app = create_app(folder, max_body_mb=args.max_body_mb)
    print(f"ptolemy serve: http://{host}:{args.port}  state: {folder}", file=sys.stderr)
    uvicorn.run(app, host=host, port=args.port, log_level=args.log_level, workers=1,
                timeout_keep_alive=30)
    return 0
