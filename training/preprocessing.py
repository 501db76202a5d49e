"""Observation preprocessing and the mean/std observation filter, as torch modules.

Both are part of the policy's module, so the exported graph contains exactly what training
used. Raw observations enter as a list of "leaves" (see :func:`formats.leaves.flatten_leaves`):

* Box (float or int): flattened and cast to float32;
* image Box (``uint8``, ``H x W x C``): scaled to ``[0, 1]`` and passed to a CNN as NCHW;
* Discrete: one-hot (respecting ``start``); MultiDiscrete: concatenated one-hots;
* MultiBinary: flattened floats.

All non-image features are concatenated into one flat vector, which the optional
:class:`ObservationFilter` normalises with frozen running statistics. The statistics are
gathered by :class:`RunningStat` in the EnvRunners and merged in the driver.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

from formats.leaves import flatten_leaves

__all__ = [
    "ObservationFilter",
    "ObservationPreprocessor",
    "PreprocessedObs",
    "RunningStat",
    "is_image_space",
]


def is_image_space(space: gym.Space[Any]) -> bool:
    """Whether a leaf space is an image (uint8 Box of rank 3, channels last)."""
    return isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3


class PreprocessedObs(NamedTuple):
    """Preprocessed observation batch: flat features and NCHW float images."""

    flat: Tensor
    images: list[Tensor]


class ObservationPreprocessor(nn.Module):
    """Turn raw observation leaves into a flat float vector plus NCHW images."""

    def __init__(self, observation_space: gym.Space[Any]) -> None:
        super().__init__()
        self.kinds: list[str] = []
        self.image_shapes: list[tuple[int, int, int]] = []
        flat_dim = 0
        for index, (path, space) in enumerate(flatten_leaves(observation_space)):
            if is_image_space(space):
                h, w, c = space.shape  # type: ignore[misc]
                self.kinds.append("image")
                self.image_shapes.append((c, h, w))
            elif isinstance(space, gym.spaces.Box):
                self.kinds.append("box")
                flat_dim += math.prod(space.shape)
            elif isinstance(space, gym.spaces.Discrete):
                self.kinds.append("discrete")
                self.register_buffer(
                    f"_values_{index}", torch.arange(int(space.n)) + int(space.start)
                )
                flat_dim += int(space.n)
            elif isinstance(space, gym.spaces.MultiDiscrete):
                if space.nvec.ndim != 1:
                    raise ValueError(
                        f"observation leaf {path!r}: only 1-D MultiDiscrete is supported"
                    )
                self.kinds.append("multidiscrete")
                for j, (n, start) in enumerate(zip(space.nvec, space.start, strict=True)):
                    self.register_buffer(f"_values_{index}_{j}", torch.arange(int(n)) + int(start))
                flat_dim += int(space.nvec.sum())
            elif isinstance(space, gym.spaces.MultiBinary):
                self.kinds.append("multibinary")
                flat_dim += int(np.prod(space.shape))
            else:
                raise ValueError(
                    f"observation leaf {path!r}: unsupported space {type(space).__name__}"
                )
        self.flat_dim = flat_dim

    def forward(self, leaves: list[Tensor]) -> PreprocessedObs:
        """Preprocess a batch given as leaves with a leading batch axis."""
        flat: list[Tensor] = []
        images: list[Tensor] = []
        buffers = dict(self.named_buffers())
        for index, (kind, x) in enumerate(zip(self.kinds, leaves, strict=True)):
            batch = x.shape[0]
            if kind == "image":
                images.append(x.to(torch.float32).permute(0, 3, 1, 2) / 255.0)
            elif kind in ("box", "multibinary"):
                flat.append(x.reshape(batch, -1).to(torch.float32))
            elif kind == "discrete":
                values = buffers[f"_values_{index}"]
                flat.append((x.reshape(batch, 1).to(values.dtype) == values).to(torch.float32))
            else:
                j = 0
                while f"_values_{index}_{j}" in buffers:
                    values = buffers[f"_values_{index}_{j}"]
                    column = x[:, j : j + 1].to(values.dtype)
                    flat.append((column == values).to(torch.float32))
                    j += 1
        if flat:
            features = torch.cat(flat, dim=1)
        else:
            features = leaves[0].new_zeros((leaves[0].shape[0], 0), dtype=torch.float32)
        return PreprocessedObs(features, images)


class ObservationFilter(nn.Module):
    """Normalise flat features with frozen statistics: ``clip((x - mean) / std)``.

    With ``enabled=False`` the filter is the identity (``"NoFilter"``).
    """

    def __init__(self, dim: int, *, enabled: bool, clip: float = 10.0) -> None:
        super().__init__()
        self.enabled = enabled
        self.clip = clip
        self.mean: Tensor
        self.std: Tensor
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def forward(self, flat: Tensor) -> Tensor:
        """Apply the filter to a ``(batch, dim)`` tensor."""
        if not self.enabled:
            return flat
        return torch.clamp((flat - self.mean) / self.std, -self.clip, self.clip)

    def set_stats(self, stat: RunningStat) -> None:
        """Freeze the given running statistics into the filter."""
        self.mean.copy_(torch.as_tensor(stat.mean, dtype=torch.float32))
        self.std.copy_(torch.as_tensor(stat.std, dtype=torch.float32))


class RunningStat:
    """Running mean and variance (Chan et al.'s parallel algorithm), mergeable across runners."""

    def __init__(self, dim: int) -> None:
        self.count = 0
        self._mean = np.zeros(dim, dtype=np.float64)
        self._m2 = np.zeros(dim, dtype=np.float64)

    def push(self, batch: np.ndarray) -> None:
        """Add a ``(n, dim)`` batch of samples."""
        batch = np.asarray(batch, dtype=np.float64).reshape(-1, self._mean.shape[0])
        other = RunningStat(self._mean.shape[0])
        other.count = batch.shape[0]
        if other.count == 0:
            return
        other._mean = batch.mean(axis=0)
        other._m2 = ((batch - other._mean) ** 2).sum(axis=0)
        self.merge(other)

    def merge(self, other: RunningStat) -> None:
        """Fold another statistic (e.g. a runner's delta) into this one."""
        if other.count == 0:
            return
        total = self.count + other.count
        delta = other._mean - self._mean
        self._mean = self._mean + delta * (other.count / total)
        self._m2 = self._m2 + other._m2 + delta**2 * (self.count * other.count / total)
        self.count = total

    @property
    def mean(self) -> np.ndarray:
        """Mean of the samples seen (zeros before any)."""
        mean: np.ndarray = self._mean.copy()
        return mean

    @property
    def std(self) -> np.ndarray:
        """Standard deviation of the samples seen (ones before two; floored at 1e-6)."""
        if self.count < 2:
            return np.ones_like(self._mean)
        return np.sqrt(np.maximum(self._m2 / (self.count - 1), 1e-12)).clip(min=1e-6)

    def to_json(self) -> dict[str, Any]:
        """A JSON form that round-trips exactly (floats as Python floats)."""
        return {"count": self.count, "mean": self._mean.tolist(), "m2": self._m2.tolist()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunningStat:
        """Rebuild from :meth:`to_json` output.

        Raises:
            ValueError: If the fields are missing or malformed.
        """
        try:
            mean = np.asarray(data["mean"], dtype=np.float64)
            m2 = np.asarray(data["m2"], dtype=np.float64)
            count = int(data["count"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"filter state: expected count, mean and m2 ({err})") from None
        if mean.ndim != 1 or m2.shape != mean.shape or count < 0:
            raise ValueError("filter state: mean and m2 must be 1-D of equal length, count >= 0")
        stat = cls(mean.shape[0])
        stat.count, stat._mean, stat._m2 = count, mean, m2
        return stat
