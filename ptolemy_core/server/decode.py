"""Fast decoding of request bodies that carry an image as nested JSON lists.

Leginon sends medium-mag images and atlas tiles as ``{"image": [[...], ...],
...}`` with one JSON number per pixel (1.5 M numbers for 1024 × 1440).
``json.loads`` builds a Python object per number and ``np.asarray`` walks them
again (≈ 0.3–0.5 s together); this module locates the image's byte span,
checks it against the JSON integer grammar with vectorised byte tests and
converts the numbers with numpy's C text reader, then parses the small rest of
the body with :mod:`json`. Only integer images (raw camera counts) take this
path: for decimal fractions numpy's reader is no faster than :mod:`json`.

It is an *optimisation only*: whenever anything is unusual (other
whitespace than ``", "``, a 3-D list, ragged rows, a token that is not a JSON
number, a number whose float32 value cannot be proven identical to the
``json`` path, non-finite values, a duplicate ``"image"`` key, ...) it returns
``None`` and the caller decodes the body with :mod:`json` as before, so the
results -- and the error messages for malformed bodies -- are exactly those
of the plain path. The returned array is bit-identical to
``np.asarray(json.loads(body)["image"], dtype=np.float32)`` (tested).

Exactness: integers go int64 -> double -> float32, as Python ints do in
``np.asarray(..., dtype=np.float32)``.
"""

from __future__ import annotations

import io
import json

import numpy as np

#: Stand-in for the image in the rest of the body (a string no client sends).
_SENTINEL = "\x00ptolemy-fast-image\x00"
_SENTINEL_JSON = json.dumps(_SENTINEL).encode()
_WS = b" \t\n\r"
_DIGITS = b"0123456789"


def split_image_body(body: bytes) -> tuple[dict, np.ndarray] | None:
    """Decode ``{"image": <2-D number list>, ...}`` quickly, or None to use :mod:`json`.

    Parameters
    ----------
    body : bytes
        Raw request body.

    Returns
    -------
    (dict, ndarray) or None
        The decoded object with ``"image"`` replaced by the float32 image
        (C-contiguous, shape (rows, cols), all finite), or None when the fast
        path does not apply (then ``json.loads`` must decide, errors included).
    """
    key = body.find(b'"image"')
    if key < 0:
        return None
    colon = key + len(b'"image"')
    while colon < len(body) and body[colon] in _WS:
        colon += 1
    if colon >= len(body) or body[colon] != ord(":"):
        return None
    start = colon + 1
    while start < len(body) and body[start] in _WS:
        start += 1
    end = body.find(b"]]", start)
    if end < 0 or not body.startswith(b"[[", start):
        return None
    end += 2
    if _SENTINEL_JSON[1:-1] in body:
        return None
    rest = body[:start] + _SENTINEL_JSON + body[end:]
    try:
        data = json.loads(rest)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
    # The span was the top-level "image" value only if the sentinel landed there
    # (not inside a string, not under a key that a later duplicate overrides).
    if not isinstance(data, dict) or data.get("image") != _SENTINEL:
        return None
    image = parse_number_matrix(body[start:end])
    if image is None:
        return None
    data["image"] = image
    return data, image


def parse_number_matrix(span: bytes) -> np.ndarray | None:
    """Parse ``[[i, i, ...], [i, ...], ...]`` (JSON integers) to float32, or None if unusual.

    Accepts the separators ``", "`` and ``","`` and no other whitespace. The
    rows become CSV lines for numpy's C text reader (``np.loadtxt``, which
    rejects ragged rows and unparsable fields); what it would accept but JSON
    does not (``01``, a misplaced ``-``, empty lines) is rejected first by
    :func:`_json_integer_rules`.
    """
    s = span.replace(b", ", b",")
    if len(s) < 5 or not (s.startswith(b"[[") and s.endswith(b"]]")):
        return None
    # Integers only. Whitespace other than ", " (a raw newline would fake a row),
    # letters, quotes, and also decimal fractions go to json: numpy's float reader
    # is no faster than json for them (measured: 27 MB of float32 reprs 0.95 s
    # vs 0.75 s), so only integer counts -- raw camera frames -- take this path.
    if s.translate(None, _DIGITS + b",-[]"):
        return None
    csv = s[2:-2].replace(b"],[", b"\n")
    if b"[" in csv or b"]" in csv:
        return None  # a bracket left over: deeper nesting or a stray one
    if not _json_integer_rules(csv):
        return None
    try:
        out = np.loadtxt(io.BytesIO(csv), delimiter=",", dtype=np.int64,
                         comments=None, ndmin=2, encoding="latin1")
    except (ValueError, OverflowError):
        return None
    if out.shape[0] != csv.count(b"\n") + 1:
        return None
    # As json + np.asarray: Python int -> double -> float32.
    out = out.astype(np.float64).astype(np.float32)
    if not np.isfinite(out).all():
        return None  # leave the error (or json's own behaviour) to the plain path
    return out


def _json_integer_rules(csv: bytes) -> bool:
    """Check the JSON integer grammar ``-?(0|[1-9][0-9]*)`` by position.

    Only where a text reader is laxer than JSON: the sign, leading zeros and
    empty fields (a text reader skips empty lines).
    """
    u = np.frombuffer(csv + b",", np.uint8)  # padded: u[p + 1] and u[-1] are a separator

    def digit(v):
        return (v >= ord("0")) & (v <= ord("9"))

    minus = np.flatnonzero(u == ord("-"))
    if len(minus) and not (((u[minus - 1] == ord(",")) | (u[minus - 1] == ord("\n"))).all()
                           and digit(u[minus + 1]).all()):
        return False
    starts = np.concatenate(([0], np.flatnonzero((u[:-1] == ord(",")) | (u[:-1] == ord("\n"))) + 1))
    if np.any((u[starts] == ord(",")) | (u[starts] == ord("\n"))):
        return False  # empty element or row
    first = starts + (u[starts] == ord("-"))
    return not np.any((u[first] == ord("0")) & digit(u[first + 1]))  # leading zero
