"""The parsing boundary, fuzzed with hypothesis: any bytes give a value or a DecodeError."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from serving.decoding import (
    MAX_INT_DIGITS,
    MAX_JSON_DEPTH,
    DecodeError,
    _nesting_depth,
    decode_json,
    decode_npy,
    find_boolean,
)

FUZZ = settings(max_examples=300, deadline=None, database=None)

# Strings full of brackets and escapes: the depth scan must not count what is inside them.
TEXT = st.text(alphabet=st.sampled_from('[]{}"\\ab\u00e9\n'), max_size=12)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=False)
    | st.integers(-(10**MAX_INT_DIGITS) + 1, 10**MAX_INT_DIGITS - 1)
    | TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=40,
)


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


@FUZZ
@given(st.binary(max_size=512))
def test_any_bytes_decode_or_raise_decode_error(body: bytes) -> None:
    try:
        decode_json(body)
    except DecodeError as err:
        assert err.status in (400, 413, 422)


@FUZZ
@given(JSON_VALUES)
def test_json_within_the_limits_decodes_as_the_standard_parser_does(value: Any) -> None:
    body = json.dumps(value).encode()
    assert _nesting_depth(body) == _depth(value)
    if _depth(value) <= MAX_JSON_DEPTH:
        assert decode_json(body) == json.loads(body)


@FUZZ
@given(st.integers(min_value=1, max_value=6000), st.sampled_from(["[", '{"a":', '{"[":']))
def test_deep_nesting_is_refused_before_parsing(depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    body = (opener * depth + "1" + closer * depth).encode()
    if depth > MAX_JSON_DEPTH:
        with pytest.raises(DecodeError, match="at most 32 levels") as err:
            decode_json(body)
        assert err.value.status == 400
    else:
        decode_json(body)


@FUZZ
@given(st.integers(min_value=1, max_value=9000), st.booleans())
def test_long_integer_literals_are_refused(digits: int, negative: bool) -> None:
    literal = ("-" if negative else "") + "7" * digits
    body = f'{{"seed": {literal}}}'.encode()
    if digits > MAX_INT_DIGITS:
        with pytest.raises(DecodeError, match="digits") as err:
            decode_json(body)
        assert err.value.status == 422
    else:
        assert decode_json(body) == {"seed": int(literal)}


def test_brackets_inside_strings_are_not_nesting() -> None:
    body = json.dumps({"observation": [1.0], "note": "[" * 5000}).encode()
    assert decode_json(body)["note"] == "[" * 5000


def test_find_boolean_names_the_first_boolean() -> None:
    assert find_boolean([[0.1, 2], [3, {"a": [False]}]], "observations") == (
        "observations[1][1].a[0]"
    )
    assert find_boolean([[0, 1], [1, 0]], "observations") is None


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


NUMBER_ARRAYS = hnp.arrays(
    dtype=st.one_of(hnp.integer_dtypes(), hnp.unsigned_integer_dtypes(), hnp.floating_dtypes()),
    shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=5),
)


@FUZZ
@given(NUMBER_ARRAYS, st.booleans())
def test_npy_round_trips_without_a_copy(array: np.ndarray, fortran: bool) -> None:
    if fortran:
        array = np.asfortranarray(array)
    decoded = decode_npy(_npy(array), max_rows=8)
    np.testing.assert_array_equal(decoded, array)
    assert decoded.dtype == array.dtype
    assert not decoded.flags.writeable  # a view on the request body


@FUZZ
@given(NUMBER_ARRAYS, st.data())
def test_a_damaged_npy_body_is_refused_or_fits_its_body(array: np.ndarray, data: Any) -> None:
    body = bytearray(_npy(array))
    for _ in range(data.draw(st.integers(1, 4))):
        body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(body)))
    try:
        decoded = decode_npy(bytes(body[:cut]), max_rows=8)
    except DecodeError as err:
        assert err.status in (400, 413, 422)
    else:  # whatever the header says, nothing beyond the body was allocated or read
        assert decoded.nbytes <= cut and decoded.shape[0] <= 8


@pytest.mark.parametrize(
    ("array", "status", "message"),
    [
        (np.zeros((9, 2), np.float32), 413, "expected 1..8 rows"),
        (np.array(["a", "b"]), 422, "expected numbers, got dtype <U1"),
        (np.zeros(2, dtype=[("x", "<f4")]), 422, "expected numbers"),
        (np.complex64(1j) * np.ones(2), 422, "expected numbers"),
        (np.float64(3.0), 422, "0-d array"),
    ],
)
def test_npy_refusals(array: np.ndarray, status: int, message: str) -> None:
    with pytest.raises(DecodeError, match=message.replace("[", r"\[")) as err:
        decode_npy(_npy(array), max_rows=8)
    assert err.value.status == status


def _npy_with_header(shape: tuple[int, ...], data: bytes, dtype: str = "<f4") -> bytes:
    """A ``.npy`` body whose header declares ``shape`` whatever ``data`` holds."""
    buffer = io.BytesIO()
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + data


@FUZZ
@given(
    st.lists(st.integers(-3, 4) | st.integers(-(2**40), 2**40), min_size=1, max_size=4).map(tuple),
    st.binary(max_size=64),
)
def test_any_declared_shape_decodes_within_its_body_or_is_refused(
    shape: tuple[int, ...], data: bytes
) -> None:
    try:
        decoded = decode_npy(_npy_with_header(shape, data), max_rows=8)
    except DecodeError as err:
        assert err.status in (400, 413, 422)
    else:
        assert decoded.shape == shape and decoded.nbytes == len(data)


@pytest.mark.parametrize(
    ("shape", "data", "message"),
    [
        ((0, -1), b"", "negative size"),
        ((-2, -2), bytes(16), "negative size"),
        ((-1,), b"", "negative size"),
        ((0, 2**40, 2**40), b"", "too large"),
    ],
)
def test_a_shape_numpy_cannot_build_is_a_malformed_body(
    shape: tuple[int, ...], data: bytes, message: str
) -> None:
    with pytest.raises(DecodeError, match=message) as err:
        decode_npy(_npy_with_header(shape, data), max_rows=8)
    assert err.value.status == 400
