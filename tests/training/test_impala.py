"""IMPALA in the driver: config, learner, learner thread, a tiny training, checkpoints."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from tests.helpers.configs import tiny_impala
from training import IMPALA, Algorithm, ConfigError, IMPALAConfig
from training import metrics as m
from training.algorithms.impala.learner import IMPALALearner
from training.algorithms.ppo.module import PPOModule
from training.config_sections import ModelConfig
from training.env_runner import EnvRunner
from training.learner_thread import LearnerThread


# ----------------------------------------------------------------- config
def test_config_has_rllib_names_defaults_and_eager_validation() -> None:
    config = IMPALAConfig()
    assert config.vtrace is True
    assert config.vtrace_clip_rho_threshold == 1.0 and config.vtrace_clip_pg_rho_threshold == 1.0
    assert (config.vf_loss_coeff, config.entropy_coeff, config.grad_clip) == (0.5, 0.01, 40.0)
    assert (config.lr, config.train_batch_size, config.broadcast_interval) == (5e-4, 500, 1)
    assert config.learner_queue_size >= 1
    assert config.max_requests_in_flight_per_env_runner == 2
    assert config.get_rollout_fragment_length() == 50  # "auto" is RLlib's 50
    config.env_runners(rollout_fragment_length=20, max_requests_in_flight_per_env_runner=4)
    assert config.get_rollout_fragment_length() == 20
    with pytest.raises(ConfigError, match="vtrace_clip_rho"):
        IMPALAConfig().training(vtrace_clip_rho_threshold=0.0)
    with pytest.raises(ConfigError, match="max_requests_in_flight_per_env_runner"):
        IMPALAConfig().env_runners(max_requests_in_flight_per_env_runner=0)
    with pytest.raises(ConfigError, match="vtrace_clip"):
        IMPALAConfig().training(vtrace_clip=1.0)  # unknown key, named
    round_trip = IMPALAConfig.from_dict(tiny_impala().to_json_dict())
    assert round_trip == IMPALAConfig.from_dict(tiny_impala().to_dict())


# ----------------------------------------------------------------- the learner
def _runner_and_learner(**settings: Any) -> tuple[EnvRunner, IMPALALearner]:
    config = tiny_impala(**settings)
    runner = EnvRunner(config, 0)
    obs_space, act_space = runner.get_spaces()
    module = PPOModule(obs_space, act_space, config.model, observation_filter=False)
    runner.set_weights({k: v.numpy() for k, v in module.state_dict().items()})
    return runner, IMPALALearner(module, config.hyperparameters, torch.device("cpu"))


def test_an_update_on_fresh_fragments_has_unit_weights_and_moves_the_policy() -> None:
    runner, learner = _runner_and_learner()
    fragments = [runner.sample(), runner.sample()]
    before = [p.detach().clone() for p in learner.module.parameters()]
    stats = learner.update(fragments)
    # The runner sampled with the learner's weights: pi == mu, so every rho is 1.
    assert stats["mean_rho"] == pytest.approx(1.0, abs=1e-5)
    assert stats["max_rho"] == pytest.approx(1.0, abs=1e-5)
    assert stats["policy_lag_mean"] == 0.0
    assert stats["num_env_steps_trained"] == sum(f.num_env_steps for f in fragments)
    for key in ("policy_loss", "vf_loss", "entropy", "total_loss", "gradients_global_norm"):
        assert math.isfinite(stats[key]), key
    assert learner.num_updates == 1
    assert any(
        not torch.equal(a, b) for a, b in zip(before, learner.module.parameters(), strict=True)
    )

    # The next update on the same (now stale) fragments: weights move off 1, lag is 1.
    stats = learner.update(fragments)
    assert stats["policy_lag_mean"] == 1.0
    assert stats["mean_rho"] != pytest.approx(1.0, abs=1e-7)


def test_the_batch_puts_fragments_side_by_side_with_the_bootstrap_row() -> None:
    runner, learner = _runner_and_learner()
    first, second = runner.sample(), runner.sample()
    batch = learner.build_batch([first, second])
    steps, envs = first.rewards.shape
    assert batch.rewards.shape == (steps, 2 * envs)
    assert batch.obs[0].shape == (steps + 1, 2 * envs, 4)
    np.testing.assert_array_equal(batch.obs[0][-1, :envs].numpy(), first.next_obs[0])
    np.testing.assert_array_equal(
        batch.behaviour_logp[:, envs:].numpy(), second.extras["action_logp"]
    )
    with pytest.raises(ValueError, match="different lengths"):
        learner.build_batch([first, runner.sample(5)])


def test_without_vtrace_the_weights_are_ignored() -> None:
    runner, learner = _runner_and_learner(vtrace=False)
    fragments = [runner.sample()]
    learner.update(fragments)
    stats = learner.update(fragments)  # stale, but treated as on-policy
    assert stats["policy_lag_mean"] == 1.0
    assert math.isfinite(stats["policy_loss"])


# ----------------------------------------------------------------- the learner thread
def test_the_learner_thread_drops_the_oldest_batch_when_the_queue_is_full() -> None:
    release = threading.Event()
    seen: list[int] = []
    updates = {"n": 0}

    def update(item: int) -> dict[str, float]:
        release.wait(5)
        seen.append(item)
        updates["n"] += 1
        return {"item": float(item)}

    thread: LearnerThread[int] = LearnerThread(
        update,
        lambda: {"w": np.full(1, updates["n"])},
        lambda: updates["n"],
        queue_size=2,
        broadcast_interval=2,
    )
    thread.start()
    try:
        assert thread.submit(0) is False
        deadline = time.monotonic() + 5
        while thread.queue_length and time.monotonic() < deadline:  # the learner holds item 0
            time.sleep(0.005)
        assert [thread.submit(i) for i in (1, 2, 3, 4)] == [False, False, True, True]
        assert thread.num_batches_dropped == 2
        release.set()
        thread.drain()
        assert seen == [0, 3, 4]  # 1 and 2 waited longest and were dropped
        assert [s["item"] for s in thread.take_stats()] == [0.0, 3.0, 4.0]
        assert thread.take_stats() == []
        version, weights = thread.take_weights() or (None, None)
        assert version == 2 and weights is not None and weights["w"][0] == 2
        assert thread.take_weights() is None  # taken once; 3 updates, interval 2
    finally:
        thread.stop()
    assert not thread.is_alive()


def test_an_update_that_raises_is_re_raised_in_the_driver() -> None:
    def update(item: int) -> dict[str, float]:
        raise ValueError(f"bad batch {item}")

    thread: LearnerThread[int] = LearnerThread(
        update, dict, lambda: 0, queue_size=2, broadcast_interval=1
    )
    thread.start()
    try:
        thread.submit(7)
        with pytest.raises(RuntimeError, match="bad batch 7"):
            thread.drain()
        with pytest.raises(RuntimeError, match="learner thread failed"):
            thread.submit(8)
    finally:
        thread.stop()


# ----------------------------------------------------------------- a tiny real training
@pytest.fixture(scope="module")
def trained() -> Any:
    algo = tiny_impala(observation_filter="MeanStdFilter").build()
    results = [algo.train(), algo.train()]
    yield algo, results
    algo.stop()


def test_training_in_the_driver_reports_the_impala_metrics(trained: Any) -> None:
    algo, results = trained
    assert isinstance(algo, IMPALA)
    result = results[-1]
    learner = result[m.LEARNER_RESULTS][m.DEFAULT_POLICY_ID]
    for key in ("policy_loss", "vf_loss", "entropy", "mean_rho", "vf_explained_var"):
        assert key in learner, key
    assert learner["policy_lag_mean"] == 0.0  # in turn: always the newest weights
    assert learner["num_updates"] >= 2
    assert result[m.WEIGHTS_VERSION] == algo.learner.num_updates
    assert result[m.NUM_ENV_STEPS_TRAINED_THROUGHPUT] > 0
    assert result[m.NUM_ENV_STEPS_TRAINED_LIFETIME] > 0
    assert result[m.NUM_ENV_STEPS_SAMPLED_LIFETIME] >= 256
    assert not np.allclose(algo.get_weights()["obs_filter.mean"], 0.0)


def test_checkpoint_round_trip_restores_weights_optimizer_and_version(
    trained: Any, tmp_path: Path
) -> None:
    algo, _ = trained
    path = algo.save(str(tmp_path / "ckpt")).checkpoint.path
    restored = Algorithm.from_checkpoint(path)
    try:
        assert isinstance(restored, IMPALA)
        assert restored.learner.num_updates == algo.learner.num_updates
        obs = np.array([0.01, -0.02, 0.03, 0.04], np.float32)
        assert restored.compute_single_action(obs, explore=False) == algo.compute_single_action(
            obs, explore=False
        )
        for key, value in algo.get_weights().items():
            np.testing.assert_array_equal(restored.get_weights()[key], value)
        state = restored.learner.optimizer.state_dict()["state"]
        torch.testing.assert_close(
            state[0]["exp_avg"], algo.learner.optimizer.state_dict()["state"][0]["exp_avg"]
        )
        # The runner is told the restored version: the next fragments have no lag.
        result = restored.train()
        assert result[m.LEARNER_RESULTS][m.DEFAULT_POLICY_ID]["policy_lag_mean"] == 0.0
    finally:
        restored.stop()


@pytest.mark.parametrize(
    ("env", "env_config"),
    [
        ("Pendulum-v1", {}),
        ("tests.helpers.envs:StructuredEnv", {"continuous": False}),
        ("tests.helpers.envs:StructuredEnv", {"continuous": True, "image": True}),
    ],
)
def test_box_actions_and_structured_observations(env: str, env_config: dict[str, Any]) -> None:
    small = ModelConfig(fcnet_hiddens=[16], fcnet_activation="tanh").model_dump()
    with tiny_impala(env, env_config=env_config, model=small).build() as algo:
        result = algo.train()
        assert result[m.LEARNER_RESULTS][m.DEFAULT_POLICY_ID]["num_updates"] > 0
        obs = algo.observation_space.sample()
        for explore in (False, True):
            action = algo.compute_single_action(obs, explore=explore)
            if isinstance(algo.action_space, gym.spaces.Box) and explore:
                continue  # sampled Gaussian actions are unclipped, as PPO's
            assert algo.action_space.contains(np.asarray(action, algo.action_space.dtype))
