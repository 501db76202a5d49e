"""Observations in the JSON form of their gymnasium space -> validated, batched leaf arrays.

Every check names where the problem is (``observations[3].position``) and what was expected:
structure (Dict keys, Tuple length), shape, dtype (integers where the space is discrete; never
booleans),
finiteness (no NaN or infinity), and bounds. One bad observation fails its own request only.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from formats.errors import RlserveError
from formats.leaves import flatten_leaves

__all__ = ["ObservationError", "actions_to_json", "array_to_leaves", "observations_to_leaves"]


class ObservationError(RlserveError, ValueError):
    """An observation does not fit the policy's observation space."""


def _child(value: Any, part: str, where: str, space: gym.Space[Any]) -> Any:
    if isinstance(space, gym.spaces.Dict):
        if not isinstance(value, dict):
            raise ObservationError(f"{where}: expected an object with keys {list(space.spaces)}")
        if part not in value:
            raise ObservationError(f"{where}: missing key {part!r}")
        return value[part]
    if not isinstance(value, list | tuple):
        raise ObservationError(f"{where}: expected an array of {len(space.spaces)} items")  # type: ignore[attr-defined]
    if len(value) != len(space.spaces):  # type: ignore[attr-defined]
        raise ObservationError(
            f"{where}: expected {len(space.spaces)} items, got {len(value)}"  # type: ignore[attr-defined]
        )
    return value[int(part)]


def _check_structure(space: gym.Space[Any], value: Any, where: str) -> None:
    if isinstance(space, gym.spaces.Dict):
        if not isinstance(value, dict):
            raise ObservationError(f"{where}: expected an object with keys {list(space.spaces)}")
        extra = sorted(set(value) - set(space.spaces))
        if extra:
            raise ObservationError(
                f"{where}: unexpected key(s) {extra}; expected {list(space.spaces)}"
            )
        for key, sub in space.spaces.items():
            _check_structure(sub, _child(value, key, where, space), f"{where}.{key}")
    elif isinstance(space, gym.spaces.Tuple):
        for index, sub in enumerate(space.spaces):
            _check_structure(sub, _child(value, str(index), where, space), f"{where}.{index}")


def _leaf_values(space: gym.Space[Any], path: str, observations: list[Any]) -> list[Any]:
    if path == "obs" and not isinstance(space, gym.spaces.Dict | gym.spaces.Tuple):
        return observations
    values = []
    for obs in observations:
        node, current = obs, space
        for part in path.split("."):
            node = _child(node, part, "observation", current)
            current = current[part] if isinstance(current, gym.spaces.Dict) else current[int(part)]  # type: ignore[index]
        values.append(node)
    return values


def _describe_row(where: str, row: int | None) -> str:
    return where if row is None else where.replace("observations", f"observations[{row}]", 1)


def _float_box_leaf(space: gym.Space[Any], values: Any) -> np.ndarray | None:
    """The common case in one conversion: a float Box and valid numbers (None: check slowly)."""
    if not isinstance(space, gym.spaces.Box) or space.dtype.kind != "f":
        return None
    try:
        raw = np.asarray(values)
    except ValueError:  # ragged
        return None
    if raw.dtype.kind not in "fiu":  # strings, booleans, objects: the careful path decides
        return None
    with np.errstate(over="ignore"):  # a value beyond the dtype's range becomes inf: refused
        array = raw.astype(space.dtype, copy=False)
    if array.shape[1:] != space.shape or not np.isfinite(array).all():
        return None
    if not ((array >= space.low) & (array <= space.high)).all():
        return None
    return array


def _leaf_array(space: gym.Space[Any], values: Any, where: str) -> np.ndarray:
    fast = _float_box_leaf(space, values)
    if fast is not None:
        return fast
    # Anything unusual goes through every check in turn, to name exactly what is wrong.
    expected = tuple(space.shape or ())
    try:
        raw = np.asarray(values)
    except ValueError:
        raise ObservationError(f"{where}: ragged arrays; expected shape {expected} each") from None
    if raw.dtype == object or raw.dtype.kind in "USV":
        raise ObservationError(f"{where}: expected numbers with shape {expected} each")
    if raw.shape[1:] != expected:
        bad = next((i for i, v in enumerate(values) if np.shape(v) != expected), None)
        got = np.shape(values[bad]) if bad is not None else raw.shape[1:]
        raise ObservationError(
            f"{_describe_row(where, bad)}: expected shape {expected}, got {tuple(got)}"
        )
    if raw.dtype.kind == "b":  # a boolean is not a number, not even for MultiBinary
        raise ObservationError(f"{where}: expected numbers, got booleans")
    if raw.dtype.kind == "f" and not np.isfinite(raw).all():
        row = int(np.argwhere(~np.isfinite(raw.reshape(len(values), -1)))[0][0])
        raise ObservationError(f"{_describe_row(where, row)}: NaN or infinity is not allowed")
    discrete = isinstance(
        space, gym.spaces.Discrete | gym.spaces.MultiDiscrete | gym.spaces.MultiBinary
    )
    integer_box = isinstance(space, gym.spaces.Box) and np.issubdtype(space.dtype, np.integer)
    if (
        (discrete or integer_box)
        and raw.dtype.kind == "f"
        and not np.array_equal(raw, np.round(raw))
    ):
        raise ObservationError(f"{where}: expected integers")
    target = np.int64 if isinstance(space, gym.spaces.Discrete) else space.dtype
    with np.errstate(over="ignore"):
        array = raw.astype(target)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        row = int(np.argwhere(~np.isfinite(array.reshape(len(values), -1)))[0][0])
        raise ObservationError(
            f"{_describe_row(where, row)}: value beyond the range of {array.dtype}"
        )
    inside = _inside(space, array)
    if not inside.all():
        row = int(np.argmin(inside))
        raise ObservationError(
            f"{_describe_row(where, row)}: value outside the observation space {space}"
        )
    return array


def _inside(space: gym.Space[Any], array: np.ndarray) -> np.ndarray:
    """Per row: whether it lies in the space (vectorised bounds checks)."""
    rows = array.shape[0]
    ok: np.ndarray
    if isinstance(space, gym.spaces.Box):
        ok = np.asarray((array >= space.low) & (array <= space.high))
    elif isinstance(space, gym.spaces.Discrete):
        ok = np.asarray((array >= space.start) & (array < space.start + space.n))
    elif isinstance(space, gym.spaces.MultiDiscrete):
        ok = np.asarray((array >= space.start) & (array < space.start + space.nvec))
    else:
        ok = np.asarray((array == 0) | (array == 1))
    result: np.ndarray = np.asarray(ok.reshape(rows, -1).all(axis=1))
    return result


def observations_to_leaves(space: gym.Space[Any], observations: list[Any]) -> list[np.ndarray]:
    """Validate JSON observations and stack them into the artifact's input leaves.

    Raises:
        ObservationError: Naming the observation, the field and what was expected.
    """
    if not observations:
        raise ObservationError("observations: expected at least one observation")
    for row, obs in enumerate(observations):
        _check_structure(space, obs, f"observations[{row}]")
    leaves = []
    for path, leaf_space in flatten_leaves(space):
        where = "observations" if path == "obs" else f"observations.{path}"
        leaves.append(_leaf_array(leaf_space, _leaf_values(space, path, observations), where))
    return leaves


def array_to_leaves(space: gym.Space[Any], batch: np.ndarray) -> list[np.ndarray]:
    """Validate a batch given as one array (single-leaf observation spaces, npy bodies).

    Raises:
        ObservationError: For a composite space or an array that does not fit the space.
    """
    leaves = flatten_leaves(space)
    if len(leaves) != 1:
        raise ObservationError("observations: a single array needs a single-array space")
    if batch.ndim == 0 or batch.shape[0] == 0:
        raise ObservationError("observations: expected at least one observation")
    if batch.dtype == object or batch.dtype.kind in "USV":
        raise ObservationError("observations: expected numbers")
    return [_leaf_array(leaves[0][1], batch, "observations")]


def actions_to_json(space: gym.Space[Any], actions: np.ndarray) -> list[Any]:
    """Actions as JSON values of the action space (ints for Discrete, nested lists for Box)."""
    if isinstance(space, gym.spaces.Discrete):
        return [int(a) for a in actions]
    result: list[Any] = actions.tolist()
    return result
