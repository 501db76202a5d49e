"""``Fragment``: what an EnvRunner returns, ``T`` steps of ``N`` sub-envs, time-major.

Its own module so that both sampling loops (the vector env's in :mod:`training.env_runner`,
the remote envs' in :mod:`training.remote_envs`) build it without importing each other.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Fragment"]


class Fragment(NamedTuple):
    """``T`` steps of ``N`` sub-envs, time-major.

    Attributes:
        obs: Observation leaves, each ``(T, N, ...)``; row ``t`` is what the action saw.
        next_obs: Observation leaves after the last step, each ``(N, ...)``.
        actions: ``(T, N, ...)`` actions as sampled (Box actions unclipped).
        rewards: ``(T, N)`` float32.
        terminated: ``(T, N)`` bool.
        truncated: ``(T, N)`` bool.
        valid: ``(T, N)`` bool, False on the autoreset steps that follow an episode's end.
        extras: Per-step module outputs, e.g. ``action_logp`` ``(T, N)``.
        episode_returns: Returns of the episodes that ended in this fragment.
        episode_lengths: Their lengths.
        weights_version: The version of the weights that sampled it (what the driver last
            broadcast), so an asynchronous learner can measure its policy lag.
    """

    obs: list[np.ndarray]
    next_obs: list[np.ndarray]
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    valid: np.ndarray
    extras: dict[str, np.ndarray]
    episode_returns: list[float]
    episode_lengths: list[int]
    weights_version: int = 0

    @property
    def num_env_steps(self) -> int:
        """Env steps that count (valid rows)."""
        return int(self.valid.sum())
