"""Generalised advantage estimation (Schulman et al., 2016) for time-major fragments."""

from __future__ import annotations

import numpy as np

__all__ = ["compute_gae"]


def compute_gae(
    rewards: np.ndarray,
    values: np.ndarray,
    next_values: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    gamma: float,
    lambda_: float,
) -> np.ndarray:
    """Generalised advantage estimates for a time-major ``(T, N)`` fragment.

    ``next_values[t]`` is ``V`` of the observation after step ``t``: for a truncated step that
    is the episode's final observation (bootstrap), for a terminated step it is ignored.

    Returns:
        ``(T, N)`` advantages.
    """
    steps = rewards.shape[0]
    advantages = np.zeros_like(rewards, dtype=np.float32)
    last = np.zeros(rewards.shape[1], dtype=np.float32)
    not_terminated = 1.0 - terminated.astype(np.float32)
    not_done = 1.0 - (terminated | truncated).astype(np.float32)
    for t in reversed(range(steps)):
        delta = rewards[t] + gamma * next_values[t] * not_terminated[t] - values[t]
        last = delta + gamma * lambda_ * not_done[t] * last
        advantages[t] = last
    return advantages
