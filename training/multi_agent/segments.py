"""Agent trajectories, and how they become one :class:`~training.fragments.Fragment` per policy.

A multi-agent runner records each agent's steps as a :class:`Segment`: the rows of one agent
from its first action (or the start of the fragment) until it leaves the episode (or the
fragment ends). The learners take time-major fragments of ``T`` rows and ``N`` columns, with
the bootstrap value of a row read from the row after it; :func:`pack` lays each segment out as
one column, so the learners' GAE, V-trace and replay code runs on agent trajectories unchanged:

- a segment's rows come first (valid); the row after its last (if there is one) holds the
  observation its last step bootstraps from (its final observation when truncated, the one it
  would act on next when cut by the fragment's end), marked invalid like an autoreset row;
- a segment as long as the fragment bootstraps from the fragment's ``next_obs`` instead;
- its last row is ``terminated`` when the agent terminated, else ``truncated`` (a cut counts
  as a truncation: the value after it is bootstrapped, and nothing beyond it is read).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from training.fragments import Fragment

__all__ = ["Segment", "pack"]


@dataclass
class Segment:
    """One agent's consecutive steps within one episode of one env copy."""

    obs: list[list[np.ndarray]] = field(default_factory=list)
    """Per row: the observation leaves the action saw."""
    actions: list[np.ndarray] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    extras: list[dict[str, np.ndarray]] = field(default_factory=list)
    terminated: bool = False
    bootstrap: list[np.ndarray] | None = None
    """The observation leaves the last row bootstraps from (set when the segment closes)."""

    def __len__(self) -> int:
        return len(self.actions)

    def add(self, obs: list[np.ndarray], action: np.ndarray, extras: dict[str, Any]) -> None:
        """One step of the agent: what it saw, what it did (its reward comes later)."""
        self.obs.append(obs)
        self.actions.append(action)
        self.extras.append(extras)
        self.rewards.append(0.0)

    def reward(self, value: float) -> None:
        """A reward for the agent's last action (rewards between its actions add up)."""
        if self.rewards:
            self.rewards[-1] += value

    def close(self, terminated: bool, bootstrap: list[np.ndarray] | None) -> None:
        """The agent left the episode (or the fragment ended): how its last row ends."""
        self.terminated = terminated
        self.bootstrap = bootstrap if bootstrap is not None else self.obs[-1]


def pack(segments: list[Segment], weights_version: int = 0, rows: int = 0) -> Fragment:
    """The segments of one policy as one fragment, a column each (see the module doc).

    Args:
        segments: Closed, non-empty segments.
        weights_version: The weights that sampled them.
        rows: At least this many rows (the fragment's env steps: every runner's fragments
            then have one length, which IMPALA's V-trace batches need), else the longest
            segment's.
    """
    steps = max(rows, *(len(s) for s in segments))
    columns = len(segments)
    first = segments[0]
    leaves = [np.zeros((steps, columns, *leaf.shape), leaf.dtype) for leaf in first.obs[0]]
    next_obs = [np.zeros((columns, *leaf.shape), leaf.dtype) for leaf in first.obs[0]]
    actions = np.zeros((steps, columns, *first.actions[0].shape), first.actions[0].dtype)
    rewards = np.zeros((steps, columns), np.float32)
    terminated = np.zeros((steps, columns), bool)
    truncated = np.zeros((steps, columns), bool)
    valid = np.zeros((steps, columns), bool)
    extras = {
        key: np.zeros((steps, columns, *np.shape(value)), np.asarray(value).dtype)
        for key, value in first.extras[0].items()
    }
    for c, segment in enumerate(segments):
        length = len(segment)
        assert segment.bootstrap is not None, "pack() takes closed segments"
        for row, obs in enumerate(segment.obs):
            for leaf, value in zip(leaves, obs, strict=True):
                leaf[row, c] = value
        after = leaves if length < steps else None
        for index, value in enumerate(segment.bootstrap):
            if after is not None:
                after[index][length, c] = value
            else:
                next_obs[index][c] = value
        actions[:length, c] = np.stack(segment.actions)
        rewards[:length, c] = segment.rewards
        valid[:length, c] = True
        if segment.terminated:
            terminated[length - 1, c] = True
        else:
            truncated[length - 1, c] = True
        for key, column in extras.items():
            column[:length, c] = np.stack([row[key] for row in segment.extras])
    return Fragment(
        obs=leaves,
        next_obs=next_obs,
        actions=actions,
        rewards=rewards,
        terminated=terminated,
        truncated=truncated,
        valid=valid,
        extras=extras,
        episode_returns=[],
        episode_lengths=[],
        weights_version=weights_version,
    )
