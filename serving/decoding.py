"""The parsing boundary: request bytes in, Python values or one clear 4xx out.

Every way that decoding a body can fail ends here as a :class:`DecodeError` carrying the HTTP
status to answer (400 malformed, 413 too large, 422 well-formed but not acceptable); nothing
else escapes. The HTTP edge (:mod:`serving.http_edge`) maps it to its error answer, and any
other transport (WebSocket frames) can use the same functions.

What the standard parsers would let through, and how it is stopped:

- JSON nested thousands deep makes ``json.loads`` raise ``RecursionError``; the nesting is
  measured *before* parsing (brackets outside strings) and refused past :data:`MAX_JSON_DEPTH`.
- An integer literal of more than 4,300 digits makes ``int()`` raise ``ValueError`` (and a
  long one costs quadratic time); integers are parsed through a hook that refuses literals
  over :data:`MAX_INT_DIGITS` digits before converting them.
- A ``.npy`` header may declare any shape, and ``numpy.load`` allocates the declared size
  before reading data (a 128-byte body claiming ``(2**31, 4)`` asks for 32 GiB). Here the
  header is read alone; dtype, row count and the declared data size are checked against the
  limits and the body's real length, and the data is then a zero-copy view on the body.
- Booleans are not numbers: ``[true, 0.5]`` would become ``[1.0, 0.5]`` in numpy, so an
  observation holding ``true``/``false`` is refused by :func:`find_boolean`.
"""

from __future__ import annotations

import io
import json
import math
import re
from typing import Any

import numpy as np

from formats.errors import RlserveError

__all__ = [
    "MAX_INT_DIGITS",
    "MAX_JSON_DEPTH",
    "DecodeError",
    "count_boolean_tokens",
    "decode_json",
    "decode_npy",
    "find_boolean",
]

MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays and objects accepted in a JSON body.

An observation is as deep as its space: a batch of image observations is 4 levels under the
body, Dict and Tuple spaces add one each; 32 leaves room for any real space.
"""
MAX_INT_DIGITS = 32
"""Longest integer literal accepted in a JSON body (a seed up to ``2**63 - 1`` has 19)."""
_NPY_MAX_HEADER = 10_000
"""Largest ``.npy`` header read (numpy's own default limit)."""

# A JSON string, as the unrolled loop "then any run of plain characters or escapes": fast on
# long strings, no backtracking.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_OPEN, _CLOSE = ord("{"), ord("}")
"""``[`` and ``]`` fold onto these with ``| 0x20``."""
_QUOTE = ord('"')


class DecodeError(RlserveError, ValueError):
    """A body that cannot be decoded: answer ``status`` with ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _outside_strings(positions: np.ndarray, quotes: np.ndarray) -> np.ndarray:
    """The ``positions`` after an even number of quotes (so not inside a string)."""
    if not quotes.size:
        return positions
    kept: np.ndarray = positions[(np.searchsorted(quotes, positions) & 1) == 0]
    return kept


def _nesting_depth(body: bytes) -> int:
    """How deep arrays and objects nest in ``body`` (brackets inside strings do not count).

    Vectorised over the brackets' positions: ~2.5 ns a byte, a sixth of what parsing the same
    body costs.
    """
    if b"\\" in body:  # escaped quotes possible: strip whole strings with the regex first
        body = _STRING.sub(b'""', body)
    codes = np.frombuffer(body, dtype=np.uint8)
    folded = codes | 0x20  # "[" (0x5B) -> "{" (0x7B), "]" (0x5D) -> "}" (0x7D)
    quotes = np.flatnonzero(codes == _QUOTE)
    opens = _outside_strings(np.flatnonzero(folded == _OPEN), quotes)
    closes = _outside_strings(np.flatnonzero(folded == _CLOSE), quotes)
    if not opens.size:
        return 0
    # The depth is deepest just after some opening bracket: openings so far, minus closings.
    levels = np.arange(1, opens.size + 1) - np.searchsorted(closes, opens)
    return int(levels.max())


def _bounded_int(literal: str) -> int:
    if len(literal.lstrip("-")) > MAX_INT_DIGITS:
        raise DecodeError(
            422, f"integer literal of {len(literal)} characters; at most {MAX_INT_DIGITS} digits"
        )
    return int(literal)


_DECODER = json.JSONDecoder(parse_int=_bounded_int)
"""One decoder, built once (``json.loads`` with keywords builds a new one per call, ~2 us)."""


def decode_json(body: bytes | str) -> Any:
    """``body`` parsed as JSON within the limits above.

    ``body`` is the raw bytes of an HTTP body, or the text of a WebSocket text frame (which the
    WebSocket server has already checked to be UTF-8).

    Raises:
        DecodeError: 400 for bytes that are not JSON (bad UTF-8 included) or nest deeper than
            :data:`MAX_JSON_DEPTH`; 422 for an over-long integer; 413 when decoding runs out of
            memory.
    """
    # Nesting can only exceed the limit when there are more brackets than the limit: a count
    # in C first, so a small body pays ~1 us and the scan runs only for large batches.
    if isinstance(body, str):
        brackets = body.count("[") + body.count("{")
    else:
        brackets = body.count(b"[") + body.count(b"{")
    if brackets > MAX_JSON_DEPTH:
        depth = _nesting_depth(body.encode("utf-8") if isinstance(body, str) else body)
        if depth > MAX_JSON_DEPTH:
            raise DecodeError(
                400, f"malformed JSON: nested {depth} deep; at most {MAX_JSON_DEPTH} levels"
            )
    try:
        # Strict UTF-8, the only encoding JSON may have on the wire (RFC 8259).
        return _DECODER.decode(body if isinstance(body, str) else body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DecodeError(400, f"malformed JSON: {err}") from None
    except RecursionError:  # unreachable after the depth check; kept as the last guard
        raise DecodeError(400, "malformed JSON: nested too deep") from None
    except MemoryError:
        raise DecodeError(413, "request body too large to decode") from None


def find_boolean(value: Any, where: str) -> str | None:
    """The path of the first ``true``/``false`` inside ``value``, or ``None``."""
    if isinstance(value, bool):
        return where
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = find_boolean(item, f"{where}[{index}]")
            if found is not None:
                return found
    elif isinstance(value, dict):
        for key, item in value.items():
            found = find_boolean(item, f"{where}.{key}")
            if found is not None:
                return found
    return None


def count_boolean_tokens(body: bytes | str) -> int:
    """How many ``true``/``false`` tokens ``body`` may hold (an upper bound, counted in C)."""
    if isinstance(body, str):
        return body.count("true") + body.count("false")
    return body.count(b"true") + body.count(b"false")


def decode_npy(body: bytes, max_rows: int) -> np.ndarray:
    """A ``numpy.save`` body as an array, checked before anything is allocated.

    Returns:
        A read-only view on ``body`` (no copy), with at least one axis.

    Raises:
        DecodeError: 400 for a malformed header or a body whose length does not match the
            declared shape; 413 for more than ``max_rows`` rows; 422 for a dtype that is not
            a plain number (objects, strings, records) or a 0-d array.
    """
    stream = io.BytesIO(body)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            header = np.lib.format.read_array_header_1_0(stream, max_header_size=_NPY_MAX_HEADER)
        elif version == (2, 0):
            header = np.lib.format.read_array_header_2_0(stream, max_header_size=_NPY_MAX_HEADER)
        else:
            raise ValueError(f"unsupported format version {version[0]}.{version[1]}")
    except Exception as err:  # numpy reports a bad header in several types; all mean 400
        raise DecodeError(400, f"malformed .npy body: {err}") from None
    shape, fortran_order, dtype = header
    if dtype.hasobject or dtype.kind not in "biuf" or dtype.fields is not None:
        raise DecodeError(422, f"observations: expected numbers, got dtype {dtype.str}")
    if not shape:
        raise DecodeError(422, "observations: expected an array of rows, got a 0-d array")
    if any(side < 0 for side in shape):  # numpy's header reader lets them through
        raise DecodeError(400, f"malformed .npy body: negative size in shape {tuple(shape)}")
    # An empty array may still declare sides whose product numpy cannot index, e.g.
    # (0, 2**40, 2**40): its reshape would fail, so such a shape is refused here.
    if math.prod(max(side, 1) for side in shape) * dtype.itemsize > np.iinfo(np.intp).max:
        raise DecodeError(400, f"malformed .npy body: shape {tuple(shape)} is too large")
    if shape[0] > max_rows:
        raise DecodeError(413, f"expected 1..{max_rows} rows, got shape {tuple(shape)}")
    count = math.prod(shape)  # Python ints: a hostile shape cannot overflow
    declared, offset = count * dtype.itemsize, stream.tell()
    if declared != len(body) - offset:
        raise DecodeError(
            400,
            f"malformed .npy body: the header declares shape {tuple(shape)} of {dtype.str} "
            f"({declared} bytes) but {len(body) - offset} bytes of data follow",
        )
    flat = np.frombuffer(body, dtype=dtype, count=count, offset=offset)
    return flat.reshape(shape, order="F" if fortran_order else "C")
