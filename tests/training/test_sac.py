"""SAC: the squashed Gaussian, the config, one update by hand, a tiny real training, checkpoints."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from tests.helpers.configs import tiny_sac
from training import SAC, Algorithm, ConfigError, SACConfig
from training import metrics as m
from training.algorithms.sac.learner import SACLearner
from training.algorithms.sac.module import SACModule
from training.config_sections import ModelConfig
from training.distributions import SquashedGaussian
from training.replay_buffers import PrioritizedReplayBuffer, ReplayBatch

SMALL = ModelConfig(fcnet_hiddens=[16, 16], fcnet_activation="relu")


class _AsymmetricEnv(gym.Env[np.ndarray, np.ndarray]):
    """One-step-per-move env with asymmetric action bounds; reward is highest at action (2, 0.4)."""

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 - gymnasium's own attribute

    def __init__(self, env_config: dict[str, Any] | None = None) -> None:
        self.observation_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Box(
            np.array([-1.0, 0.0], np.float32), np.array([3.0, 0.5], np.float32)
        )
        self.steps = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.steps = 0
        return self.np_random.uniform(-1, 1, 2).astype(np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        assert self.action_space.contains(action), action
        self.steps += 1
        reward = -float(np.sum((action - np.array([2.0, 0.4])) ** 2))
        obs = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        return obs, reward, False, self.steps >= 10, {}


def _module(action_space: gym.spaces.Box, twin_q: bool = True) -> SACModule:
    obs_space = gym.spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
    return SACModule(obs_space, action_space, SMALL, SMALL, observation_filter=False, twin_q=twin_q)


# ----------------------------------------------------------------- the squashed Gaussian
def test_squashed_gaussian_stays_in_asymmetric_bounds_and_its_density_integrates_to_one() -> None:
    low, high = torch.tensor([-1.0]), torch.tensor([3.0])
    inputs = torch.tensor([[0.7, math.log(1.5)]])
    dist = SquashedGaussian(inputs, low, high, (1,))
    generator = torch.Generator().manual_seed(0)
    samples = torch.cat([dist.sample(generator) for _ in range(2000)])
    assert samples.min() >= -1.0 and samples.max() <= 3.0
    # The density over the bounds integrates to 1 (change of variables done right).
    grid = torch.linspace(-1.0 + 1e-4, 3.0 - 1e-4, 20001).reshape(-1, 1)
    batch = SquashedGaussian(inputs.expand(len(grid), 2), low, high, (1,))
    density = batch.log_prob(grid).exp()
    assert float(torch.trapezoid(density, grid.squeeze(1))) == pytest.approx(1.0, abs=2e-3)
    # The mode of the evaluation policy: the squashed mean, rescaled.
    expected = -1.0 + (math.tanh(0.7) + 1.0) * 2.0
    assert float(dist.deterministic()) == pytest.approx(expected, rel=1e-6)


def test_rsample_log_prob_equals_log_prob_of_the_sample_and_carries_gradients() -> None:
    inputs = torch.tensor([[0.2, -0.3, -0.5, 0.1]] * 4, requires_grad=True)
    dist = SquashedGaussian(inputs, torch.tensor([-2.0, 0.0]), torch.tensor([2.0, 1.0]), (2,))
    actions, logp = dist.rsample(torch.Generator().manual_seed(3))
    torch.testing.assert_close(logp, dist.log_prob(actions), rtol=1e-4, atol=1e-4)
    # Reparameterised: gradients reach the inputs.
    (actions.sum() + logp.sum()).backward()  # type: ignore[no-untyped-call]
    assert inputs.grad is not None and inputs.grad.abs().sum() > 0


# ----------------------------------------------------------------- config
def test_config_has_rllib_names_defaults_and_eager_validation() -> None:
    config = SACConfig()
    assert (config.twin_q, config.tau, config.initial_alpha, config.target_entropy) == (
        True,
        0.005,
        1.0,
        "auto",
    )
    assert (config.gamma, config.n_step, config.train_batch_size) == (0.99, 1, 256)
    assert config.replay_buffer_config.prioritized is False
    assert config.model.fcnet_hiddens == [256, 256] and config.q_model.fcnet_activation == "relu"
    assert SACConfig().training(target_entropy=-3).target_entropy == -3.0
    with pytest.raises(ConfigError, match=r"unknown key 'twin_qs'.*did you mean 'twin_q'"):
        SACConfig().training(twin_qs=False)
    with pytest.raises(ConfigError, match=r"replay_buffer_config\.capacty"):
        SACConfig().training(replay_buffer_config={"capacty": 10})
    with pytest.raises(ConfigError, match="target_entropy: expected a float or 'auto'"):
        SACConfig().training(target_entropy="high")
    with pytest.raises(ConfigError, match="lr: SAC has one learning rate per loss"):
        SACConfig().training(lr=1e-3)
    round_trip = SACConfig.from_dict(tiny_sac().to_json_dict())
    assert round_trip == SACConfig.from_dict(tiny_sac().to_dict())


@pytest.mark.parametrize(
    ("space", "message"),
    [
        (gym.spaces.Discrete(3), "SAC needs a Box action space, got Discrete"),
        (gym.spaces.Box(-np.inf, np.inf, shape=(2,)), "must be finite"),
    ],
)
def test_action_spaces_sac_cannot_use_fail_at_build(space: gym.Space[Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _module(space)  # type: ignore[arg-type]


def test_build_fails_clearly_on_a_discrete_env() -> None:
    with pytest.raises(ConfigError, match="SAC needs a Box action space"):
        tiny_sac("CartPole-v1").build()


# ----------------------------------------------------------------- one update, by hand
def _batch(rows: int, *, terminated: bool, seed: int = 0) -> ReplayBatch:
    rng = np.random.default_rng(seed)
    return ReplayBatch(
        obs=[rng.uniform(-1, 1, (rows, 3)).astype(np.float32)],
        actions=rng.uniform(-2, 2, (rows, 1)).astype(np.float32),
        rewards=rng.normal(size=rows).astype(np.float32),
        next_obs=[rng.uniform(-1, 1, (rows, 3)).astype(np.float32)],
        terminated=np.full(rows, terminated),
        discounts=np.full(rows, 0.99, np.float32),
    )


def test_one_update_follows_the_paper_step_by_step() -> None:
    torch.manual_seed(0)
    module = _module(gym.spaces.Box(-2.0, 2.0, shape=(1,)))
    config = SACConfig().training(tau=0.1, initial_alpha=0.5).hyperparameters
    learner = SACLearner(module, config, torch.device("cpu"))
    assert learner.target_entropy == -1.0  # "auto" = -dim(A)
    batch = _batch(8, terminated=True)  # no bootstrap: the soft target is the reward
    obs = module.encode_inputs([torch.as_tensor(batch.obs[0])])
    with torch.no_grad():
        q_before = module.q_values(obs, torch.as_tensor(batch.actions) / 2.0)
    targets_before = [p.clone() for p in learner.target_q_networks.parameters()]
    actor_before = [p.clone() for p in learner.actor_params]
    result = learner.update(batch)
    expected = q_before[:, 0].numpy() - batch.rewards
    np.testing.assert_allclose(result.td_errors, expected, rtol=1e-5, atol=1e-6)
    expected_loss = 0.5 * ((q_before - torch.as_tensor(batch.rewards)[:, None]) ** 2).mean(0).sum()
    assert result.metrics["critic_loss"] == pytest.approx(float(expected_loss), rel=1e-5)
    assert result.metrics["alpha_value"] == pytest.approx(0.5)
    assert any((a != b).any() for a, b in zip(actor_before, learner.actor_params, strict=True))
    # Polyak: target <- tau * critic(after its step) + (1 - tau) * target.
    for before, target, online in zip(
        targets_before,
        learner.target_q_networks.parameters(),
        module.q_networks.parameters(),
        strict=True,
    ):
        torch.testing.assert_close(target, 0.9 * before + 0.1 * online)


def test_the_temperature_falls_while_the_policy_is_more_random_than_the_target() -> None:
    torch.manual_seed(1)
    module = _module(gym.spaces.Box(-1.0, 1.0, shape=(1,)))
    config = SACConfig().training(target_entropy=-5.0, alpha_lr=0.05).hyperparameters
    learner = SACLearner(module, config, torch.device("cpu"))
    for seed in range(5):
        result = learner.update(_batch(32, terminated=False, seed=seed))
    assert result.metrics["entropy"] > -5.0
    assert learner.alpha < 1.0


# ----------------------------------------------------------------- a tiny real training
@pytest.fixture(scope="module")
def trained() -> Any:
    algo = tiny_sac().build()
    results = [algo.train(), algo.train()]
    yield algo, results
    algo.stop()


def test_training_reports_the_sac_metrics(trained: Any) -> None:
    _, results = trained
    learner = results[-1][m.LEARNER_RESULTS][m.DEFAULT_POLICY_ID]
    for key in ("critic_loss", "actor_loss", "alpha_loss", "alpha_value", "mean_q", "entropy"):
        assert math.isfinite(learner[key]), key
    assert learner["num_updates"] > 0 and learner["replay_buffer_size"] > 0
    assert results[-1][m.ENV_RUNNER_RESULTS][m.NUM_EPISODES] >= 0
    assert results[-1][m.NUM_ENV_STEPS_SAMPLED_LIFETIME] >= 256


def test_actions_policy_distribution_and_q_values(trained: Any) -> None:
    algo, _ = trained
    obs = np.array([1.0, 0.0, 0.5], np.float32)
    policy = algo.get_policy()
    greedy = algo.compute_single_action(obs, explore=False)
    dist = policy.action_distribution([obs])
    assert isinstance(dist, SquashedGaussian)
    np.testing.assert_allclose(greedy, dist.deterministic().numpy()[0], rtol=1e-6)
    sampled = np.stack([algo.compute_single_action(obs, explore=True) for _ in range(200)])
    assert sampled.min() >= -2.0 and sampled.max() <= 2.0 and sampled.std() > 0
    q = policy.q_values([obs])
    assert q.shape == (1, 2)  # twin Q: one column per critic, for the deterministic action
    np.testing.assert_allclose(q, policy.q_values([obs], [greedy]), rtol=1e-6)


def test_checkpoint_round_trip_restores_actor_critics_alpha_and_optimizers(
    trained: Any, tmp_path: Path
) -> None:
    algo, _ = trained
    path = algo.save(str(tmp_path / "ckpt")).checkpoint.path
    restored = Algorithm.from_checkpoint(path)
    try:
        assert isinstance(restored, SAC)
        obs = np.array([0.2, -0.4, 0.1], np.float32)
        np.testing.assert_array_equal(
            restored.compute_single_action(obs, explore=False),
            algo.compute_single_action(obs, explore=False),
        )
        assert restored.learner.alpha == pytest.approx(algo.learner.alpha)
        for a, b in zip(
            restored.learner.target_q_networks.parameters(),
            algo.learner.target_q_networks.parameters(),
            strict=True,
        ):
            torch.testing.assert_close(a, b)
        state = restored.learner.critic_optimizer.state_dict()["state"]
        original = algo.learner.critic_optimizer.state_dict()["state"]
        torch.testing.assert_close(state[0]["exp_avg"], original[0]["exp_avg"])
        assert restored.train()[m.LEARNER_RESULTS][m.DEFAULT_POLICY_ID]["num_updates"] > 0
    finally:
        restored.stop()


def test_asymmetric_bounds_and_prioritized_replay() -> None:
    config = tiny_sac(
        _AsymmetricEnv, replay_buffer_config={"capacity": 500, "prioritized": True}, n_step=2
    )
    with config.build() as algo:
        assert isinstance(algo, SAC)
        algo.train()
        assert isinstance(algo.replay_buffer, PrioritizedReplayBuffer)
        priorities = algo.replay_buffer.priorities()
        assert len(np.unique(np.round(priorities, 6))) > 1  # TD errors went back in
        actions = algo.compute_actions([np.zeros(2, np.float32)] * 64, explore=True)
        assert (actions[:, 0] >= -1).all() and (actions[:, 0] <= 3).all()
        assert (actions[:, 1] >= 0).all() and (actions[:, 1] <= 0.5).all()


@pytest.mark.parametrize("image", [False, True])
def test_structured_and_image_observations(image: bool) -> None:
    config = tiny_sac(
        "tests.helpers.envs:StructuredEnv",
        env_config={"continuous": True, "image": image},
        min_sample_timesteps_per_iteration=80,
    )
    with config.build() as algo:
        result = algo.train()
        assert result[m.LEARNER_RESULTS][m.DEFAULT_POLICY_ID]["num_updates"] > 0
        obs = algo.observation_space.sample()
        action = algo.compute_single_action(obs, explore=False)
        assert algo.action_space.contains(action)
