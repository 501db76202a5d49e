"""Data-parallel learners: ``learners(num_learners=N)`` for PPO and DQN on real Ray actors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.helpers.configs import tiny_dqn, tiny_impala, tiny_ppo, tiny_sac
from training import IMPALA, Algorithm, AlgorithmConfig
from training import metrics as m
from training.config import ConfigError
from training.distributed import LOCAL, Shard, all_reduce_gradients, all_reduce_metrics
from training.learner_group import LearnerGroupError

HALF_CPU = {"num_cpus_per_learner": 0.5}  # two learners fit the tests' 2-CPU Ray


def _learners(config: AlgorithmConfig, n: int) -> AlgorithmConfig:
    return config.learners(num_learners=n, **HALF_CPU)


def _all_weights(algo: Algorithm) -> list[dict[str, np.ndarray]]:
    assert algo.learner_group is not None
    return algo.learner_group.get_weights()


def _assert_identical(weights: list[dict[str, np.ndarray]], driver: dict[str, np.ndarray]) -> None:
    """Every learner holds the driver's module (its filter statistics aside: the driver merges
    the runners' new ones after an update and sends them with the next)."""
    for learner in weights:
        assert learner.keys() == driver.keys()
        for key, value in driver.items():
            if not key.startswith("obs_filter."):
                np.testing.assert_array_equal(learner[key], value, err_msg=key)
    for learner in weights[1:]:
        for key, value in weights[0].items():
            np.testing.assert_array_equal(learner[key], value, err_msg=key)


# ----------------------------------------------------------------- without Ray
def test_a_shard_takes_its_near_equal_part_of_every_minibatch() -> None:
    rows = torch.arange(129)
    parts = [Shard(rank, 2, seed=1).slice(rows) for rank in range(2)]
    assert [len(p) for p in parts] == [65, 64]
    assert torch.equal(torch.cat(parts), rows)
    assert LOCAL.slice(rows) is rows and LOCAL.generator(torch.device("cpu")) is None
    a, b = (Shard(r, 2, seed=7).generator(torch.device("cpu")) for r in range(2))
    assert torch.equal(torch.randperm(50, generator=a), torch.randperm(50, generator=b))


def test_without_a_process_group_the_collectives_change_nothing() -> None:
    layer = torch.nn.Linear(3, 2)
    layer(torch.ones(1, 3)).sum().backward()
    before = [p.grad.clone() for p in layer.parameters() if p.grad is not None]
    all_reduce_gradients(layer.parameters(), 0.5)
    after = [p.grad for p in layer.parameters() if p.grad is not None]
    assert all(torch.equal(x, y) for x, y in zip(before, after, strict=True))
    assert all_reduce_metrics({"kl": 0.25}, 0.5, torch.device("cpu")) == {"kl": 0.25}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            lambda: tiny_sac(replay_buffer_config={"prioritized": True}).learners(num_learners=2),
            "each learner computes its slice's",
        ),
        (lambda: tiny_ppo(minibatch_size=1).learners(num_learners=2), "at least one"),
        (lambda: tiny_ppo().learners(num_learners=2).resources(num_gpus=1), "num_gpus_per"),
    ],
)
def test_learner_settings_that_cannot_work_are_refused_at_build(config: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config().validate()


def test_learner_settings_are_validated_when_set() -> None:
    with pytest.raises(ConfigError, match="num_learners"):
        tiny_ppo().learners(num_learners=-1)
    with pytest.raises(ConfigError, match="num_cpus_per_learner"):
        tiny_ppo().learners(num_cpus_per_learner=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_a_gpu_for_the_drivers_learner_needs_cuda() -> None:
    with pytest.raises(ConfigError, match="no CUDA device"):
        tiny_ppo().learners(num_gpus_per_learner=1).validate()


# ----------------------------------------------------------------- real learner actors
@pytest.mark.integration
def test_two_ppo_learners_stay_identical_and_compute_one_learners_update(
    ray_session: Any,
) -> None:
    config = tiny_ppo(train_batch_size=128, minibatch_size=33, num_epochs=2)
    config.env_runners(observation_filter="MeanStdFilter")
    finals = []
    for n in (1, 2):
        with _learners(config.copy(), n).build() as algo:
            for _ in range(2):
                result = algo.train()
                _assert_identical(_all_weights(algo), algo.get_weights())
            assert result["learners"]["default_policy"]["num_module_steps_trained"] > 0
            finals.append(algo.get_weights())
    # The same minibatches, the same mean gradients: two learners make one learner's update
    # (up to float rounding of the split sums).
    for key, value in finals[0].items():
        np.testing.assert_allclose(finals[1][key], value, rtol=1e-4, atol=1e-5, err_msg=key)


@pytest.mark.integration
def test_two_recurrent_ppo_learners_split_the_sequences_and_compute_one_learners_update(
    ray_session: Any,
) -> None:
    config = tiny_ppo(
        "training.example_envs:StatelessCartPole",
        train_batch_size=96,
        minibatch_size=24,
        num_epochs=2,
        model={"use_lstm": True, "lstm_cell_size": 8, "max_seq_len": 4, "fcnet_hiddens": [16]},
    )
    finals = []
    for n in (1, 2):
        with _learners(config.copy(), n).build() as algo:
            for _ in range(2):
                algo.train()
                _assert_identical(_all_weights(algo), algo.get_weights())
            finals.append(algo.get_weights())
    for key, value in finals[0].items():
        np.testing.assert_allclose(finals[1][key], value, rtol=1e-4, atol=1e-5, err_msg=key)


@pytest.mark.integration
def test_ppo_learners_checkpoint_and_restore_into_every_learner(
    ray_session: Any, tmp_path: Path
) -> None:
    with _learners(tiny_ppo(kl_coeff=0.3), 2).build() as algo:
        algo.train()
        path = algo.save(str(tmp_path / "ckpt")).checkpoint.path
        saved = algo.get_weights()
        kl = algo.foreach_learner(lambda learner: learner.kl_coeff)
    assert kl[0] == kl[1]
    restored = Algorithm.from_checkpoint(path)
    try:
        assert restored.learner_group is not None
        _assert_identical(_all_weights(restored), saved)
        assert restored.foreach_learner(lambda learner: learner.kl_coeff) == kl
        steps = restored.foreach_learner(
            lambda learner: [
                s["step"].item() for s in learner.optimizer.state_dict()["state"].values()
            ]
        )
        assert steps[0] == steps[1] and steps[0][0] > 0  # Adam's state came back on both
    finally:
        restored.stop()


@pytest.mark.integration
def test_two_dqn_learners_keep_identical_online_and_target_networks(ray_session: Any) -> None:
    with _learners(tiny_dqn(), 2).build() as algo:
        result = algo.train()
        assert result["learners"]["default_policy"]["num_updates"] > 0
        _assert_identical(_all_weights(algo), algo.get_weights())
        targets = algo.foreach_learner(
            lambda learner: {k: v.numpy().copy() for k, v in learner.target.state_dict().items()}
        )
        _assert_identical(targets[1:], targets[0])


@pytest.mark.integration
def test_two_sac_learners_stay_identical_and_restore_from_a_checkpoint(
    ray_session: Any, tmp_path: Path
) -> None:
    def critics_and_alpha(learner: Any) -> dict[str, np.ndarray]:
        state = {f"target.{k}": v for k, v in learner.target_q_networks.state_dict().items()}
        return {
            **{k: v.numpy().copy() for k, v in state.items()},
            "log_alpha": learner.log_alpha.detach().numpy().copy(),
        }

    with _learners(tiny_sac(), 2).build() as algo:
        result = algo.train()
        learner = result["learners"]["default_policy"]
        assert learner["num_updates"] > 0 and np.isfinite(learner["critic_loss"])
        _assert_identical(_all_weights(algo), algo.get_weights())
        extras = algo.foreach_learner(critics_and_alpha)
        _assert_identical(extras[1:], extras[0])
        assert learner["alpha_value"] == pytest.approx(float(np.exp(extras[0]["log_alpha"])))
        path = algo.save(str(tmp_path / "ckpt")).checkpoint.path
        saved = algo.get_weights()
    with Algorithm.from_checkpoint(path) as restored:
        _assert_identical(_all_weights(restored), saved)
        back = restored.foreach_learner(critics_and_alpha)
        _assert_identical(back, extras[0])
        assert restored.train()["learners"]["default_policy"]["num_updates"] > 0


@pytest.mark.integration
def test_two_impala_learners_stay_identical_and_compute_one_learners_update(
    ray_session: Any, tmp_path: Path
) -> None:
    """Each learner takes half of every train batch's trajectories (in turn: no lag)."""
    config = tiny_impala()
    config.env_runners(observation_filter="MeanStdFilter")
    finals = []
    for n in (1, 2):
        with _learners(config.copy(), n).build() as algo:
            assert isinstance(algo, IMPALA)
            for _ in range(2):
                result = algo.train()
                _assert_identical(_all_weights(algo), algo.get_weights())
            learner = result["learners"]["default_policy"]
            assert learner["num_env_steps_trained"] > 0 and np.isfinite(learner["total_loss"])
            assert result[m.WEIGHTS_VERSION] == algo.num_updates > 0
            finals.append(algo.get_weights())
            if n == 2:
                path = algo.save(str(tmp_path / "ckpt")).checkpoint.path
                updates = algo.num_updates
    for key, value in finals[0].items():
        np.testing.assert_allclose(finals[1][key], value, rtol=1e-4, atol=1e-5, err_msg=key)
    with Algorithm.from_checkpoint(path) as restored:
        assert isinstance(restored, IMPALA)
        assert restored.num_updates == updates
        assert restored.foreach_learner(lambda learner: learner.num_updates) == [updates] * 2
        assert restored.train()[m.WEIGHTS_VERSION] > updates


@pytest.mark.integration
def test_impala_learner_actors_train_beside_asynchronous_runners(ray_session: Any) -> None:
    config = tiny_impala(num_env_runners=1, num_cpus_per_env_runner=0.5)
    with _learners(config, 2).build() as algo:
        assert isinstance(algo, IMPALA)
        result = algo.train()
        assert result[m.WEIGHTS_VERSION] == algo.num_updates > 0
        assert result["learners"]["default_policy"]["num_env_steps_trained"] > 0
        _assert_identical(_all_weights(algo), algo.get_weights())


@pytest.mark.integration
def test_learners_the_cluster_cannot_place_are_refused_at_once(ray_session: Any) -> None:
    config = tiny_ppo().learners(num_learners=3, num_cpus_per_learner=1)
    with pytest.raises(LearnerGroupError, match="needs 3 CPUs"):
        config.build()
