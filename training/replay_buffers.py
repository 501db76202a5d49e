"""Replay of n-step transitions for the off-policy algorithms (DQN, SAC).

Two buffers share one numpy ring storage: :class:`ReplayBuffer` samples uniformly and
:class:`PrioritizedReplayBuffer` samples in proportion to TD-error priorities (Schaul et al.
2016, "Prioritized Experience Replay", proportional variant) through a sum tree.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from training.env_runner import Fragment

__all__ = [
    "PrioritizedReplayBuffer",
    "ReplayBatch",
    "ReplayBuffer",
    "add_fragments",
    "make_replay_buffer",
    "n_step_transitions",
    "updates_per_round",
]


class ReplayBatch(NamedTuple):
    """n-step transitions: ``target = rewards + discounts * (1 - terminated) * V(next_obs)``.

    ``weights`` (float32 ``(B,)``, importance-sampling corrections) and ``indices`` (int64
    ``(B,)``, the buffer slots, for :meth:`ReplayBuffer.update_priorities`) are filled by
    ``sample`` and ``None`` on freshly built transitions.
    """

    obs: list[np.ndarray]
    actions: np.ndarray
    rewards: np.ndarray
    next_obs: list[np.ndarray]
    terminated: np.ndarray
    discounts: np.ndarray
    weights: np.ndarray | None = None
    indices: np.ndarray | None = None


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
    fragment's end; ``discounts`` holds ``gamma ** k`` for the ``k`` steps it spans. Rows come
    env by env, in time order within an env.

    Vectorised over the whole fragment: ``n_step`` numpy passes over ``(T, N)`` instead of a
    Python loop per transition (this runs every sampling round).
    """
    steps, _ = rewards.shape
    done = terminated | truncated
    # first_done[t, j]: the first row >= t whose step ends an episode (``steps`` if none);
    # a suffix minimum over the rows.
    rows = np.where(done, np.arange(steps)[:, None], steps)
    first_done = np.minimum.accumulate(rows[::-1], axis=0)[::-1]
    # A return from row t spans k = end - t steps: up to n_step, the episode's end, the fragment's.
    end = np.minimum(np.minimum(np.arange(steps)[:, None] + n_step, steps), first_done + 1)
    span = end - np.arange(steps)[:, None]
    # Same float64 operations in the same order as summing step by step, so the float32
    # results are the same bits as a per-transition loop's.
    total = np.zeros(rewards.shape, np.float64)
    discount = np.ones(rewards.shape, np.float64)
    for k in range(min(n_step, steps)):  # a return spans at most the fragment
        inside = k < span
        shifted = np.zeros(rewards.shape, np.float64)
        shifted[: steps - k] = rewards[k:]
        total = np.where(inside, total + discount * shifted, total)
        discount = np.where(inside, discount * gamma, discount)
    j_idx, t_idx = np.nonzero(valid.T)  # env-major order
    nt_idx = end[t_idx, j_idx]
    next_obs = []
    for leaf, after in zip(obs, next_obs_after, strict=True):
        extended = np.concatenate([leaf, after[None]], axis=0)
        next_obs.append(extended[nt_idx, j_idx])
    return ReplayBatch(
        obs=[leaf[t_idx, j_idx] for leaf in obs],
        actions=actions[t_idx, j_idx],
        rewards=total[t_idx, j_idx].astype(np.float32),
        next_obs=next_obs,
        terminated=np.asarray(terminated[nt_idx - 1, j_idx], bool),
        discounts=discount[t_idx, j_idx].astype(np.float32),
    )


def _positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


class ReplayBuffer:
    """Fixed-capacity FIFO buffer with uniform sampling.

    Args:
        capacity: Transitions kept; the oldest are overwritten.
        seed: Seed of the sampling generator.

    Raises:
        ValueError: ``capacity`` is not an integer >= 1.
    """

    def __init__(self, capacity: int, seed: int | None = None) -> None:
        self.capacity = _positive_int(capacity, "capacity")
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
        """Append transitions (overwriting the oldest once full).

        Raises:
            ValueError: The fields do not all hold the same number of transitions.
        """
        count = batch.actions.shape[0]
        fields = [*batch.obs, *batch.next_obs, batch.rewards, batch.terminated, batch.discounts]
        if any(x.shape[0] != count for x in fields):
            raise ValueError(f"every ReplayBatch field must hold {count} rows, as actions does")
        if count == 0:
            return
        if self._storage is None:
            self._storage = self._allocate(batch)
        # More rows than slots: only the last `capacity` survive, written where a row-by-row
        # append would leave them (numpy leaves repeated-index assignment order undefined).
        keep = min(count, self.capacity)
        idx = (self._next + count - keep + np.arange(keep)) % self.capacity
        rows = slice(count - keep, count)
        store = self._storage
        for target, source in zip(store.obs, batch.obs, strict=True):
            target[idx] = source[rows]
        for target, source in zip(store.next_obs, batch.next_obs, strict=True):
            target[idx] = source[rows]
        store.actions[idx] = batch.actions[rows]
        store.rewards[idx] = batch.rewards[rows]
        store.terminated[idx] = batch.terminated[rows]
        store.discounts[idx] = batch.discounts[rows]
        self._next = int((self._next + count) % self.capacity)
        self.size = min(self.capacity, self.size + count)
        self._written(idx)

    def _written(self, idx: np.ndarray) -> None:
        """Hook: slots ``idx`` now hold new transitions."""

    def _check_sample(self, batch_size: int) -> None:
        _positive_int(batch_size, "batch_size")
        if self._storage is None or self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")

    def _gather(self, idx: np.ndarray, weights: np.ndarray) -> ReplayBatch:
        store = self._storage
        assert store is not None
        return ReplayBatch(
            obs=[x[idx] for x in store.obs],
            actions=store.actions[idx],
            rewards=store.rewards[idx],
            next_obs=[x[idx] for x in store.next_obs],
            terminated=store.terminated[idx],
            discounts=store.discounts[idx],
            weights=weights,
            indices=idx,
        )

    def sample(self, batch_size: int) -> ReplayBatch:
        """``batch_size`` transitions drawn uniformly with replacement (all weights 1)."""
        self._check_sample(batch_size)
        idx = self._rng.integers(0, self.size, size=batch_size, dtype=np.int64)
        return self._gather(idx, np.ones(batch_size, np.float32))

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        """Nothing to do: uniform replay has no priorities."""


class PrioritizedReplayBuffer(ReplayBuffer):
    """Proportional prioritized replay (Schaul et al. 2016) over a sum tree and a min tree.

    Slot ``i`` has priority ``p_i = (|td_i| + epsilon) ** alpha``; a new transition gets the
    largest priority seen so far, so it is replayed at least once soon. A batch is drawn
    stratified as in the paper: the priority mass is cut into ``batch_size`` equal ranges and
    one slot is drawn from each, ``P(i) = p_i / sum(p)``. Importance-sampling weights are
    ``(N * P(i)) ** -beta`` divided by their largest possible value ``(N * min P) ** -beta``,
    i.e. ``(min p / p_i) ** beta`` in ``(0, 1]``.

    Both trees are flat numpy arrays over the next power of two ``L >= capacity`` leaves (node
    ``n``'s children are ``2n`` and ``2n + 1``, leaves ``L..2L-1``): ``4 * L`` float64s of
    memory (4 MiB at capacity 100k). Writing ``k`` slots and drawing a batch each cost
    ``log2(L)`` vectorised numpy steps over at most ``k`` resp. ``batch_size`` entries (about
    0.2 ms for ``sample(256)`` at capacity 100k). The min tree keeps the weights' normaliser at
    O(1) per sample (its upkeep doubles the cost of a write), where a minimum over the stored
    priorities would cost O(N) per sample.

    Args:
        capacity: Transitions kept; the oldest are overwritten.
        alpha: Prioritisation exponent, ``0`` = uniform.
        beta: Importance-sampling exponent, ``1`` = full correction; settable (to anneal it).
        epsilon: Added to ``|td|`` so that no transition becomes unreachable.
        seed: Seed of the sampling generator.

    Raises:
        ValueError: An argument is out of range (named in the message).
    """

    def __init__(
        self,
        capacity: int,
        alpha: float = 0.6,
        beta: float = 0.4,
        epsilon: float = 1e-6,
        seed: int | None = None,
    ) -> None:
        super().__init__(capacity, seed)
        if not alpha >= 0.0 or not np.isfinite(alpha):
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
        if not epsilon > 0.0 or not np.isfinite(epsilon):
            raise ValueError(f"epsilon must be a finite number > 0, got {epsilon!r}")
        self.alpha = float(alpha)
        self.epsilon = float(epsilon)
        self.beta = beta
        self._depth = (self.capacity - 1).bit_length()
        self._leaves = 1 << self._depth
        self._sum = np.zeros(2 * self._leaves, np.float64)
        self._min = np.full(2 * self._leaves, np.inf, np.float64)
        self._max_priority = 1.0

    @property
    def beta(self) -> float:
        """The importance-sampling exponent in ``[0, 1]``."""
        return self._beta

    @beta.setter
    def beta(self, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {value!r}")
        self._beta = float(value)

    @property
    def total_priority(self) -> float:
        """Sum of the stored transitions' priorities (the sum tree's root)."""
        return float(self._sum[1])

    def priorities(self) -> np.ndarray:
        """A copy of the stored transitions' priorities, by slot."""
        return np.array(self._sum[self._leaves : self._leaves + self.size])

    def _set(self, idx: np.ndarray, priorities: np.ndarray) -> None:
        """Set the leaves of the sorted, distinct slots ``idx``, then their ancestors.

        Parents are recomputed from both children (not adjusted by a delta), so no rounding
        error accumulates over millions of updates. Sorted slots have sorted parents, so the
        repeats on each level are adjacent and dropped: a contiguous write of ``k`` slots
        touches about ``2k`` nodes in all, not ``k log2(L)``.
        """
        node = idx + self._leaves
        self._sum[node] = priorities
        self._min[node] = priorities
        for _ in range(self._depth):
            node >>= 1
            node = node[np.concatenate(([True], node[1:] != node[:-1]))]
            left = node << 1
            self._sum[node] = self._sum[left] + self._sum[left + 1]
            self._min[node] = np.minimum(self._min[left], self._min[left + 1])

    def _written(self, idx: np.ndarray) -> None:
        self._set(np.sort(idx), np.full(idx.shape, self._max_priority))

    def sample(self, batch_size: int) -> ReplayBatch:
        """``batch_size`` transitions drawn in proportion to priority, with IS weights."""
        self._check_sample(batch_size)
        total = self._sum[1]
        mass = (np.arange(batch_size) + self._rng.random(batch_size)) * (total / batch_size)
        node = np.ones(batch_size, np.int64)
        for _ in range(self._depth):  # one vectorised step per tree level, in place
            node <<= 1
            left = self._sum[node]
            # Go right past the left mass, unless the right subtree is empty: rounding can put
            # `mass` a hair above a subtree's sum, and empty slots must never be drawn.
            right = (mass >= left) & (self._sum[node + 1] > 0.0)
            mass -= left * right
            node += right
        idx = node - self._leaves
        weights = (self._min[1] / self._sum[node]) ** self._beta
        return self._gather(idx, weights.astype(np.float32))

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        """Set the priorities of sampled slots from their new TD errors.

        A slot given twice takes its last error. A slot overwritten since it was sampled
        takes the priority meant for the old transition; updating right after each learner
        step keeps that window empty.

        Args:
            indices: Slots, as returned in :attr:`ReplayBatch.indices`.
            td_errors: TD errors, one per index (a CPU array; the sign is ignored).

        Raises:
            ValueError: Shapes differ, an index is not a stored slot or an error is not finite.
        """
        idx = np.asarray(indices, np.int64).ravel()
        td = np.abs(np.asarray(td_errors, np.float64).ravel())
        if idx.shape != td.shape:
            raise ValueError(f"td_errors has {td.size} entries for {idx.size} indices")
        if idx.size == 0:
            return
        if idx.min() < 0 or idx.max() >= self.size:
            raise ValueError(f"indices must be stored slots in [0, {self.size})")
        if not np.isfinite(td).all():
            raise ValueError("td_errors must be finite (a NaN would poison the sum tree)")
        # One priority per slot, the last given for a repeated one (numpy does not define
        # which of repeated assignments wins); np.unique also sorts them, as _set wants.
        slots, last = np.unique(idx[::-1], return_index=True)
        priorities = (td[::-1][last] + self.epsilon) ** self.alpha
        self._max_priority = max(self._max_priority, float(priorities.max()))
        self._set(slots, priorities)


def make_replay_buffer(
    capacity: int,
    *,
    prioritized: bool = False,
    alpha: float = 0.6,
    beta: float = 0.4,
    seed: int | None = None,
) -> ReplayBuffer:
    """A uniform or a prioritized buffer, as a ``replay_buffer_config`` asks.

    ``alpha`` and ``beta`` are used only when ``prioritized``.
    """
    if prioritized:
        return PrioritizedReplayBuffer(capacity, alpha=alpha, beta=beta, seed=seed)
    return ReplayBuffer(capacity, seed=seed)


def add_fragments(
    buffer: ReplayBuffer, fragments: Iterable[Fragment], gamma: float, n_step: int
) -> None:
    """Add the n-step transitions of sampled fragments to ``buffer``."""
    for f in fragments:
        buffer.add(
            n_step_transitions(
                f.obs,
                f.next_obs,
                f.actions,
                f.rewards,
                f.terminated,
                f.truncated,
                f.valid,
                gamma,
                n_step,
            )
        )


def updates_per_round(sampled: int, training_intensity: float | None, batch_size: int) -> int:
    """Gradient steps after a sampling round of ``sampled`` env steps.

    ``training_intensity`` is trained transitions per sampled env step (RLlib's meaning);
    ``None`` is one gradient step per round, RLlib's "natural" ratio.
    """
    if training_intensity is None:
        return 1
    return max(1, round(sampled * training_intensity / batch_size))
