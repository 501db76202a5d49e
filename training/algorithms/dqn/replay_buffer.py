"""A uniform replay buffer of n-step transitions, stored as numpy ring buffers."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["ReplayBatch", "ReplayBuffer", "n_step_transitions"]


class ReplayBatch(NamedTuple):
    """n-step transitions: ``target = rewards + discounts * (1 - terminated) * max Q(next)``."""

    obs: list[np.ndarray]
    actions: np.ndarray
    rewards: np.ndarray
    next_obs: list[np.ndarray]
    terminated: np.ndarray
    discounts: np.ndarray


def n_step_transitions(
    obs: list[np.ndarray],
    next_obs_after: list[np.ndarray],
    actions: np.ndarray,
    rewards: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    valid: np.ndarray,
    gamma: float,
    n_step: int,
) -> ReplayBatch:
    """n-step transitions of a time-major ``(T, N)`` fragment (gymnasium next-step autoreset).

    Because the vector env autoresets on the next step, the observation after step ``t`` is
    row ``t + 1`` (the episode's final observation when step ``t`` ended it), or
    ``next_obs_after`` after the last row. A return stops early at an episode's end or at the
    fragment's end; ``discounts`` holds ``gamma ** k`` for the ``k`` steps it spans.
    """
    steps, n = rewards.shape
    done = terminated | truncated
    rows_t, rows_j, next_t, ret, disc, term = [], [], [], [], [], []
    for j in range(n):
        for t in range(steps):
            if not valid[t, j]:
                continue
            total, discount, k = 0.0, 1.0, 0
            while True:
                total += discount * float(rewards[t + k, j])
                discount *= gamma
                k += 1
                if done[t + k - 1, j] or k == n_step or t + k == steps:
                    break
            rows_t.append(t)
            rows_j.append(j)
            next_t.append(t + k)
            ret.append(total)
            disc.append(discount)
            term.append(bool(terminated[t + k - 1, j]))
    t_idx, j_idx, nt_idx = np.array(rows_t, int), np.array(rows_j, int), np.array(next_t, int)
    next_obs = []
    for leaf, after in zip(obs, next_obs_after, strict=True):
        extended = np.concatenate([leaf, after[None]], axis=0)
        next_obs.append(extended[nt_idx, j_idx])
    return ReplayBatch(
        obs=[leaf[t_idx, j_idx] for leaf in obs],
        actions=actions[t_idx, j_idx],
        rewards=np.asarray(ret, np.float32),
        next_obs=next_obs,
        terminated=np.asarray(term, bool),
        discounts=np.asarray(disc, np.float32),
    )


class ReplayBuffer:
    """Fixed-capacity FIFO buffer with uniform sampling.

    Args:
        capacity: Transitions kept; the oldest are overwritten.
        seed: Seed of the sampling generator.
    """

    def __init__(self, capacity: int, seed: int | None = None) -> None:
        self.capacity = capacity
        self._storage: ReplayBatch | None = None
        self._next = 0
        self.size = 0
        self._rng = np.random.default_rng(seed)

    def _allocate(self, batch: ReplayBatch) -> ReplayBatch:
        def empty(array: np.ndarray) -> np.ndarray:
            return np.zeros((self.capacity, *array.shape[1:]), dtype=array.dtype)

        return ReplayBatch(
            obs=[empty(x) for x in batch.obs],
            actions=empty(batch.actions),
            rewards=empty(batch.rewards),
            next_obs=[empty(x) for x in batch.next_obs],
            terminated=empty(batch.terminated),
            discounts=empty(batch.discounts),
        )

    def add(self, batch: ReplayBatch) -> None:
        """Append transitions (overwriting the oldest once full)."""
        count = batch.actions.shape[0]
        if count == 0:
            return
        if self._storage is None:
            self._storage = self._allocate(batch)
        idx = (self._next + np.arange(count)) % self.capacity
        store = self._storage
        for target, source in zip(store.obs, batch.obs, strict=True):
            target[idx] = source
        for target, source in zip(store.next_obs, batch.next_obs, strict=True):
            target[idx] = source
        store.actions[idx] = batch.actions
        store.rewards[idx] = batch.rewards
        store.terminated[idx] = batch.terminated
        store.discounts[idx] = batch.discounts
        self._next = int((self._next + count) % self.capacity)
        self.size = min(self.capacity, self.size + count)

    def sample(self, batch_size: int) -> ReplayBatch:
        """``batch_size`` transitions drawn uniformly with replacement."""
        if self._storage is None or self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx = self._rng.integers(0, self.size, size=batch_size)
        store = self._storage
        return ReplayBatch(
            obs=[x[idx] for x in store.obs],
            actions=store.actions[idx],
            rewards=store.rewards[idx],
            next_obs=[x[idx] for x in store.next_obs],
            terminated=store.terminated[idx],
            discounts=store.discounts[idx],
        )
