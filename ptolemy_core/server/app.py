"""The HTTP layer of ``ptolemy serve`` (FastAPI): Ptolemy's learning-server API + our worker.

Wire conventions (``shared/reference/ptolemy-server-api.md``): request bodies
are JSON *without* a content type, so every handler reads the raw body and
parses it itself; images are nested lists; "CSV" responses are JSON strings;
other responses are ``null``. Errors are ``{"detail": "<one line>"}`` with a
4xx status (5xx only for our own defects); the server never dies on a request.
"""

# No `from __future__ import annotations`: FastAPI must see the real `Request` class
# in the handlers' annotations (it is imported lazily inside create_app).

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PtolemyInputError, PtolemyUnavailableError
from . import state as _state
from .decode import split_image_body
from .state import ApiError, ServerState

WORKER_PATH = "/ptolemy/v1/find"
MIN_SIDE = 16


def _fastapi():
    try:
        import fastapi
        import starlette.concurrency
    except ImportError:  # pragma: no cover - depends on the installation
        raise PtolemyUnavailableError("install ptolemy-leginon[server]") from None
    return fastapi, starlette.concurrency.run_in_threadpool


# ------------------------------------------------------------------ parsing
def parse_json(body: bytes) -> Any:
    """Decode a raw request body (JSON, whatever the Content-Type says)."""
    if not body.strip():
        raise ApiError(400, "empty request body (expected JSON)")
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise ApiError(400, "request body is not UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"request body is not JSON: {exc.msg} at char {exc.pos}") from None
    except RecursionError:
        raise ApiError(400, "request body nests too deeply") from None


def parse_object(body: bytes) -> dict:
    data = parse_json(body)
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object")
    return data


def parse_image_object(body: bytes) -> dict:
    """:func:`parse_object` for bodies with an ``image``: integer images decoded by numpy.

    :func:`ptolemy_core.server.decode.split_image_body` returns the same
    values ``json`` would give (the image already as float32) or None, and
    then the plain path decides -- so malformed bodies get the same errors.
    """
    fast = split_image_body(body)
    return fast[0] if fast is not None else parse_object(body)


def get_int(data: dict, key: str, default: Any = ...) -> int:
    if key not in data or data[key] is None:
        if default is ...:
            raise ApiError(400, f"missing field {key!r}")
        return default
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or int(value) != value:
        raise ApiError(400, f"field {key!r} must be an integer, got {value!r}"[:200])
    return int(value)


def get_float(data: dict, key: str, default: Any = ...) -> float:
    if key not in data or data[key] is None:
        if default is ...:
            raise ApiError(400, f"missing field {key!r}")
        return default
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ApiError(400, f"field {key!r} must be a number, got {value!r}"[:200])
    return float(value)


def get_list(data: dict, key: str) -> list:
    value = data.get(key)
    if not isinstance(value, list):
        raise ApiError(400, f"field {key!r} must be a list")
    return value


def get_image(data: dict) -> np.ndarray:
    """The ``image`` field: a 2-D nested list of numbers -> float32 array."""
    if "image" not in data:
        raise ApiError(400, "missing field 'image'")
    value = data["image"]
    if isinstance(value, np.ndarray):  # fast path: 2-D float32, finite (decode.py)
        image = value
    elif not isinstance(value, list) or not value or not isinstance(value[0], list):
        raise ApiError(400, "field 'image' must be a 2-D list of numbers (one list per row)")
    else:
        try:
            image = np.asarray(value, dtype=np.float32)
        except (ValueError, TypeError):
            raise ApiError(400, "field 'image' must be a 2-D list of numbers with rows of equal length") \
                from None
    if image.ndim != 2:
        raise ApiError(400, f"field 'image' must be 2-D, got {image.ndim}-D")
    if min(image.shape) < MIN_SIDE:
        raise ApiError(400, f"image {image.shape[0]}x{image.shape[1]} is too small "
                            f"(min {MIN_SIDE} px a side)")
    if not np.isfinite(image).all():
        raise ApiError(400, "image holds NaN or infinite values")
    return image


def get_ids(data: Any, keys=("ints", "hole_ids", "ids")) -> list[int]:
    value = data
    if isinstance(data, dict):
        value = next((data[k] for k in keys if k in data), None)
    if not isinstance(value, list):
        raise ApiError(400, f"expected a list of hole ids (field {keys[0]!r})")
    return [get_int({"id": v}, "id") for v in value]


# -------------------------------------------------------------------- worker
def find_json_line(request: dict) -> str:
    """The resident worker's job: read an image file, run a finder, return Ptolemy JSON."""
    from ..formats import to_json_line
    from ..io import read_image

    kind = request.get("kind")
    if kind not in ("lowmag", "medmag"):
        raise ApiError(400, f"field 'kind' must be 'lowmag' or 'medmag', got {kind!r}"[:200])
    path = request.get("path")
    if not isinstance(path, str) or not path:
        raise ApiError(400, "field 'path' must be a non-empty string")
    frame = get_int(request, "frame", None)
    pixel = get_float(request, "pixel_size_nm", None)
    i0 = get_float(request, "i0", None)
    image = read_image(path, frame=frame, pixel_size_nm=pixel)
    if kind == "lowmag":
        from ..squares import find_squares

        result = find_squares(image)
    else:
        from ..holes import find_holes

        result = find_holes(image, i0=i0)
        lattice = getattr(result, "lattice", None)
        if lattice is not None and hasattr(lattice, "to_json"):
            # As `ptolemy medmag -f json`: each hole line carries the image's lattice.
            for t in result.targets:
                t.features["lattice"] = lattice.to_json()
    return to_json_line(result.targets)


# ----------------------------------------------------------------------- app
def create_app(state_dir: str | Path, *, max_body_mb: float = 512.0, state: ServerState | None = None):
    """Build the ASGI application.

    Parameters
    ----------
    state_dir : path-like
        State directory (SQLite file, saved states); request paths are confined to it.
    max_body_mb : float
        Largest accepted request body; larger ones get 413.
    state : ServerState, optional
        An existing state (tests); otherwise opened from ``state_dir``.
    """
    fastapi, run_in_threadpool = _fastapi()
    Request = fastapi.Request  # noqa: N806 - the class FastAPI injects
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    st = state or ServerState(state_dir)
    max_bytes = int(max_body_mb * 1024 * 1024)
    app = fastapi.FastAPI(title="ptolemy-leginon server", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ptolemy = st
    app.state.timings = {}

    def too_large() -> str:
        return f"request body larger than {max_body_mb:g} MB (ptolemy serve --max-body-mb)"

    class BodyLimit:
        """Reject bodies over the limit: by Content-Length up front, else while streaming."""

        def __init__(self, inner) -> None:
            self.inner = inner

        async def __call__(self, scope, receive, send):
            if scope["type"] != "http":
                return await self.inner(scope, receive, send)
            length = dict(scope.get("headers") or []).get(b"content-length")
            if length is not None and length.isdigit() and int(length) > max_bytes:
                response = JSONResponse({"detail": too_large()}, status_code=413,
                                        headers={"Connection": "close"})
                return await response(scope, receive, send)
            seen = 0

            async def limited():
                nonlocal seen
                message = await receive()
                if message["type"] == "http.request":
                    seen += len(message.get("body", b""))
                    if seen > max_bytes:
                        raise StarletteHTTPException(413, too_large())
                return message

            return await self.inner(scope, limited, send)

    app.add_middleware(BodyLimit)

    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(PtolemyInputError)
    async def _input_error(request, exc: PtolemyInputError):
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(PtolemyUnavailableError)
    async def _unavailable(request, exc: PtolemyUnavailableError):
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.exception_handler(Exception)
    async def _internal(request, exc: Exception):
        msg = " ".join(str(exc).split())[:300] or type(exc).__name__
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {msg}"}, status_code=500)

    async def body_of(request) -> bytes:
        return await request.body()

    def timed(name: str, fn, *args):
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            app.state.timings[name] = time.perf_counter() - t0

    # ---------------------------------------------------------------- routes
    @app.get("/")
    async def health():
        return st.health()

    @app.post("/initialize_new_session")
    async def initialize_new_session(request: Request):
        body = await body_of(request)
        data = parse_object(body) if body.strip() else {}
        hist = data.get("historical_state_paths") or []
        if not isinstance(hist, list):
            raise ApiError(400, "field 'historical_state_paths' must be a list")
        await run_in_threadpool(st.initialize, hist, data.get("new_state_path") or None,
                                data.get("save_state_path") or None)
        return None

    def _stages(name: str, t: list[float]) -> None:
        # Per-stage server time of the last call (benchmarks/bench_adaptive.py reads these).
        for stage, a, b in (("decode", 0, 1), ("finder", 1, 2), ("state", 2, 3)):
            app.state.timings[f"{name}.{stage}"] = t[b] - t[a]

    def _push_lm(body: bytes) -> None:
        t = [time.perf_counter()]
        data = parse_image_object(body)
        grid_id, tile_id = get_int(data, "grid_id"), get_int(data, "tile_id")
        image = get_image(data)
        t.append(time.perf_counter())
        result = _state.run_find_squares(image)
        t.append(time.perf_counter())
        st.add_squares(st.square_rows_from_result(result, grid_id, tile_id))
        t.append(time.perf_counter())
        _stages("push_lm", t)

    @app.post("/push_lm")
    async def push_lm(request: Request):
        body = await body_of(request)
        await run_in_threadpool(timed, "push_lm", _push_lm, body)
        return None

    @app.get("/current_lm_state")
    async def current_lm_state():
        return await run_in_threadpool(st.lm_state_csv)

    @app.post("/select_next_square")
    async def select_next_square(request: Request):
        body = await body_of(request)
        data = parse_object(body) if body.strip() else {}
        grid = get_int(data, "value", -1)
        return await run_in_threadpool(st.select_next_square, grid)

    @app.post("/set_noice_hole_intensity")
    async def set_noice_hole_intensity(request: Request):
        data = parse_json(await body_of(request))
        value = data if isinstance(data, (int, float)) and not isinstance(data, bool) \
            else get_float(data if isinstance(data, dict) else {}, "value")
        st.set_noice(float(value))
        return None

    def _push_mm(body: bytes, evaluate: bool):
        t = [time.perf_counter()]
        data = parse_image_object(body)
        grid_id, square_id = get_int(data, "grid_id"), get_int(data, "square_id")
        mm_img_id = get_int(data, "mm_img_id")
        image = get_image(data)
        t.append(time.perf_counter())
        result = _state.run_find_holes(image, st.hole_i0(image))
        t.append(time.perf_counter())
        # Centres in the frame Leginon reads them (its shrunk copy, = array pixels up to 1440 px).
        out = st.add_holes(st.hole_rows_from_result(result, grid_id, square_id, mm_img_id, image.shape),
                           evaluate=evaluate)
        t.append(time.perf_counter())
        _stages("push_and_evaluate_mm" if evaluate else "push_mm", t)
        return out

    @app.post("/push_and_evaluate_mm")
    async def push_and_evaluate_mm(request: Request):
        body = await body_of(request)
        return await run_in_threadpool(timed, "push_and_evaluate_mm", _push_mm, body, True)

    @app.post("/push_mm")
    async def push_mm(request: Request):
        body = await body_of(request)
        await run_in_threadpool(timed, "push_mm", _push_mm, body, False)
        return None

    @app.post("/visit_holes")
    async def visit_holes(request: Request):
        data = parse_object(await body_of(request))
        ids = get_ids(data, ("hole_ids",))
        ctfs = get_list(data, "ctfs")
        ices = get_list(data, "ice_thicknesses")
        await run_in_threadpool(st.visit_holes, ids, ctfs, ices)
        return None

    @app.post("/visit_square")
    async def visit_square(request: Request):
        data = parse_object(await body_of(request))
        await run_in_threadpool(st.visit_square, get_int(data, "square_id"))
        return None

    def _path_endpoint(route: str, fn):
        async def handler(request: Request):
            data = parse_object(await body_of(request))
            if "path" not in data:
                raise ApiError(400, "missing field 'path'")
            await run_in_threadpool(fn, data["path"])
            return None

        app.post(route)(handler)

    _path_endpoint("/save_state", st.save)
    _path_endpoint("/set_config", st.set_config)
    _path_endpoint("/load_historical_state", lambda p: st.load_historical([p]))
    _path_endpoint("/overwrite_current_state", st.overwrite_current)
    _path_endpoint("/append_current_state", st.append_current)

    @app.post("/append_multi_historical_states")
    async def append_multi_historical_states(request: Request):
        data = parse_object(await body_of(request))
        await run_in_threadpool(st.load_historical, get_list(data, "paths"))
        return None

    @app.get("/clear_current_state")
    async def clear_current_state():
        await run_in_threadpool(st.clear_current)
        return None

    @app.get("/clear_historical_state")
    async def clear_historical_state():
        await run_in_threadpool(st.clear_historical)
        return None

    @app.get("/current_mm_state")
    async def current_mm_state():
        return await run_in_threadpool(st.mm_state_csv)

    @app.get("/rerun_mm_on_active_holes")
    async def rerun_mm_on_active_holes():
        return await run_in_threadpool(lambda: st.mm_state_csv(active=True))

    @app.post("/rerun_mm_on_arbitrary_holes")
    async def rerun_mm_on_arbitrary_holes(request: Request):
        ids = get_ids(parse_json(await body_of(request)))
        return await run_in_threadpool(lambda: st.mm_state_csv(ids=ids))

    @app.get("/current_lm_features")
    async def current_lm_features():
        return await run_in_threadpool(st.features, "lm")

    @app.get("/current_mm_features")
    async def current_mm_features():
        return await run_in_threadpool(st.features, "mm")

    def _stateless(body: bytes, kind: str):
        from ..formats import target_to_dict

        data = parse_image_object(body)
        image = get_image(data)
        if kind == "lm":
            result = _state.run_find_squares(image)
        else:
            result = _state.run_find_holes(image, get_float(data, "i0", None))
        return [target_to_dict(t) for t in result.targets]

    @app.post("/process_stateless_lm")
    async def process_stateless_lm(request: Request):
        body = await body_of(request)
        return await run_in_threadpool(_stateless, body, "lm")

    @app.post("/process_stateless_mm")
    async def process_stateless_mm(request: Request):
        body = await body_of(request)
        return await run_in_threadpool(_stateless, body, "mm")

    @app.post(WORKER_PATH)
    async def worker_find(request: Request):
        data = parse_object(await body_of(request))
        line = await run_in_threadpool(timed, "find", find_json_line, data)
        return {"json_line": line}

    return app
