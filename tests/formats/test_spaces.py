"""formats.spaces: gymnasium spaces <-> JSON."""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from typing import Any

import numpy as np
import pytest
from gymnasium import spaces

from formats.spaces import SpaceFormatError, UnsupportedSpaceError, space_from_json, space_to_json
from tests.helpers.spaces import nested_dict_space

SPACES: dict[str, Any] = {
    "box_f32_scalar_bounds": spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32),
    "box_f64_inf": spaces.Box(
        low=np.array([-np.inf, 0.0, -2.5]), high=np.array([np.inf, np.inf, 1e300]), dtype=np.float64
    ),
    "box_f16": spaces.Box(low=np.float16(-0.1), high=np.float16(65504.0), dtype=np.float16),
    "box_f32_uneven": spaces.Box(
        low=np.array([[0.1, -0.3], [1e-7, -np.inf]], dtype=np.float32),
        high=np.array([[0.2, 0.7], [3.4e38, 5.0]], dtype=np.float32),
        dtype=np.float32,
    ),
    "box_uint8_image": spaces.Box(0, 255, shape=(84, 84, 3), dtype=np.uint8),
    "box_int32": spaces.Box(
        low=np.array([-5, -(2**31)], dtype=np.int32), high=np.array([7, 2**31 - 1], dtype=np.int32)
    ),
    "box_int64_big": spaces.Box(low=-(2**62) - 1, high=2**62 + 1, shape=(1,), dtype=np.int64),
    "box_uint64": spaces.Box(low=0, high=2**64 - 1, shape=(2,), dtype=np.uint64),
    "box_bool": spaces.Box(
        low=np.zeros((2, 2), dtype=np.bool_), high=np.array([[True, False], [True, True]])
    ),
    "box_bool_uniform": spaces.Box(
        low=np.zeros((3,), dtype=np.bool_), high=np.ones((3,), dtype=np.bool_)
    ),
    "box_scalar_shape": spaces.Box(low=-3.0, high=3.0, shape=(), dtype=np.float32),
    "box_empty": spaces.Box(low=0.0, high=1.0, shape=(0, 3), dtype=np.float32),
    "discrete": spaces.Discrete(5),
    "discrete_start": spaces.Discrete(3, start=-2),
    "discrete_int32": spaces.Discrete(7, start=1, dtype=np.int32),
    "multi_discrete": spaces.MultiDiscrete([3, 2, 5]),
    "multi_discrete_2d": spaces.MultiDiscrete(
        np.array([[2, 3], [4, 5]]), start=np.array([[0, -1], [10, 2]]), dtype=np.int32
    ),
    "multi_binary_int": spaces.MultiBinary(6),
    "multi_binary_shape": spaces.MultiBinary([2, 3]),
    "tuple": spaces.Tuple((spaces.Discrete(2), spaces.Box(0.0, 1.0, shape=(2,)))),
    "empty_tuple": spaces.Tuple(()),
    "nested": nested_dict_space(),
}


def _assert_identical(a: Any, b: Any) -> None:
    """Stricter than ``==``: exact bounds, dtypes and Dict key order."""
    assert a == b
    assert type(a) is type(b)
    assert a.dtype == b.dtype
    if isinstance(a, spaces.Box):
        assert a.low.dtype == b.low.dtype and a.high.dtype == b.high.dtype
        assert np.array_equal(a.low, b.low) and np.array_equal(a.high, b.high)
    elif isinstance(a, spaces.MultiDiscrete):
        assert np.array_equal(a.nvec, b.nvec) and np.array_equal(a.start, b.start)
    elif isinstance(a, spaces.MultiBinary):
        assert a.n == b.n and type(a.n) is type(b.n)
    elif isinstance(a, spaces.Dict):
        assert list(a.spaces) == list(b.spaces)
        for key in a.spaces:
            _assert_identical(a.spaces[key], b.spaces[key])
    elif isinstance(a, spaces.Tuple):
        for x, y in zip(a.spaces, b.spaces, strict=True):
            _assert_identical(x, y)


@pytest.mark.parametrize("name", sorted(SPACES))
def test_round_trip_through_strict_json(name: str) -> None:
    space = SPACES[name]
    text = json.dumps(space_to_json(space), allow_nan=False, sort_keys=True)
    _assert_identical(space_from_json(json.loads(text)), space)


def test_inf_bounds_are_strings_and_uniform_bounds_are_scalars() -> None:
    data = space_to_json(SPACES["box_f64_inf"])
    assert data["low"] == ["-inf", 0.0, -2.5]
    assert data["high"] == ["inf", "inf", 1e300]
    image = space_to_json(SPACES["box_uint8_image"])
    assert image == {"type": "Box", "shape": [84, 84, 3], "dtype": "uint8", "low": 0, "high": 255}
    assert len(json.dumps(image)) < 200


def test_dict_order_survives_sorted_json_and_ordered_dict() -> None:
    unsorted = spaces.Dict(
        OrderedDict([("zeta", spaces.Discrete(2)), ("alpha", spaces.Discrete(3))])
    )
    assert list(unsorted.spaces) == ["zeta", "alpha"]
    text = json.dumps(space_to_json(unsorted), sort_keys=True)
    restored = space_from_json(json.loads(text))
    assert isinstance(restored, spaces.Dict)
    assert list(restored.spaces) == ["zeta", "alpha"]
    nested = space_from_json(space_to_json(nested_dict_space()))
    assert isinstance(nested, spaces.Dict)
    assert list(nested.spaces) == ["mode", "position", "sensors"]


@pytest.mark.parametrize(
    "space",
    [
        spaces.Text(8),
        spaces.Sequence(spaces.Discrete(2)),
        spaces.Graph(node_space=spaces.Discrete(2), edge_space=None),
        spaces.Dict({"ok": spaces.Discrete(2), "bad": spaces.Text(3)}),
    ],
    ids=["text", "sequence", "graph", "nested_text"],
)
def test_unsupported_space_types_are_named(space: Any) -> None:
    expected = "Text" if isinstance(space, spaces.Dict) else type(space).__name__
    with pytest.raises(UnsupportedSpaceError, match=expected):
        space_to_json(space)


def test_nan_bound_and_foreign_dtype_are_rejected() -> None:
    box = spaces.Box(0.0, 1.0, shape=(2,), dtype=np.float32)
    box.high[1] = np.nan
    with pytest.raises(UnsupportedSpaceError, match="NaN"):
        space_to_json(box)
    with pytest.raises(UnsupportedSpaceError, match="dtype"):
        space_to_json(spaces.Box(0.0, 1.0, shape=(2,), dtype=np.dtype(">f4")))


def _dict_doc(position: dict[str, Any]) -> dict[str, Any]:
    return {"type": "Dict", "spaces": [["position", position], ["mode", {"type": "Discrete",
            "n": 2, "start": 0, "dtype": "int64"}]]}  # fmt: skip


BOX = {"type": "Box", "shape": [2], "dtype": "float32", "low": -1.0, "high": [1.0, 2.0]}


@pytest.mark.parametrize(
    ("position", "where"),
    [
        ({**BOX, "high": [1.0, "nan"]}, "observation_space.spaces.position.high[1]: expected"),
        ({**BOX, "high": [1.0]}, "observation_space.spaces.position.high: expected an array"),
        ({**BOX, "high": [1.0, float("nan")]}, "observation_space.spaces.position.high[1]: NaN"),
        (
            {**BOX, "high": [1.0, 1e39]},
            "observation_space.spaces.position.high[1]: number 1e+39 is out of range for float32",
        ),
        ({**BOX, "low": -(10**400)}, "observation_space.spaces.position.low: integer -1000"),
        ({**BOX, "low": 3.0}, "observation_space.spaces.position.low: expected low <= high"),
        ({**BOX, "dtype": "complex64"}, "observation_space.spaces.position.dtype: expected"),
        ({**BOX, "shape": [2, -1]}, "observation_space.spaces.position.shape[1]: expected"),
        ({**BOX, "dtype": "uint8", "low": -1}, "position.low: -1 is out of range for uint8"),
        ({**BOX, "dtype": "int32", "low": 0.5}, "position.low: expected an integer"),
        ({**BOX, "colour": "red"}, "observation_space.spaces.position: unexpected field"),
        ({"type": "Box", "shape": [2]}, "observation_space.spaces.position.dtype: missing"),
        ({"type": "Text"}, "observation_space.spaces.position.type: expected one of"),
        ([1, 2], "observation_space.spaces.position: expected an object"),
    ],
)
def test_format_errors_name_the_json_path(position: Any, where: str) -> None:
    with pytest.raises(SpaceFormatError, match=re.escape(where)):
        space_from_json(_dict_doc(position), path="observation_space")


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        ({"type": "Discrete", "n": 0, "start": 0, "dtype": "int64"}, r"space\.n: expected"),
        ({"type": "Discrete", "n": True, "start": 0, "dtype": "int64"}, r"space\.n: expected"),
        ({"type": "Discrete", "n": 300, "start": 0, "dtype": "int8"}, "space: gymnasium rejected"),
        ({"type": "MultiBinary", "n": [2, 0]}, r"space\.n\[1\]: expected an integer >= 1"),
        (
            {"type": "MultiDiscrete", "shape": [2], "nvec": [2, 0], "start": 0, "dtype": "int64"},
            r"space\.nvec: expected positive",
        ),
        ({"type": "Tuple", "spaces": [{"type": "Discrete"}]}, r"space\.spaces\.0\.dtype: missing"),
        ({"type": "Dict", "spaces": {"a": BOX}}, r"space\.spaces: expected an array"),
        ({"type": "Dict", "spaces": [["a", BOX], ["a", BOX]]}, r"spaces\[1\]: duplicate key"),
        ({"type": "Dict", "spaces": [[1, BOX]]}, r"space\.spaces\[0\]: expected a \[key"),
    ],
)
def test_more_format_errors(doc: dict[str, Any], where: str) -> None:
    with pytest.raises(SpaceFormatError, match=where):
        space_from_json(doc)
