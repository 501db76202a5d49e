"""Shared replay: vectorised n-step transitions, the uniform buffer, prioritized replay."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from training.replay_buffers import (
    PrioritizedReplayBuffer,
    ReplayBatch,
    ReplayBuffer,
    make_replay_buffer,
    n_step_transitions,
)

FAST = settings(max_examples=40, deadline=None, database=None)


def rows(ids: Iterable[int]) -> ReplayBatch:
    """Transitions whose every field encodes its id, so a sample can be checked row by row."""
    ids = np.asarray(list(ids), np.int64)
    return ReplayBatch(
        obs=[ids.astype(np.float32).reshape(-1, 1)],
        actions=ids,
        rewards=ids.astype(np.float32),
        next_obs=[(ids + 1000).astype(np.float32).reshape(-1, 1)],
        terminated=ids % 2 == 1,
        discounts=np.full(ids.shape, 0.99, np.float32),
    )


def slots(batch: ReplayBatch) -> tuple[np.ndarray, np.ndarray]:
    """A sampled batch's indices and weights (``None`` only on unsampled transitions)."""
    assert batch.indices is not None and batch.weights is not None
    return batch.indices, batch.weights


def assert_rows_match_slots(buffer: ReplayBuffer, batch: ReplayBatch) -> None:
    indices, weights = slots(batch)
    assert indices.dtype == np.int64 and weights.dtype == np.float32
    np.testing.assert_array_equal(batch.obs[0].ravel(), batch.actions)
    np.testing.assert_array_equal(batch.next_obs[0].ravel(), batch.actions + 1000)
    np.testing.assert_array_equal(batch.rewards, batch.actions)
    np.testing.assert_array_equal(batch.terminated, batch.actions % 2 == 1)
    assert indices.min() >= 0 and indices.max() < buffer.size


# --- n-step transitions ---------------------------------------------------------------------


def reference_n_step(
    obs: list[np.ndarray],
    after: list[np.ndarray],
    actions: np.ndarray,
    rewards: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    valid: np.ndarray,
    gamma: float,
    n_step: int,
) -> tuple[np.ndarray, ...]:
    """The original per-transition loop, kept as the oracle for the vectorised version."""
    steps, n = rewards.shape
    done = terminated | truncated
    rows_t, rows_j, next_t, term = [], [], [], []
    ret: list[float] = []
    disc: list[float] = []
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
    extended = np.concatenate([obs[0], after[0][None]], axis=0)
    return (
        obs[0][t_idx, j_idx],
        actions[t_idx, j_idx],
        np.asarray(ret, np.float32),
        extended[nt_idx, j_idx],
        np.asarray(term, bool),
        np.asarray(disc, np.float32),
    )


@FAST
@given(
    steps=st.integers(1, 9),
    envs=st.integers(1, 3),
    n_step=st.integers(1, 4),
    gamma=st.floats(0.5, 1.0),
    seed=st.integers(0, 2**16),
)
@example(steps=2, envs=1, n_step=4, gamma=0.9, seed=0)  # n_step past the fragment's end
def test_vectorised_n_step_matches_the_loop_bit_for_bit(
    steps: int, envs: int, n_step: int, gamma: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    obs = [rng.normal(size=(steps, envs, 2)).astype(np.float32)]
    after = [rng.normal(size=(envs, 2)).astype(np.float32)]
    actions = rng.integers(0, 5, size=(steps, envs))
    rewards = rng.normal(size=(steps, envs)).astype(np.float32)
    terminated = rng.random((steps, envs)) < 0.2
    truncated = ~terminated & (rng.random((steps, envs)) < 0.15)
    # Next-step autoreset: the row after a done step is the reset row, not a transition.
    valid = np.ones((steps, envs), bool)
    valid[1:] = ~(terminated | truncated)[:-1]
    batch = n_step_transitions(
        obs, after, actions, rewards, terminated, truncated, valid, gamma, n_step
    )
    expected = reference_n_step(
        obs, after, actions, rewards, terminated, truncated, valid, gamma, n_step
    )
    got = (batch.obs[0], batch.actions, batch.rewards, batch.next_obs[0])
    for mine, theirs in zip((*got, batch.terminated, batch.discounts), expected, strict=True):
        assert mine.dtype == theirs.dtype
        np.testing.assert_array_equal(mine, theirs)
    assert batch.weights is None and batch.indices is None


def test_n_step_of_a_fragment_without_valid_rows_is_empty() -> None:
    batch = n_step_transitions(
        [np.zeros((2, 1, 3), np.float32)],
        [np.zeros((1, 3), np.float32)],
        np.zeros((2, 1), np.int64),
        np.zeros((2, 1), np.float32),
        np.zeros((2, 1), bool),
        np.zeros((2, 1), bool),
        np.zeros((2, 1), bool),
        0.9,
        3,
    )
    assert batch.actions.shape == (0,) and batch.obs[0].shape == (0, 3)
    ReplayBuffer(4).add(batch)  # adding nothing is fine


# --- uniform buffer -------------------------------------------------------------------------


def test_uniform_buffer_samples_stored_rows_with_unit_weights() -> None:
    buffer = ReplayBuffer(capacity=10, seed=0)
    buffer.add(rows(range(6)))
    assert (buffer.size, buffer.capacity) == (6, 10)
    batch = buffer.sample(500)
    assert_rows_match_slots(buffer, batch)
    np.testing.assert_array_equal(batch.actions, batch.indices)  # slot i holds id i
    np.testing.assert_array_equal(batch.weights, np.ones(500, np.float32))
    assert set(batch.actions.tolist()) == set(range(6))
    buffer.update_priorities(slots(batch)[0], np.ones(500))  # a no-op, accepted
    same_seed = ReplayBuffer(capacity=10, seed=0)
    same_seed.add(rows(range(6)))
    np.testing.assert_array_equal(same_seed.sample(500).indices, batch.indices)


@pytest.mark.parametrize("factory", [ReplayBuffer, PrioritizedReplayBuffer])
def test_one_add_larger_than_capacity_keeps_the_newest_where_appends_would(
    factory: type[ReplayBuffer],
) -> None:
    at_once, one_by_one = factory(5, seed=0), factory(5, seed=0)
    at_once.add(rows([100, 101]))
    one_by_one.add(rows([100, 101]))
    at_once.add(rows(range(12)))
    for i in range(12):
        one_by_one.add(rows([i]))
    assert at_once.size == one_by_one.size == 5
    assert at_once._storage is not None and one_by_one._storage is not None
    np.testing.assert_array_equal(at_once._storage.actions, one_by_one._storage.actions)
    assert sorted(at_once._storage.actions.tolist()) == [7, 8, 9, 10, 11]


def test_uniform_buffer_errors() -> None:
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(2).sample(1)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="capacity"):
            ReplayBuffer(bad)  # type: ignore[arg-type]
    buffer = ReplayBuffer(4)
    buffer.add(rows([1, 2]))
    with pytest.raises(ValueError, match="batch_size"):
        buffer.sample(0)
    ragged = rows([1, 2])._replace(rewards=np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="2 rows, as actions"):
        buffer.add(ragged)


# --- prioritized replay ---------------------------------------------------------------------


def test_sampling_frequencies_follow_the_priorities() -> None:
    # 8 of 10 slots filled (16 leaves, so the empty tail of the tree is exercised too).
    buffer = PrioritizedReplayBuffer(10, alpha=1.0, beta=0.4, seed=1)
    buffer.add(rows(range(8)))
    td = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    buffer.update_priorities(np.arange(8), -td)  # the sign is ignored
    draws = 400 * 128
    counts = np.zeros(10)
    for _ in range(400):
        batch = buffer.sample(128)
        assert_rows_match_slots(buffer, batch)
        np.add.at(counts, slots(batch)[0], 1)
    assert counts[8:].sum() == 0  # empty slots are never drawn
    expected = draws * (td + 1e-6) / (td + 1e-6).sum()
    chi2 = float(((counts[:8] - expected) ** 2 / expected).sum())
    # 14.07 is the 95% point of chi2 with 7 degrees of freedom for independent draws; the
    # paper's stratified draws are far tighter (at most 1.1 over seeds 0-99). A 5% excess on
    # the likeliest slot scores ~ 36; uniform sampling ~ 6000.
    assert chi2 < 14.07, (chi2, counts)


def test_alpha_shapes_priorities_and_zero_alpha_is_uniform() -> None:
    buffer = PrioritizedReplayBuffer(4, alpha=0.5, epsilon=0.01, seed=0)
    buffer.add(rows(range(4)))
    buffer.update_priorities(np.array([0, 1, 2, 3]), np.array([0.0, 0.99, 3.99, 8.99]))
    np.testing.assert_allclose(buffer.priorities(), [0.1, 1.0, 2.0, 3.0])
    flat = PrioritizedReplayBuffer(4, alpha=0.0, seed=0)
    flat.add(rows(range(4)))
    flat.update_priorities(np.arange(4), np.array([0.0, 1.0, 50.0, 1e6]))
    np.testing.assert_array_equal(flat.priorities(), np.ones(4))
    np.testing.assert_array_equal(flat.sample(64).weights, np.ones(64, np.float32))


def test_importance_weights_match_a_hand_computation() -> None:
    buffer = PrioritizedReplayBuffer(4, alpha=1.0, beta=0.5, epsilon=1.0, seed=3)
    buffer.add(rows(range(4)))
    buffer.update_priorities(np.arange(4), np.array([1.0, 3.0, 0.0, 7.0]))
    # p = |td| + 1 = [2, 4, 1, 8], sum 15, N = 4: P = p / 15, w = (4 P) ** -0.5, and the
    # largest weight is that of the smallest priority, (4 / 15) ** -0.5.
    p = np.array([2.0, 4.0, 1.0, 8.0])
    w = (4 * p / 15) ** -0.5 / (4 * 1.0 / 15) ** -0.5
    np.testing.assert_allclose(w, [0.5**0.5, 0.5, 1.0, 0.125**0.5])
    indices, weights = slots(buffer.sample(256))
    assert set(indices.tolist()) == {0, 1, 2, 3}
    np.testing.assert_allclose(weights, w[indices], rtol=1e-6)
    buffer.beta = 1.0  # annealed towards full correction
    indices, weights = slots(buffer.sample(64))
    np.testing.assert_allclose(weights, 1.0 / p[indices], rtol=1e-6)


def test_new_transitions_get_the_largest_priority_seen() -> None:
    buffer = PrioritizedReplayBuffer(8, alpha=1.0, epsilon=1e-6, seed=0)
    buffer.add(rows([0, 1]))
    np.testing.assert_array_equal(buffer.priorities(), [1.0, 1.0])  # nothing seen yet: 1
    buffer.update_priorities(np.array([0, 1]), np.array([5.0, 0.5]))
    buffer.update_priorities(np.array([0]), np.array([0.1]))  # the max stays a running max
    buffer.add(rows([2, 3]))
    np.testing.assert_allclose(buffer.priorities(), np.array([0.1, 0.5, 5.0, 5.0]) + 1e-6)
    buffer.update_priorities(np.array([1]), np.array([0.0]))
    assert buffer.priorities()[1] == pytest.approx(1e-6)  # epsilon keeps it reachable
    # A slot given twice keeps its last error; an error it did not keep raises no maximum.
    buffer.update_priorities(np.array([3, 2, 3]), np.array([9.0, 1.0, 2.0]))
    buffer.add(rows([4]))
    np.testing.assert_allclose(buffer.priorities()[2:], np.array([1.0, 2.0, 5.0]) + 1e-6)


def test_update_priorities_steers_sampling() -> None:
    buffer = PrioritizedReplayBuffer(16, alpha=1.0, seed=5)
    buffer.add(rows(range(16)))
    before = np.bincount(slots(buffer.sample(1600))[0], minlength=16)
    assert before.min() > 50  # all at max priority: about uniform
    buffer.update_priorities(np.arange(16), np.where(np.arange(16) == 9, 100.0, 0.01))
    after = np.bincount(slots(buffer.sample(1600))[0], minlength=16)
    assert after[9] > 1400
    buffer.update_priorities(np.array([9]), np.array([0.0]))
    again = np.bincount(slots(buffer.sample(1600))[0], minlength=16)
    assert again[9] < 5


def assert_trees_consistent(buffer: PrioritizedReplayBuffer, expected: np.ndarray) -> None:
    """Every node is its children's sum (resp. min); the leaves past ``size`` are empty."""
    leaves = buffer._leaves
    np.testing.assert_allclose(buffer.priorities(), expected, rtol=1e-12)
    inner = np.arange(1, leaves)
    np.testing.assert_allclose(
        buffer._sum[inner], buffer._sum[2 * inner] + buffer._sum[2 * inner + 1], rtol=1e-12
    )
    assert (
        buffer._min[inner] == np.minimum(buffer._min[2 * inner], buffer._min[2 * inner + 1])
    ).all()
    assert (buffer._sum[leaves + buffer.size :] == 0).all()
    assert np.isinf(buffer._min[leaves + buffer.size :]).all()
    assert buffer.total_priority == pytest.approx(expected.sum(), rel=1e-12)
    assert buffer._min[1] == pytest.approx(expected.min(), rel=1e-12)


operation = st.one_of(
    st.tuples(st.just("add"), st.integers(1, 12)),
    st.tuples(
        st.just("update"),
        st.lists(st.tuples(st.integers(0, 100), st.floats(-50, 50)), min_size=1, max_size=8),
    ),
)


@FAST
@given(capacity=st.integers(1, 11), alpha=st.floats(0.0, 1.5), ops=st.lists(operation, max_size=12))
def test_trees_stay_exact_through_wrap_around_and_updates(
    capacity: int, alpha: float, ops: list[tuple[Any, ...]]
) -> None:
    buffer = PrioritizedReplayBuffer(capacity, alpha=alpha, epsilon=1e-3, seed=0)
    model: list[float] = []  # the stored priorities, by slot
    head, max_priority, next_id = 0, 1.0, 0
    for op in ops:
        if op[0] == "add":
            buffer.add(rows(range(next_id, next_id + op[1])))
            for _ in range(op[1]):
                if len(model) < capacity:
                    model.append(max_priority)
                else:
                    model[head] = max_priority
                head = (head + 1) % capacity
            next_id += op[1]
        elif model:
            idx = np.array([i % len(model) for i, _ in op[1]])
            td = np.array([e for _, e in op[1]])
            buffer.update_priorities(idx, td)
            for i, e in zip(idx, td, strict=True):  # a repeated slot keeps the last error
                model[i] = (abs(e) + 1e-3) ** alpha
            max_priority = max(max_priority, *(model[i] for i in idx))  # of priorities kept
        if model:
            assert_trees_consistent(buffer, np.array(model))
            assert_rows_match_slots(buffer, buffer.sample(7))


def test_prioritized_buffer_argument_errors() -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"capacity": 0}, "capacity"),
        ({"capacity": 4, "alpha": -0.1}, "alpha"),
        ({"capacity": 4, "alpha": float("nan")}, "alpha"),
        ({"capacity": 4, "beta": 1.5}, "beta"),
        ({"capacity": 4, "beta": -0.1}, "beta"),
        ({"capacity": 4, "epsilon": 0.0}, "epsilon"),
    ]
    for kwargs, name in cases:
        with pytest.raises(ValueError, match=name):
            PrioritizedReplayBuffer(**kwargs)
    buffer = PrioritizedReplayBuffer(4)
    with pytest.raises(ValueError, match="empty"):
        buffer.sample(2)
    buffer.add(rows([0, 1]))
    with pytest.raises(ValueError, match="beta"):
        buffer.beta = 2.0
    with pytest.raises(ValueError, match=r"stored slots in \[0, 2\)"):
        buffer.update_priorities(np.array([2]), np.array([1.0]))
    with pytest.raises(ValueError, match="2 entries for 1 indices"):
        buffer.update_priorities(np.array([0]), np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="finite"):
        buffer.update_priorities(np.array([0]), np.array([np.nan]))
    assert buffer.total_priority == 2.0  # a rejected update leaves the trees alone


def test_make_replay_buffer_picks_the_kind() -> None:
    uniform = make_replay_buffer(7, prioritized=False, alpha=0.6, beta=0.4, seed=0)
    assert type(uniform) is ReplayBuffer and uniform.capacity == 7
    per = make_replay_buffer(7, prioritized=True, alpha=0.7, beta=0.5, seed=0)
    assert isinstance(per, PrioritizedReplayBuffer)
    assert (per.capacity, per.alpha, per.beta) == (7, 0.7, 0.5)
