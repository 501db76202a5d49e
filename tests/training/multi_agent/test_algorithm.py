"""PPO and DQN on a policy map: results, policy access, checkpoints, remote runners."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from training import Algorithm, ConfigError, DQNConfig, IMPALAConfig, PPOConfig, SACConfig
from training.algorithms.dqn.dqn import MultiAgentDQN
from training.algorithms.impala.impala import MultiAgentIMPALA
from training.algorithms.ppo.ppo import MultiAgentPPO
from training.algorithms.sac.sac import MultiAgentSAC
from training.checkpoints import CheckpointError, load_module
from training.multi_agent import MultiAgentEnv
from training.multi_agent.env import ALL

ROOT = Path(__file__).resolve().parents[3]
OBS = {0: [0.01, 0.02, -0.01, 0.0], 1: [-0.02, 0.0, 0.03, 0.01]}


def by_index(agent_id: Any, episode: Any = None, **kwargs: Any) -> str:
    return f"p{agent_id}"


def two_cartpoles(config: Any = None, **multi_agent: Any) -> Any:
    settings = {"policies": {"p0", "p1"}, "policy_mapping_fn": by_index, **multi_agent}
    return (
        (config or PPOConfig().training(train_batch_size=256, minibatch_size=64, num_epochs=2))
        .environment("make_multi_agent:CartPole-v1", env_config={"num_agents": 2})
        .env_runners(num_envs_per_env_runner=2)
        .multi_agent(**settings)
        .debugging(seed=0)
    )


def test_ppo_trains_each_policy_and_reports_agents_and_modules(tmp_path: Path) -> None:
    with two_cartpoles().build() as algo:
        assert isinstance(algo, MultiAgentPPO)
        result = algo.train()
        result = algo.train()
        runners = result["env_runners"]
        assert set(result["learners"]) == {"p0", "p1"}
        assert np.isfinite(result["learners"]["p0"]["policy_loss"])
        assert set(runners["agent_episode_returns_mean"]) == {"0", "1"}
        assert set(runners["module_episode_returns_mean"]) == {"p0", "p1"}
        total = (
            runners["agent_episode_returns_mean"]["0"] + runners["agent_episode_returns_mean"]["1"]
        )
        assert runners["episode_return_mean"] == pytest.approx(total)
        assert result["num_env_steps_sampled_lifetime"] >= 512
        assert result["num_agent_steps_sampled_lifetime"] > result["num_env_steps_sampled_lifetime"]
        # Policy access: by id, per agent through the mapping, weights per policy.
        action = algo.compute_single_action(OBS[0], policy_id="p1", explore=False)
        assert action in (0, 1)
        actions = algo.compute_agent_actions(OBS, explore=False)
        assert actions == {
            agent: algo.get_policy(f"p{agent}").compute_single_action(obs, explore=False)
            for agent, obs in OBS.items()
        }
        with pytest.raises(ValueError, match="policy_id 'p9': no such policy"):
            algo.get_policy("p9")
        weights = algo.get_weights(["p0"])
        assert list(weights) == ["p0"]
        # One safetensors file per policy and the policies as JSON; never the function.
        path = Path(algo.save(str(tmp_path / "ckpt")).checkpoint.path)
        files = sorted(p.name for p in path.iterdir())
        assert "module.p0.safetensors" in files and "module.p1.safetensors" in files
        spec = json.loads((path / "multi_agent.json").read_text())
        assert spec["policy_mapping_fn"] == f"{__name__}:by_index"
        assert spec["policies"]["p0"]["observation_space"]["type"] == "Box"
        before = {agent: algo.compute_agent_actions(OBS, explore=False)[agent] for agent in OBS}
        state = algo.get_weights()
    # A fresh process restores every policy bit for bit, and acts the same.
    code = (
        "import json, hashlib\n"
        "from training import Algorithm\n"
        f"algo = Algorithm.from_checkpoint({str(path)!r})\n"
        "w = algo.get_weights()\n"
        "digest = {p: hashlib.sha256(b''.join(w[p][k].tobytes() for k in sorted(w[p]))).hexdigest()"
        " for p in w}\n"
        f"obs = {OBS!r}\n"
        "print(json.dumps({'digest': digest, 'actions': {str(a): v for a, v in "
        "algo.compute_agent_actions(obs, explore=False).items()}}))\n"
        "algo.stop()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    fresh = json.loads(out.stdout.strip().splitlines()[-1])
    import hashlib

    expected = {
        p: hashlib.sha256(b"".join(state[p][k].tobytes() for k in sorted(state[p]))).hexdigest()
        for p in state
    }
    assert fresh["digest"] == expected
    assert fresh["actions"] == {str(a): v for a, v in before.items()}
    # A subset of the policies, with a mapping to it.
    with Algorithm.from_checkpoint(
        path, policy_ids=["p1"], policy_mapping_fn=lambda agent, episode=None, **kw: "p1"
    ) as one:
        assert isinstance(one, MultiAgentPPO) and list(one.modules) == ["p1"]
        np.testing.assert_array_equal(
            one.get_weights()["p1"]["pi_head.weight"], state["p1"]["pi_head.weight"]
        )
    with pytest.raises(CheckpointError, match=r"no policies \['p9'\]"):
        Algorithm.from_checkpoint(path, policy_ids=["p9"])
    # Export's loader takes one policy, named.
    module, contents = load_module(path, policy_id="p0")
    assert contents.metadata["policy_id"] == "p0"
    np.testing.assert_array_equal(
        module.state_dict()["pi_head.weight"].numpy(), state["p0"]["pi_head.weight"]
    )
    with pytest.raises(CheckpointError, match="name one"):
        load_module(path)


def test_a_lambda_mapping_is_passed_again_on_restore(tmp_path: Path) -> None:
    config = two_cartpoles(policy_mapping_fn=lambda agent, episode=None, **kw: f"p{agent}")
    with config.build() as algo:
        path = algo.save(str(tmp_path / "ckpt")).checkpoint.path
    with pytest.raises(ConfigError, match=r"pass policy_mapping_fn=\.\.\. again"):
        Algorithm.from_checkpoint(path)
    with Algorithm.from_checkpoint(path, policy_mapping_fn=by_index) as restored:
        assert isinstance(restored, MultiAgentPPO) and sorted(restored.modules) == ["p0", "p1"]


def test_dqn_trains_only_the_policies_to_train() -> None:
    config = DQNConfig().training(
        num_steps_sampled_before_learning_starts=32, min_sample_timesteps_per_iteration=128
    )
    with two_cartpoles(config, policies_to_train=["p0"]).build() as algo:
        assert isinstance(algo, MultiAgentDQN)
        fixed = algo.get_weights(["p1"])["p1"]
        result = algo.train()
        assert list(result["learners"]) == ["p0"]
        assert result["learners"]["p0"]["num_updates"] > 0
        after = algo.get_weights(["p1"])["p1"]
        assert all(np.array_equal(fixed[k], after[k]) for k in fixed)  # acts, never updates
        assert algo.train()["learners"]["p0"]["replay_buffer_size"] > 0


def test_sac_trains_a_policy_map_on_continuous_actions(tmp_path: Path) -> None:
    config = (
        SACConfig()
        .environment("make_multi_agent:Pendulum-v1", env_config={"num_agents": 2})
        .env_runners(num_envs_per_env_runner=1, rollout_fragment_length=4)
        .training(
            num_steps_sampled_before_learning_starts=16,
            min_sample_timesteps_per_iteration=32,
            train_batch_size=16,
        )
        .multi_agent(policies={"shared"})
        .debugging(seed=0)
    )
    with config.build() as algo:
        assert isinstance(algo, MultiAgentSAC)
        learner = algo.train()["learners"]["shared"]
        assert learner["num_updates"] > 0 and np.isfinite(learner["critic_loss"])
        path = algo.save(str(tmp_path / "ckpt")).checkpoint.path
        action = algo.compute_single_action([1.0, 0.0, 0.0], policy_id="shared", explore=False)
    with Algorithm.from_checkpoint(path) as restored:
        again = restored.compute_single_action([1.0, 0.0, 0.0], explore=False)
        np.testing.assert_array_equal(again, action)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (lambda: two_cartpoles(policy_mapping_fn=lambda a, e=None: "p9"), "returned 'p9'"),
        (lambda: two_cartpoles(policies={"p0"}, policy_mapping_fn=None), None),
        (
            lambda: two_cartpoles().training(model={"use_lstm": True}),
            "not with use_lstm",
        ),
        (lambda: two_cartpoles().learners(num_learners=1), "not with num_learners > 0"),
    ],
)
def test_what_cannot_work_fails_at_build_naming_it(config: Any, message: str | None) -> None:
    if message is None:  # one policy and no mapping: every agent plays it
        with config().build() as algo:
            assert list(algo.modules) == ["p0"]
        return
    with pytest.raises(ConfigError, match=message):
        config().build()


@pytest.mark.integration
def test_remote_runners_sample_the_policy_map(ray_session: Any) -> None:
    config = two_cartpoles().env_runners(num_env_runners=2)
    with config.build() as algo:
        result = algo.train()
        assert result["num_remote_env_runners"] == 2
        assert set(result["learners"]) == {"p0", "p1"}
        names = algo.env_runner_group.foreach_worker(lambda runner: sorted(runner.modules))
        assert names == [["p0", "p1"]] * 3  # the local runner and both actors
        weights = algo.env_runner_group.foreach_worker(
            lambda runner: runner.get_weights(["p0"])["p0"]["pi_head.bias"].tolist(),
            local_env_runner=False,
        )
        expected = algo.get_weights(["p0"])["p0"]["pi_head.bias"].tolist()
        assert weights == [expected, expected]


def test_each_policy_keeps_its_own_observation_filter(tmp_path: Path) -> None:
    config = two_cartpoles().env_runners(observation_filter="MeanStdFilter")
    with config.build() as algo:
        algo.train()
        means = {pid: algo.modules[pid].obs_filter.mean.clone() for pid in ("p0", "p1")}
        assert all(mean.abs().sum() > 0 for mean in means.values())
        assert not np.allclose(means["p0"].numpy(), means["p1"].numpy())  # different agents
        counts = {pid: stat.count for pid, stat in algo.filter_stats.items()}
        path = Path(algo.save(str(tmp_path / "ckpt")).checkpoint.path)
    assert (path / "filter_state.p0.json").exists() and (path / "filter_state.p1.json").exists()
    with Algorithm.from_checkpoint(path) as restored:
        assert isinstance(restored, MultiAgentPPO)
        assert {pid: s.count for pid, s in restored.filter_stats.items()} == counts
        np.testing.assert_array_equal(
            restored.modules["p0"].obs_filter.mean.numpy(), means["p0"].numpy()
        )


def impala_cartpoles(**runners: Any) -> Any:
    config = IMPALAConfig().training(train_batch_size=64, min_sample_timesteps_per_iteration=128)
    return two_cartpoles(config).env_runners(rollout_fragment_length=16, **runners)


def test_impala_trains_each_policy_in_turn(tmp_path: Path) -> None:
    with impala_cartpoles().build() as algo:
        assert isinstance(algo, MultiAgentIMPALA)
        result = algo.train()
        assert set(result["learners"]) == {"p0", "p1"}
        for pid in ("p0", "p1"):  # in turn: no lag, V-trace's ratios are exactly 1
            assert result["learners"][pid]["mean_rho"] == pytest.approx(1.0, abs=1e-5)
        assert result["weights_version"] == algo.num_updates > 0
        path = algo.save(str(tmp_path / "ckpt")).checkpoint.path
        updates = algo.num_updates
    with Algorithm.from_checkpoint(path) as restored:
        assert isinstance(restored, MultiAgentIMPALA) and restored.num_updates == updates


@pytest.mark.integration
def test_impala_learns_asynchronously_from_remote_runners(ray_session: Any) -> None:
    with impala_cartpoles(num_env_runners=2).build() as algo:
        result = algo.train()
        result = algo.train()
        assert set(result["learners"]) == {"p0", "p1"}
        assert result["learners"]["p0"]["num_updates"] >= 1
        assert result["num_env_steps_sampled_lifetime"] >= 256
        assert result["weights_version"] == algo.num_updates


def test_evaluation_plays_episodes_with_every_policy() -> None:
    config = two_cartpoles().evaluation(evaluation_interval=1, evaluation_duration=3)
    with config.build() as algo:
        evaluation = algo.train()["evaluation"]["env_runners"]
        assert evaluation["num_episodes"] == 3
        agents, modules = (
            evaluation["agent_episode_returns_mean"],
            evaluation["module_episode_returns_mean"],
        )
        assert set(agents) == {"0", "1"} and set(modules) == {"p0", "p1"}
        assert evaluation["episode_return_mean"] >= evaluation["episode_return_min"] > 0
        again = algo.evaluate()["env_runners"]  # seeded alike: the same start states
        assert again["episode_return_mean"] == pytest.approx(evaluation["episode_return_mean"])


class Mixed(MultiAgentEnv):
    """A scout sees 2 numbers and moves left or right; a tank sees 3 and picks one of 3."""

    def __init__(self, config: Any = None) -> None:
        self.possible_agents = ["scout", "tank"]
        self.agents = []
        self.observation_spaces = {
            "scout": gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
            "tank": gym.spaces.Box(-1.0, 1.0, (3,), np.float32),
        }
        self.action_spaces = {"scout": gym.spaces.Discrete(2), "tank": gym.spaces.Discrete(3)}
        self.t = 0

    def _obs(self) -> dict[Any, np.ndarray]:
        value = 0.1 * (self.t % 5)
        return {"scout": np.full(2, value, np.float32), "tank": np.full(3, value, np.float32)}

    def reset(self, *, seed: Any = None, options: Any = None) -> Any:
        self.t = 0
        return self._obs(), {}

    def step(self, action_dict: Any) -> Any:
        self.t += 1
        rewards = {"scout": float(action_dict["scout"] == 1), "tank": float(action_dict["tank"])}
        done = self.t >= 10
        return self._obs(), rewards, {ALL: done}, {ALL: False}, {}


def test_policies_of_different_spaces_train_side_by_side(tmp_path: Path) -> None:
    config = (
        PPOConfig()
        .environment(Mixed)
        .env_runners(num_envs_per_env_runner=2, rollout_fragment_length=20)
        .training(train_batch_size=40, minibatch_size=20, num_epochs=1)
        .multi_agent(policies={"scout", "tank"}, policy_mapping_fn=lambda a, e=None, **k: a)
        .debugging(seed=0)
    )
    with config.build() as algo:
        result = algo.train()
        assert set(result["learners"]) == {"scout", "tank"}
        assert isinstance(algo, MultiAgentPPO)
        assert algo.policy_specs["tank"].spaces[0].shape == (3,)
        assert algo.compute_single_action([0.0, 0.0, 0.0], policy_id="tank") in (0, 1, 2)
        assert result["env_runners"]["episode_return_mean"] > 0


@pytest.mark.integration
def test_tune_trains_a_policy_map(ray_session: Any, tmp_path: Path) -> None:
    """Tune's "PPO" trainable builds the policy map from the config it is given."""
    from ray import tune

    tuner = tune.Tuner(
        "PPO",
        param_space=two_cartpoles(),
        run_config=tune.RunConfig(
            stop={"training_iteration": 1}, storage_path=str(tmp_path), verbose=0
        ),
    )
    grid = tuner.fit()
    assert len(grid) == 1
    result = grid[0]
    assert result.error is None and result.metrics is not None
    assert set(result.metrics["learners"]) == {"p0", "p1"}
    assert set(result.metrics["env_runners"]["module_episode_returns_mean"]) == {"p0", "p1"}
    assert result.checkpoint is not None
    assert (Path(result.checkpoint.path) / "multi_agent.json").exists()
