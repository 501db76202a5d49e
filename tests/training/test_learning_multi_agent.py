"""Multi-agent learning runs (``learning`` marker), in a file of their own so that
``make test``'s two workers spread the learning runs (a file stays on one worker).
"""

from __future__ import annotations

import pytest

from training import PPOConfig
from training import metrics as m
from training.tuned_examples import load_tuned_example

pytestmark = pytest.mark.learning


@pytest.mark.timeout(180)
def test_two_policies_solve_two_agent_cartpole() -> None:
    """Two agents, two PPO policies: a summed mean return of 800 within 300k env steps
    (RLlib's tuned-example bar). Seed 0 reaches it at ~82k env steps (~19 s)."""
    example = load_tuned_example("multi_agent_cartpole_ppo")
    config = example.config.debugging(seed=0)
    with config.build() as algo:
        while True:
            result = algo.train()
            steps = int(result[m.NUM_ENV_STEPS_SAMPLED_LIFETIME])
            runners = result[m.ENV_RUNNER_RESULTS]
            if runners[m.EPISODE_RETURN_MEAN] >= 800 or steps >= 300_000:
                break
    assert runners[m.EPISODE_RETURN_MEAN] >= 800, (steps, runners)
    per_module = runners[m.MODULE_EPISODE_RETURNS_MEAN]
    assert set(per_module) == {"p0", "p1"} and min(per_module.values()) >= 300, per_module


@pytest.mark.timeout(180)
def test_a_shared_policy_improves_on_pettingzoo_simple_spread() -> None:
    """MPE2's simple_spread (two agents cover two landmarks) through the PettingZoo adapter,
    one policy shared by both agents: the mean return rises from the first iteration's
    (a random policy's, about -43) by at least 7 within 24k env steps (~-33 after 20k)."""
    pytest.importorskip("mpe2")
    config = (
        PPOConfig()
        .environment("training.example_envs:SimpleSpread", env_config={"N": 2, "max_cycles": 25})
        .env_runners(num_envs_per_env_runner=8)
        .training(train_batch_size=2000, minibatch_size=500, num_epochs=10, lr=0.001, gamma=0.95)
        .multi_agent(policies={"shared"})
        .debugging(seed=0)
    )
    returns: list[float] = []
    with config.build() as algo:
        while len(returns) < 12:
            result = algo.train()
            returns.append(round(float(result[m.ENV_RUNNER_RESULTS][m.EPISODE_RETURN_MEAN]), 1))
    assert max(returns[4:]) >= returns[0] + 7, returns
    print(f"\nsimple_spread mean returns per 2k env steps: {returns}")
