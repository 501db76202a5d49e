"""Stop-criteria learning runs (``learning`` marker): the tuned examples really solve their envs."""

from __future__ import annotations

import math
from typing import Any

import pytest

from training import metrics as m
from training.tuned_examples import load_tuned_example

pytestmark = pytest.mark.learning


def train_until_eval(
    example: str, *, target: float, max_env_steps: int, seed: int
) -> dict[str, Any]:
    """Train a tuned example; evaluate deterministically once training returns come close."""
    config = load_tuned_example(example).config
    config.debugging(seed=seed).evaluation(evaluation_duration=10)
    algo = config.build()
    best: dict[str, Any] = {"eval_return": -math.inf, "env_steps": 0}
    try:
        while True:
            result = algo.train()
            steps = result[m.NUM_ENV_STEPS_SAMPLED_LIFETIME]
            ret = result[m.ENV_RUNNER_RESULTS][m.EPISODE_RETURN_MEAN]
            if not math.isnan(ret) and ret >= 0.6 * target:
                evaluation = algo.evaluate()[m.ENV_RUNNER_RESULTS][m.EPISODE_RETURN_MEAN]
                if evaluation > best["eval_return"]:
                    best = {"eval_return": evaluation, "env_steps": steps}
                if evaluation >= target:
                    return best
            if steps >= max_env_steps:
                return best
    finally:
        algo.stop()


@pytest.mark.timeout(240)
def test_ppo_solves_cartpole() -> None:
    best = train_until_eval("cartpole_ppo", target=475, max_env_steps=200_000, seed=0)
    assert best["eval_return"] >= 475, best


@pytest.mark.timeout(300)
def test_dqn_solves_cartpole() -> None:
    best = train_until_eval("cartpole_dqn", target=475, max_env_steps=150_000, seed=1)
    assert best["eval_return"] >= 475, best


@pytest.mark.timeout(240)
def test_ppo_learns_pendulum_with_continuous_actions() -> None:
    """A random policy scores about -1200; the tuned example reaches about -250 by 100k steps."""
    config = load_tuned_example("pendulum_ppo").config.debugging(seed=0)
    with config.build() as algo:
        result = algo.train()
        first = result[m.ENV_RUNNER_RESULTS][m.EPISODE_RETURN_MEAN]
        while result[m.NUM_ENV_STEPS_SAMPLED_LIFETIME] < 150_000:
            result = algo.train()
            if result[m.ENV_RUNNER_RESULTS][m.EPISODE_RETURN_MEAN] >= -300:
                break
        final = result[m.ENV_RUNNER_RESULTS][m.EPISODE_RETURN_MEAN]
        assert first < -900, first
        assert final >= -400, final
        # The deterministic (mean-action) policy is at least as good as the sampled one.
        evaluation = algo.evaluate()[m.ENV_RUNNER_RESULTS][m.EPISODE_RETURN_MEAN]
        assert evaluation >= -400, evaluation


@pytest.mark.timeout(240)
def test_sac_solves_pendulum_within_20k_steps() -> None:
    """Deterministic evaluation >= -200 (rl-zoo SAC: -157 +- 89 after 20k steps).

    The tuned example evaluates after every 1,000-step iteration; seeds 0, 1 and 2 reach it
    at 4-6k, 4k and 4-5k steps (bench/train_pendulum.py, two runs).
    """
    config = load_tuned_example("pendulum_sac").config.debugging(seed=0)
    curve = []
    with config.build() as algo:
        while True:
            result = algo.train()
            steps = result[m.NUM_ENV_STEPS_SAMPLED_LIFETIME]
            evaluation = result[m.EVALUATION_RESULTS][m.ENV_RUNNER_RESULTS][m.EPISODE_RETURN_MEAN]
            curve.append((steps, round(evaluation)))
            if evaluation >= -200 or steps >= 20_000:
                break
    assert evaluation >= -200, curve
    assert curve[0][1] < -900, curve  # it started from a policy that cannot swing up
