"""Nested observations as flat lists of leaf arrays, and back.

Every non-composite sub-space of an observation space gets a dotted path (``"position"``,
``"sensors.0"``) in a fixed depth-first order: ``Dict`` keys in the ``Dict``'s order, ``Tuple``
items by index. Models and exporters name their inputs by these paths, the serving edge splits a
JSON observation into them, and a graph takes them as separate tensors, so a structured
observation never has to be packed into one array by the caller.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

from formats.spaces import Space

__all__ = ["flatten_leaves", "leaves_to_obs", "obs_to_leaves"]

_ROOT_LEAF = "obs"


def flatten_leaves(space: Space) -> list[tuple[str, Space]]:
    """List the leaf (non-``Dict``, non-``Tuple``) sub-spaces depth-first with dotted paths.

    ``Dict`` keys are visited in the ``Dict``'s order and ``Tuple`` items by index, giving paths
    like ``"position"`` or ``"sensors.0"``. A space that is not composite yields
    ``[("obs", space)]``.

    Args:
        space: Any gymnasium space.

    Returns:
        ``(path, leaf_space)`` pairs in a deterministic order.

    Raises:
        ValueError: If two leaves get the same path (a ``Dict`` key containing a dot).
    """
    if not isinstance(space, (spaces.Dict, spaces.Tuple)):
        return [(_ROOT_LEAF, space)]
    leaves: list[tuple[str, Space]] = []
    _walk(space, "", leaves)
    seen: set[str] = set()
    for name, _ in leaves:
        if name in seen:
            raise ValueError(f"two leaves of {space!r} have the same path {name!r}")
        seen.add(name)
    return leaves


def _walk(space: Space, prefix: str, out: list[tuple[str, Space]]) -> None:
    if isinstance(space, spaces.Dict):
        children: list[tuple[str, Space]] = [(str(k), s) for k, s in space.spaces.items()]
    elif isinstance(space, spaces.Tuple):
        children = [(str(i), s) for i, s in enumerate(space.spaces)]
    else:
        out.append((prefix or _ROOT_LEAF, space))
        return
    for name, sub in children:
        _walk(sub, f"{prefix}.{name}" if prefix else name, out)


def obs_to_leaves(space: Space, obs: Any, *, batched: bool = False) -> list[np.ndarray]:
    """Split a nested observation into its leaf arrays, in :func:`flatten_leaves` order.

    Args:
        space: The observation space.
        obs: One observation, or (``batched=True``) a batch in gymnasium's vector-env layout: a
            dict / tuple of batched arrays for ``Dict`` / ``Tuple`` spaces.
        batched: Whether every leaf carries a leading batch dimension.

    Returns:
        One numpy array per leaf (not copied where ``np.asarray`` need not copy).

    Raises:
        ValueError: If the structure, a leaf's shape or the batch sizes do not match the space.
    """
    leaves: list[np.ndarray] = []
    _split(space, obs, "", batched, leaves)
    if batched and len({leaf.shape[0] for leaf in leaves}) > 1:
        sizes = [leaf.shape[0] for leaf in leaves]
        raise ValueError(f"observation leaves have different batch sizes {sizes}")
    return leaves


def _split(space: Space, obs: Any, path: str, batched: bool, out: list[np.ndarray]) -> None:
    where = path or _ROOT_LEAF
    if isinstance(space, spaces.Dict):
        if not isinstance(obs, Mapping):
            raise ValueError(f"observation at {where!r}: expected a dict, got {type(obs).__name__}")
        missing = [key for key in space.spaces if key not in obs]
        extra = [key for key in obs if key not in space.spaces]
        if missing or extra:
            raise ValueError(
                f"observation at {where!r}: keys do not match the Dict space "
                f"(missing {missing}, unexpected {extra}; expected {list(space.spaces)})"
            )
        for key, sub in space.spaces.items():
            _split(sub, obs[key], f"{path}.{key}" if path else str(key), batched, out)
    elif isinstance(space, spaces.Tuple):
        if not isinstance(obs, (tuple, list)) or len(obs) != len(space.spaces):
            got = f"length {len(obs)}" if isinstance(obs, (tuple, list)) else type(obs).__name__
            raise ValueError(
                f"observation at {where!r}: expected a tuple of length {len(space.spaces)}, "
                f"got {got}"
            )
        for i, (sub, item) in enumerate(zip(space.spaces, obs, strict=True)):
            _split(sub, item, f"{path}.{i}" if path else str(i), batched, out)
    else:
        out.append(_leaf(space, obs, where, batched))


def _leaf(space: Space, value: Any, where: str, batched: bool) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype == object:
        raise ValueError(f"observation at {where!r}: expected numeric data, got {type(value)}")
    shape = space.shape
    if shape is not None:
        ok = (array.ndim >= 1 and array.shape[1:] == shape) if batched else array.shape == shape
        if not ok:
            expected = f"(batch, *{shape})" if batched else str(shape)
            raise ValueError(
                f"observation at {where!r}: expected shape {expected}, got {array.shape}"
            )
    return array


def leaves_to_obs(space: Space, leaves: Sequence[Any], *, batched: bool = False) -> Any:
    """Rebuild the nested observation (dict / tuple / array) from leaves; inverse of the above.

    Args:
        space: The observation space.
        leaves: One array per leaf, in :func:`flatten_leaves` order.
        batched: Whether the leaves carry a leading batch dimension.

    Returns:
        A dict for ``Dict`` spaces (in the space's key order), a tuple for ``Tuple`` spaces and a
        numpy array for leaves.

    Raises:
        ValueError: If the number of leaves or a leaf's shape does not match the space.
    """
    names = [name for name, _ in flatten_leaves(space)]
    if len(leaves) != len(names):
        raise ValueError(f"expected {len(names)} leaves ({names}), got {len(leaves)}")
    return _build(space, iter(leaves), "", batched)


def _build(space: Space, leaves: Iterator[Any], path: str, batched: bool) -> Any:
    if isinstance(space, spaces.Dict):
        return {
            key: _build(sub, leaves, f"{path}.{key}" if path else str(key), batched)
            for key, sub in space.spaces.items()
        }
    if isinstance(space, spaces.Tuple):
        return tuple(
            _build(sub, leaves, f"{path}.{i}" if path else str(i), batched)
            for i, sub in enumerate(space.spaces)
        )
    return _leaf(space, next(leaves), path or _ROOT_LEAF, batched)
