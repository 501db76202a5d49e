"""One episode loop and one episode record, for every place that plays a policy in an env.

``rlserve evaluate`` (checkpoints, artifacts and URLs), ``rlserve demo`` and
:func:`serving.client.play_episodes` all play through :func:`play_episode`, so their episodes are
the same episodes: episode ``i`` resets with its own seed and exploratory actions are seeded per
step (``episode_seed * ACTION_SEED_STRIDE + step``), whoever asks for the action. An episode ends
when the env reports ``terminated`` or ``truncated`` (gymnasium 1.x).

This module imports only numpy: a game client that plays through :mod:`serving.client` does not
pull in gymnasium, Ray or the server stack. The env is duck-typed (``reset``/``step`` and an
``action_space`` with a ``dtype``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ACTION_SEED_STRIDE", "Act", "Episode", "action_seed", "play_episode"]

# A prime larger than any episode length we play, so (episode seed, step) pairs never collide.
ACTION_SEED_STRIDE = 100_003

Act = Callable[[Any, int | None], Any]
"""``act(obs, action_seed) -> action``: the policy, wherever it runs."""


@dataclass(frozen=True)
class Episode:
    """One played episode."""

    seed: int | None
    episode_return: float
    length: int
    terminated: bool
    truncated: bool


def action_seed(episode_seed: int | None, step: int) -> int | None:
    """The seed of an exploratory action: reproducible per (episode, step), ``None`` unseeded."""
    return None if episode_seed is None else episode_seed * ACTION_SEED_STRIDE + step


def play_episode(
    env: Any, act: Act, seed: int | None = None, on_reward: Callable[[float], None] | None = None
) -> Episode:
    """Play one episode of ``env``, asking ``act`` for every action.

    Args:
        env: A gymnasium-style env; its observations must fit the policy.
        act: The policy: called with the observation and the step's action seed.
        seed: Reset seed of the episode (``None``: unseeded, and so are the actions).
        on_reward: Told each step's reward before the next ``act`` (a policy that reads the
            previous reward keeps it).

    Returns:
        The episode's return, length and how it ended.
    """
    obs, _ = env.reset(seed=seed)
    total, length, terminated, truncated = 0.0, 0, False, False
    while not (terminated or truncated):
        action = act(obs, action_seed(seed, length))
        if isinstance(action, list):  # Box actions as JSON
            action = np.asarray(action, dtype=env.action_space.dtype)
        obs, reward, terminated, truncated, _ = env.step(action)
        if on_reward is not None:
            on_reward(float(reward))
        total += float(reward)
        length += 1
    return Episode(seed, total, length, bool(terminated), bool(truncated))
