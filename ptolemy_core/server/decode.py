"""Fast decoding of request bodies that carry an image as nested JSON lists.

Leginon sends medium-mag images and atlas tiles as ``{"image": [[...], ...],
...}`` with one JSON number per pixel (1.5 M numbers for 1024 × 1440).
``json.loads`` builds a Python object per number and ``np.asarray`` walks them
again (≈ 0.3–0.5 s together); this module locates the image's byte span,
checks it against the JSON integer grammar with vectorised byte tests and
converts the numbers with numpy's C text reader, then parses the small rest of
the body with :mod:`json`. Integer images (raw camera counts) are read by
numpy's integer reader; decimal numbers too, in pieces (see :func:`_parse_floats`):
numpy's own float readers are no faster than :mod:`json` (both spend their time
in the correctly rounded ``strtod``), but reading the digits as integers and
scaling by a power of ten is, and it is exact for a float32 result except within
a few float64 ulps of a float32 rounding boundary, where those few numbers are
converted by ``float()`` as :mod:`json` converts them.

It is an *optimisation only*: whenever anything is unusual (other
whitespace than ``", "``, a 3-D list, ragged rows, a token that is not a JSON
number, a number whose float32 value cannot be proven identical to the
``json`` path, non-finite values, a duplicate ``"image"`` key, ...) it returns
``None`` and the caller decodes the body with :mod:`json` as before, so the
results -- and the error messages for malformed bodies -- are exactly those
of the plain path. The returned array is bit-identical to
``np.asarray(json.loads(body)["image"], dtype=np.float32)`` (tested).

Exactness: integers go int64 -> double -> float32, as Python ints do in
``np.asarray(..., dtype=np.float32)``; decimal numbers go text -> correctly
rounded double (``float()``, what :mod:`json` calls) -> float32, and the fast
computation is used only where it provably gives that float32.
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
    """Parse ``[[n, n, ...], [n, ...], ...]`` (JSON numbers) to float32, or None if unusual.

    Accepts the separators ``", "`` and ``","`` and no other whitespace.
    Integer-only matrices become CSV lines for numpy's C text reader
    (``np.loadtxt``, which rejects ragged rows and unparsable fields); what it
    would accept but JSON does not (``01``, a misplaced ``-``, empty lines) is
    rejected first by :func:`_json_integer_rules`. Matrices with decimal
    fractions or exponents go to :func:`_parse_floats`.
    """
    if b"." in span or b"e" in span or b"E" in span:
        return _parse_floats(span)  # decimal numbers (or letters: it returns None)
    s = span.replace(b", ", b",")
    if len(s) < 5 or not (s.startswith(b"[[") and s.endswith(b"]]")):
        return None
    # Integers only here: whitespace other than ", " (a raw newline would fake a
    # row), letters (NaN, Infinity), quotes, a "+", ... go to json.
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


#: 10**k as correctly rounded doubles (Python's float literal), k = 0..308.
_POW10 = np.array([float(f"1e{k}") for k in range(309)])
#: Largest decimal exponent scaled in numpy (beyond: float() per number).
_MAX_EXP10 = 300
#: Mantissa digits that fit an int64 exactly (10**18 < 2**63).
_MAX_DIGITS = 18
#: Longer numbers (leading zeros included) go to json: the zero scan in
#: _parse_floats takes one pass per digit (a 1 MB "0.000...1" took 15 s).
_MAX_SCAN_DIGITS = 64
#: Exponent letters become field separators (see _parse_floats).
_E_TO_COMMA = bytes.maketrans(b"eE", b",,")
#: Bytes allowed between the digits of a decimal image (besides ", "): , [ ] . e E - +
_CLASS = np.zeros(256, np.uint8)
_CLASS[np.frombuffer(b",[].eE-+", np.uint8)] = 1
#: Half-width, in float64 ulps, of the band around a float32 rounding boundary in
#: which the fast value is not trusted (its error is below 4 ulps, see _parse_floats).
_GUARD_ULPS = 64
#: More numbers than this fraction needing float() one by one: leave it to json.
_MAX_SLOW_FRACTION = 0.01


def _parse_floats(span: bytes) -> np.ndarray | None:
    """Parse ``[[n, n, ...], ...]`` with decimal JSON numbers to float32 exactly as json would.

    ``json.loads`` turns ``-?int(.frac)?([eE][+-]?exp)?`` into ``float(text)``
    (the correctly rounded double D; integers into ``int``, whose double is also
    correctly rounded) and ``np.asarray(..., float32)`` rounds D to float32.
    Here the structure (``[[``, ``, `` or ``,``, ``], [``, ``]]``) and the number
    grammar are checked by position, looking only at the non-digit bytes; each
    number's mantissa digits (the dot deleted) and exponent are read as int64
    fields by numpy's integer reader (one ``bytes.translate`` turns
    ``"-12.50e-3"`` into ``"-1250,-3"``), so ``m`` is exact, and
    ``d = m / 10**k`` (or ``m * 10**k``) in float64: at most three roundings
    (m to double, the power of ten, the quotient), so ``|d - D| < 4`` float64
    ulps of ``d``. Rounding ``d`` and ``D`` to float32 can only differ if a
    float32 rounding boundary (a midpoint between float32 neighbours: the low
    29 of the 52 mantissa bits equal to 2**28) lies between them; numbers within
    :data:`_GUARD_ULPS` of one, outside float32's normal range, or with an
    exponent of more than 4 digits or beyond ``_MAX_EXP10`` are converted by
    ``float()``/``int()`` as json converts them. Non-finite results, more than
    :data:`_MAX_DIGITS` significant digits, and anything outside the grammar
    return None (json decides, errors included).
    """
    n = len(span)
    if n < 5 or not (span.startswith(b"[[") and span.endswith(b"]]")):
        return None
    n_space = span.count(b" ")  # spaces are allowed only as ", " (counted below)
    u = np.frombuffer(span, np.uint8)
    special = np.flatnonzero(((u - np.uint8(48)) > 9) & (u != 32))  # not a digit, not a space
    c = u[special]
    if np.any(_CLASS[c] == 0):
        return None  # letters (NaN, Infinity), quotes, other whitespace, ...: json
    # Neighbours. The outer "[" (byte 0) and "]" (byte n - 1) are known; their
    # neighbours read here are wrong and they are masked out below.
    at = np.clip(special, 1, n - 2)
    prev, nxt = u[at - 1], u[at + 1]
    after = np.where(nxt == 32, u[np.minimum(at + 2, n - 1)], nxt)  # what follows "," or ", "
    inside = (special > 0) & (special < n - 1)

    def digit(v):
        return (v - np.uint8(48)) <= 9

    dig_p, dig_n, dig_a = digit(prev), digit(nxt), digit(after)
    is_e = (c == 101) | (c == 69)
    e_p = (prev == 101) | (prev == 69)
    is_comma, is_open, is_close = c == 44, c == 91, c == 93
    # Inside numbers: "." and e/E between digits, "-" first or after e/E, "+" after e/E;
    # "," after a number and before one, or "]," before "[" / "], [".
    ok = (((c == 46) & dig_p & dig_n)
          | (is_e & dig_p & (dig_n | (nxt == 43) | (nxt == 45)))
          | ((c == 45) & ((prev == 44) | (prev == 32) | (prev == 91) | e_p) & dig_n)
          | ((c == 43) & e_p & dig_n)
          | (is_comma & ((dig_p & (dig_a | (after == 45))) | ((prev == 93) & (after == 91)))))
    br = np.flatnonzero(is_open | is_close)  # 2 per row: check them one kind at a time
    pb, cb, nb = special[br], c[br], nxt[br]
    ok[br] = (~inside[br]
              | ((cb == 91) & ((prev[br] == 44) | (prev[br] == 32) | (pb == 1)) & (digit(nb) | (nb == 45)))
              | ((cb == 93) & dig_p[br] & ((nb == 44) | (pb == n - 2))))
    if not ok.all() or np.count_nonzero(is_comma & (nxt == 32)) != n_space:
        return None
    # Numbers: each ends at a "," or "]" that follows a digit and starts after the
    # "," / ", " or "[" before it (the rules above make these alternate).
    is_end = (is_comma | is_close) & dig_p & inside
    ends = special[is_end]
    begin = (is_comma | is_open) & (dig_a | (after == 45)) & inside
    starts = special[begin] + 1 + (nxt[begin] == 32)
    n_tok = len(ends)
    if len(starts) != n_tok or n_tok == 0 or np.any(ends <= starts):
        return None
    row_ends = np.flatnonzero(is_close[is_end])
    n_rows = len(row_ends)
    if n_tok % n_rows:
        return None
    n_cols = n_tok // n_rows
    if not np.array_equal(row_ends, np.arange(1, n_rows + 1) * n_cols - 1):
        return None  # ragged rows
    inner = ~(is_comma | is_open | is_close)
    tok = (np.cumsum(is_end) - is_end)[inner]  # number index of each byte inside numbers
    pos, ch = special[inner], c[inner]
    is_dot, in_e = ch == 46, (ch == 101) | (ch == 69)
    dots, tok_dot = pos[is_dot], tok[is_dot]
    es, tok_e = pos[in_e], tok[in_e]
    if np.any(np.diff(tok_dot) <= 0) or np.any(np.diff(tok_e) <= 0):
        return None  # two dots or two exponents in one number
    e_at = ends.copy()  # where each mantissa ends
    e_at[tok_e] = es
    if np.any(dots > e_at[tok_dot]):
        return None  # a dot in the exponent
    neg = u[starts] == 45
    lead = starts + neg
    if np.any((u[lead] == 48) & digit(u[lead + 1])):
        return None  # leading zero (JSON: 0 or [1-9][0-9]*); lead + 1 <= an end
    has_dot = np.zeros(n_tok, bool)
    has_dot[tok_dot] = True
    has_e = np.zeros(n_tok, bool)
    has_e[tok_e] = True
    n_frac = np.zeros(n_tok, np.int64)
    n_frac[tok_dot] = e_at[tok_dot] - dots - 1
    n_dig = e_at - lead - has_dot
    long = np.flatnonzero(n_dig > _MAX_DIGITS)
    if len(long) and n_dig[long].max() > _MAX_SCAN_DIGITS:
        return None
    if len(long):  # leading zeros ("0.00123...") do not count towards int64's range
        at, zeros = lead[long], np.zeros(len(long), np.int64)
        alive = np.ones(len(long), bool)
        for _ in range(int(n_dig[long].max() - _MAX_DIGITS) + 1):
            b = u[np.minimum(at, n - 1)]
            alive &= (b == 48) | (b == 46)
            zeros += alive & (b == 48)
            at += 1
        if np.any(n_dig[long] - zeros > _MAX_DIGITS):
            return None  # an int64 would overflow: json
    n_exp = np.zeros(n_tok, np.int64)  # exponent digits (sign excluded)
    if len(es):
        sgn = u[es + 1]
        n_exp[tok_e] = ends[tok_e] - es - 1 - ((sgn == 45) | (sgn == 43))
        if n_exp.max() > _MAX_DIGITS:
            return None
    # Each number becomes its mantissa digits as one integer field (the dot
    # deleted), plus its exponent as a second field: "-12.50e-3" -> "-1250,-3".
    fields = np.fromstring(span.translate(_E_TO_COMMA, b". []"), dtype=np.int64, sep=",")
    if len(fields) != n_tok + len(es):
        return None
    if len(es):
        first = np.arange(n_tok) + np.cumsum(has_e) - has_e
        m, exp = np.abs(fields[first]), np.zeros(n_tok, np.int64)
        exp[tok_e] = fields[first[tok_e] + 1]
    else:
        m, exp = np.abs(fields), 0
    slow = n_exp > 4
    exp10 = np.where(slow, 0, exp) - n_frac
    k10 = np.abs(exp10)
    slow |= k10 > _MAX_EXP10
    k10[slow] = 0
    mf = m.astype(np.float64)
    up = exp10 > 0
    with np.errstate(over="ignore"):
        d = mf / _POW10[k10]  # exact divisor for k10 <= 22; one rounding otherwise
        if up.any():
            d[up] = mf[up] * _POW10[k10[up]]
    np.negative(d, out=d, where=neg)  # "-0.0" and "-0e1" are -0.0 (floats) ...
    d[neg & (m == 0) & ~has_dot & ~has_e] = 0.0  # ... "-0" is the integer 0
    ad = np.abs(d)
    # |low 29 bits - 2**28| <= guard, as one unsigned comparison (mod 2**29)
    low = (d.view(np.uint64) + np.uint64(_GUARD_ULPS - (1 << 28) + (1 << 29))) & np.uint64((1 << 29) - 1)
    slow |= low <= np.uint64(2 * _GUARD_ULPS)
    slow |= (ad < 2.0**-125) & (m != 0)  # float32 subnormal range: other rounding step
    slow |= ~(ad < 3.4e38)  # near or beyond float32's largest finite value
    idx = np.flatnonzero(slow)
    if len(idx) > _MAX_SLOW_FRACTION * n_tok + 16:
        return None
    for i in idx:  # what json does with this number's text
        text = span[starts[i]:ends[i]]
        d[i] = float(text) if (has_dot[i] or has_e[i]) else float(int(text))
    with np.errstate(over="ignore"):
        out = d.astype(np.float32).reshape(n_rows, n_cols)
    if not np.isfinite(out).all():
        return None
    return out
