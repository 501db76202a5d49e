"""Gymnasium spaces as JSON, readable without the environment.

The JSON form lets a checkpoint or an exported artifact re-create its observation and action
spaces without the environment. It uses only objects, arrays, strings, numbers, booleans and
null, so ``json.dumps(..., allow_nan=False)`` always works: infinite ``Box`` bounds are the strings
``"inf"`` and ``"-inf"``. ``Dict`` sub-spaces are stored as an array of ``[key, space]`` pairs, so
their order survives writers that sort object keys.

Observations as flat leaf arrays are :mod:`formats.leaves`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np
from gymnasium import spaces

from formats.errors import RlserveError

__all__ = [
    "SpaceFormatError",
    "UnsupportedSpaceError",
    "space_from_json",
    "space_to_json",
]

Space: TypeAlias = "spaces.Space[Any]"

_INT_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
_BOX_DTYPES = ("bool", *_INT_DTYPES, "float16", "float32", "float64")
_FIELDS: dict[str, frozenset[str]] = {
    "Box": frozenset({"type", "shape", "dtype", "low", "high"}),
    "Discrete": frozenset({"type", "n", "start", "dtype"}),
    "MultiDiscrete": frozenset({"type", "shape", "nvec", "start", "dtype"}),
    "MultiBinary": frozenset({"type", "n"}),
    "Dict": frozenset({"type", "spaces"}),
    "Tuple": frozenset({"type", "spaces"}),
}


class UnsupportedSpaceError(RlserveError, ValueError):
    """The space (or one of its features) has no JSON form, e.g. ``Text`` or ``Graph``."""


class SpaceFormatError(RlserveError, ValueError):
    """A JSON space description is malformed; the message starts with the offending JSON path."""


# --------------------------------------------------------------------------- space -> JSON


def space_to_json(space: Space) -> dict[str, Any]:
    """Describe ``space`` as a JSON-serialisable dict that :func:`space_from_json` re-creates.

    Args:
        space: A ``Box``, ``Discrete``, ``MultiDiscrete``, ``MultiBinary``, or a ``Dict`` /
            ``Tuple`` of those (nested to any depth).

    Returns:
        A dict with a ``"type"`` field; ``json.dumps(result, allow_nan=False)`` succeeds.

    Raises:
        UnsupportedSpaceError: For any other space type, non-string ``Dict`` keys, dtypes
            outside the supported set, or NaN bounds.
    """
    if isinstance(space, spaces.Box):
        dtype = _dtype_name(space.dtype, _BOX_DTYPES, space)
        if space.dtype.kind == "f" and (np.isnan(space.low).any() or np.isnan(space.high).any()):
            raise UnsupportedSpaceError(f"Box bounds must not be NaN: {space!r}")
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": dtype,
            "low": _array_to_json(space.low),
            "high": _array_to_json(space.high),
        }
    if isinstance(space, spaces.Discrete):
        return {
            "type": "Discrete",
            "n": int(space.n),
            "start": int(space.start),
            "dtype": _dtype_name(space.dtype, _INT_DTYPES, space),
        }
    if isinstance(space, spaces.MultiDiscrete):
        return {
            "type": "MultiDiscrete",
            "shape": list(space.shape),
            "nvec": space.nvec.tolist(),
            "start": space.start.tolist(),
            "dtype": _dtype_name(space.dtype, _INT_DTYPES, space),
        }
    if isinstance(space, spaces.MultiBinary):
        n = space.n
        return {
            "type": "MultiBinary",
            "n": int(n) if isinstance(n, (int, np.integer)) else [int(d) for d in n],
        }
    if isinstance(space, spaces.Dict):
        pairs: list[list[Any]] = []
        for key, sub in space.spaces.items():
            if not isinstance(key, str):
                raise UnsupportedSpaceError(
                    f"Dict keys must be strings to be stored as JSON, got {key!r} in {space!r}"
                )
            pairs.append([key, space_to_json(sub)])
        return {"type": "Dict", "spaces": pairs}
    if isinstance(space, spaces.Tuple):
        return {"type": "Tuple", "spaces": [space_to_json(sub) for sub in space.spaces]}
    raise UnsupportedSpaceError(
        f"cannot store a gymnasium {type(space).__name__} space as JSON ({space!r}); "
        f"supported types: {', '.join(_FIELDS)}"
    )


def _dtype_name(dtype: np.dtype[Any], allowed: Sequence[str], space: Space) -> str:
    if dtype.name not in allowed or dtype != np.dtype(dtype.name):
        raise UnsupportedSpaceError(
            f"dtype {dtype.str!r} of {space!r} is not supported; expected one of "
            f"{', '.join(allowed)} in native byte order"
        )
    return str(dtype.name)


def _array_to_json(array: np.ndarray[Any, Any]) -> Any:
    """A uniform (or empty) array becomes one scalar; any other one an exact nested list."""
    flat = array.ravel()
    if flat.size == 0:
        return _scalar_to_json(array.dtype.type(0).item())
    if bool(np.all(flat == flat[0])):
        return _scalar_to_json(flat[0].item())
    return _scalar_to_json(array.tolist())


def _scalar_to_json(value: Any) -> Any:
    if isinstance(value, list):
        return [_scalar_to_json(item) for item in value]
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


# --------------------------------------------------------------------------- JSON -> space


def space_from_json(data: Mapping[str, Any], path: str = "space") -> Space:
    """Re-create the space described by ``data`` (the output of :func:`space_to_json`).

    Args:
        data: The JSON description, e.g. as loaded by ``json.load``.
        path: The JSON path of ``data`` in its document; prefixes every error message.

    Returns:
        The gymnasium space, equal to the one that was described and with the same dtype.

    Raises:
        SpaceFormatError: If a field is missing, unknown, of the wrong type or out of range; the
            message names the field, e.g. ``"space.spaces.position.high: expected ..."``.
    """
    if not isinstance(data, Mapping):
        raise SpaceFormatError(f"{path}: expected an object with a 'type' field, got {_show(data)}")
    kind = data.get("type")
    if not isinstance(kind, str) or kind not in _FIELDS:
        raise SpaceFormatError(
            f"{path}.type: expected one of {', '.join(_FIELDS)}, got {_show(kind)}"
        )
    fields = _FIELDS[kind]
    unknown = sorted(str(key) for key in data if key not in fields)
    if unknown:
        raise SpaceFormatError(f"{path}: unexpected field(s) {unknown} for a {kind} space")
    missing = sorted(fields - set(data))
    if missing:
        raise SpaceFormatError(f"{path}.{missing[0]}: missing (required for a {kind} space)")
    try:
        return _decode(kind, data, path)
    except SpaceFormatError:
        raise
    except (ValueError, TypeError, OverflowError) as exc:
        raise SpaceFormatError(f"{path}: gymnasium rejected the {kind} space: {exc}") from exc


def _decode(kind: str, data: Mapping[str, Any], path: str) -> Space:
    if kind == "Box":
        shape = _shape(data["shape"], f"{path}.shape")
        dtype = _dtype(data["dtype"], _BOX_DTYPES, f"{path}.dtype")
        low = _array(data["low"], shape, dtype, f"{path}.low")
        high = _array(data["high"], shape, dtype, f"{path}.high")
        if bool(np.any(low > high)):
            raise SpaceFormatError(f"{path}.low: expected low <= high everywhere")
        return spaces.Box(low=low, high=high, shape=shape, dtype=dtype)
    if kind == "Discrete":
        dtype = _dtype(data["dtype"], _INT_DTYPES, f"{path}.dtype")
        n = _int(data["n"], f"{path}.n", minimum=1)
        return spaces.Discrete(n, start=_int(data["start"], f"{path}.start"), dtype=dtype.type)
    if kind == "MultiDiscrete":
        shape = _shape(data["shape"], f"{path}.shape")
        dtype = _dtype(data["dtype"], _INT_DTYPES, f"{path}.dtype")
        nvec = _array(data["nvec"], shape, dtype, f"{path}.nvec")
        if bool(np.any(nvec <= 0)):
            raise SpaceFormatError(f"{path}.nvec: expected positive counts, got {nvec.tolist()}")
        start = _array(data["start"], shape, dtype, f"{path}.start")
        return spaces.MultiDiscrete(nvec, dtype=dtype.type, start=start)
    if kind == "MultiBinary":
        raw = data["n"]
        if isinstance(raw, list):
            return spaces.MultiBinary(
                [_int(d, f"{path}.n[{i}]", minimum=1) for i, d in enumerate(raw)]
            )
        return spaces.MultiBinary(_int(raw, f"{path}.n", minimum=1))
    return _decode_composite(kind, data["spaces"], path)


def _decode_composite(kind: str, items: Any, path: str) -> Space:
    if not isinstance(items, list):
        raise SpaceFormatError(f"{path}.spaces: expected an array, got {_show(items)}")
    if kind == "Tuple":
        return spaces.Tuple(
            [space_from_json(sub, f"{path}.spaces.{i}") for i, sub in enumerate(items)]
        )
    pairs: list[tuple[str, Space]] = []
    for i, pair in enumerate(items):
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
            raise SpaceFormatError(
                f"{path}.spaces[{i}]: expected a [key, space] pair with a string key, "
                f"got {_show(pair)}"
            )
        if any(pair[0] == key for key, _ in pairs):
            raise SpaceFormatError(f"{path}.spaces[{i}]: duplicate key {pair[0]!r}")
        pairs.append((pair[0], space_from_json(pair[1], f"{path}.spaces.{pair[0]}")))
    return spaces.Dict(pairs)


def _show(value: Any) -> str:
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array"}
    name = "null" if value is None else names.get(type(value), type(value).__name__)
    text = repr(value)
    return f"{name} {text if len(text) <= 60 else text[:57] + '...'}"


def _int(value: Any, path: str, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpaceFormatError(f"{path}: expected an integer, got {_show(value)}")
    if minimum is not None and value < minimum:
        raise SpaceFormatError(f"{path}: expected an integer >= {minimum}, got {value}")
    return value


def _shape(value: Any, path: str) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise SpaceFormatError(f"{path}: expected an array of integers, got {_show(value)}")
    return tuple(_int(dim, f"{path}[{i}]", minimum=0) for i, dim in enumerate(value))


def _dtype(value: Any, allowed: Sequence[str], path: str) -> np.dtype[Any]:
    if not isinstance(value, str) or value not in allowed:
        raise SpaceFormatError(f"{path}: expected one of {', '.join(allowed)}, got {_show(value)}")
    return np.dtype(value)


def _array(value: Any, shape: tuple[int, ...], dtype: np.dtype[Any], path: str) -> np.ndarray:
    """Decode a nested list of exactly ``shape``, or one scalar that fills the whole shape."""
    if not isinstance(value, list):
        return np.full(shape, _scalar(value, dtype, path), dtype=dtype)
    flat: list[Any] = []
    _collect(value, shape, dtype, path, flat)
    return np.array(flat, dtype=dtype).reshape(shape)


def _collect(
    value: Any, shape: tuple[int, ...], dtype: np.dtype[Any], path: str, out: list[Any]
) -> None:
    if not shape:
        out.append(_scalar(value, dtype, path))
        return
    if not isinstance(value, list) or len(value) != shape[0]:
        raise SpaceFormatError(
            f"{path}: expected an array of length {shape[0]} (shape {list(shape)}), "
            f"got {_show(value)}"
        )
    for i, item in enumerate(value):
        _collect(item, shape[1:], dtype, f"{path}[{i}]", out)


def _scalar(value: Any, dtype: np.dtype[Any], path: str) -> bool | int | float:
    """Validate one JSON element for ``dtype`` and return it as a Python value."""
    if dtype.kind == "b":
        if not isinstance(value, bool):
            raise SpaceFormatError(f"{path}: expected a boolean, got {_show(value)}")
        return value
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpaceFormatError(f"{path}: expected an integer, got {_show(value)}")
        if not info.min <= value <= info.max:
            raise SpaceFormatError(f"{path}: {value} is out of range for {dtype.name}")
        return value
    if value in ("inf", "-inf"):
        return math.inf if value == "inf" else -math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpaceFormatError(
            f"{path}: expected a number or the string 'inf' or '-inf', got {_show(value)}"
        )
    number = float(value) if isinstance(value, float) or abs(value) < 2**1024 else math.inf
    if math.isnan(number):
        raise SpaceFormatError(f"{path}: NaN is not a valid bound")
    if abs(number) > float(np.finfo(dtype).max):
        raise SpaceFormatError(f"{path}: {_show(value)} is out of range for {dtype.name}")
    return number
