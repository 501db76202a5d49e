"""V-trace as a pure function: a hand-computed example, the on-policy case, episode ends."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from training.algorithms.impala.vtrace import vtrace
from training.algorithms.ppo.learner import compute_gae


def _column(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).reshape(-1, 1)


def _flags(*values: bool) -> torch.Tensor:
    return torch.tensor(values).reshape(-1, 1)


def test_a_hand_computed_example_with_clipped_weights() -> None:
    # Three steps of one env; the ratios pi/mu are 2, 0.5 and 1.5.
    ratios = [2.0, 0.5, 1.5]
    behaviour = _column(*[math.log(0.4)] * 3)
    target = _column(*[math.log(0.4 * r) for r in ratios])
    rewards = _column(1.0, 0.0, 2.0)
    values = _column(0.5, 1.0, 1.5)
    next_values = _column(1.0, 1.5, 3.0)  # V(x_1), V(x_2), V(x_3) (the bootstrap)
    no = _flags(False, False, False)
    gamma = 0.9

    out = vtrace(behaviour, target, rewards, values, next_values, no, no, gamma=gamma)

    # By hand (rho_bar = c_bar = 1): rho = c = (1, 0.5, 1).
    rho = [1.0, 0.5, 1.0]
    delta = [
        rho[0] * (1.0 + 0.9 * 1.0 - 0.5),  # 1.4
        rho[1] * (0.0 + 0.9 * 1.5 - 1.0),  # 0.175
        rho[2] * (2.0 + 0.9 * 3.0 - 1.5),  # 3.2
    ]
    v2 = 1.5 + delta[2]  # 4.7
    v1 = 1.0 + delta[1] + gamma * rho[1] * (v2 - 1.5)  # 2.615
    v0 = 0.5 + delta[0] + gamma * rho[0] * (v1 - 1.0)  # 3.3535
    np.testing.assert_allclose(out.vs[:, 0], [v0, v1, v2], rtol=1e-6)
    # The policy gradient's advantage uses v_{t+1} (and the bootstrap at the end).
    pg = [
        min(1.0, 2.0) * (1.0 + gamma * v1 - 0.5),
        min(1.0, 0.5) * (0.0 + gamma * v2 - 1.0),
        min(1.0, 1.5) * (2.0 + gamma * 3.0 - 1.5),
    ]
    np.testing.assert_allclose(out.pg_advantages[:, 0], pg, rtol=1e-6)
    np.testing.assert_allclose(out.rhos[:, 0], ratios, rtol=1e-6)


def test_the_thresholds_clip_each_weight_separately() -> None:
    behaviour = _column(0.0, 0.0)
    target = _column(math.log(3.0), math.log(3.0))
    rewards, values, next_values = _column(1.0, 1.0), _column(0.0, 0.0), _column(0.0, 0.0)
    no = _flags(False, False)
    out = vtrace(
        behaviour,
        target,
        rewards,
        values,
        next_values,
        no,
        no,
        gamma=0.5,
        clip_rho_threshold=2.0,
        clip_pg_rho_threshold=3.0,
        clip_c_threshold=0.5,
    )
    # delta = 2 * 1 each; v_1 = 2; v_0 = 2 + 0.5 * 0.5 * (2 - 0) = 2.5.
    np.testing.assert_allclose(out.vs[:, 0], [2.5, 2.0], rtol=1e-6)
    # pg: 3 * (1 + 0.5 * v_1) = 6 and 3 * (1 + 0.5 * 0) = 3.
    np.testing.assert_allclose(out.pg_advantages[:, 0], [6.0, 3.0], rtol=1e-6)


def test_terminated_stops_bootstrapping_and_truncated_bootstraps_from_the_final_value() -> None:
    zero = _column(0.0, 0.0, 0.0)
    rewards = _column(1.0, 1.0, 1.0)
    values = _column(0.0, 0.0, 0.0)
    next_values = _column(10.0, 20.0, 30.0)
    gamma = 0.5
    term = vtrace(
        zero,
        zero,
        rewards,
        values,
        next_values,
        _flags(True, False, False),
        _flags(False, False, False),
        gamma=gamma,
    )
    # Row 0 ended the episode: its target is its reward alone, nothing from row 1 flows in.
    assert float(term.vs[0, 0]) == pytest.approx(1.0)
    assert float(term.pg_advantages[0, 0]) == pytest.approx(1.0)
    trunc = vtrace(
        zero,
        zero,
        rewards,
        values,
        next_values,
        _flags(False, False, False),
        _flags(True, False, False),
        gamma=gamma,
    )
    # Row 0 hit the time limit: bootstrap from V(final observation) = next_values[0].
    assert float(trunc.vs[0, 0]) == pytest.approx(1.0 + gamma * 10.0)
    assert float(trunc.pg_advantages[0, 0]) == pytest.approx(1.0 + gamma * 10.0)
    # Rows 1 and 2 are the next episode in both cases, bootstrapped at the fragment's end.
    np.testing.assert_allclose(term.vs[1:], trunc.vs[1:])
    assert float(trunc.vs[2, 0]) == pytest.approx(1.0 + gamma * 30.0)


@settings(max_examples=50, deadline=None)
@given(
    steps=st.integers(1, 12),
    envs=st.integers(1, 4),
    seed=st.integers(0, 2**31 - 1),
    gamma=st.floats(0.5, 1.0),
)
def test_on_policy_vtrace_is_gae_with_lambda_one(
    steps: int, envs: int, seed: int, gamma: float
) -> None:
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=(steps, envs)).astype(np.float32)
    # As in a fragment: V of every row and of the observation after it (after an episode's
    # end, the next row holds the final observation, as gymnasium's next-step autoreset does).
    all_values = rng.normal(size=(steps + 1, envs)).astype(np.float32)
    values, next_values = all_values[:-1], all_values[1:]
    terminated = rng.random((steps, envs)) < 0.15
    truncated = ~terminated & (rng.random((steps, envs)) < 0.15)
    logp = torch.as_tensor(rng.normal(size=(steps, envs)).astype(np.float32))
    out = vtrace(
        logp,
        logp,  # pi == mu: every weight is 1
        torch.as_tensor(rewards),
        torch.as_tensor(values),
        torch.as_tensor(next_values),
        torch.as_tensor(terminated),
        torch.as_tensor(truncated),
        gamma=gamma,
    )
    gae = compute_gae(rewards, values, next_values, terminated, truncated, gamma, 1.0)
    np.testing.assert_allclose(out.vs.numpy() - values, gae, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out.pg_advantages.numpy(), gae, rtol=1e-4, atol=1e-4)
