"""The multi-agent runner: several env copies, a module per policy, one fragment per policy."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from training import DQNConfig, PPOConfig
from training.multi_agent import MultiAgentEnv, MultiAgentEnvError
from training.multi_agent.env import ALL
from training.multi_agent.runner import MultiAgentEnvRunner
from training.multi_agent.segments import Segment, pack
from training.multi_agent.spec import MultiAgentSection


def by_index(agent_id: Any, episode: Any = None, **kwargs: Any) -> str:
    return f"p{agent_id}"


def cartpoles(agents: int = 2, copies: int = 3, config: Any = None) -> Any:
    return (
        (config or PPOConfig())
        .environment("make_multi_agent:CartPole-v1", env_config={"num_agents": agents})
        .env_runners(num_envs_per_env_runner=copies, rollout_fragment_length=40)
        .debugging(seed=0)
    )


def test_a_fragment_per_policy_holds_every_agent_step() -> None:
    section = MultiAgentSection(policies={"p0", "p1"}, policy_mapping_fn=by_index)
    runner = MultiAgentEnvRunner(cartpoles(), 0, section)
    sample = runner.sample()
    assert sample.env_steps == 3 * 40
    assert set(sample.fragments) == {"p0", "p1"}
    assert sum(int(f.valid.sum()) for f in sample.fragments.values()) == sample.agent_steps
    assert sample.agent_steps <= 2 * sample.env_steps  # a fallen pole waits for the other
    for fragment in sample.fragments.values():
        rows, columns = fragment.valid.shape
        assert fragment.obs[0].shape == (rows, columns, 4)
        assert fragment.extras["action_logp"].shape == (rows, columns)
        # Each column is one agent's steps: valid rows first, ending terminated or truncated.
        for c in range(columns):
            length = int(fragment.valid[:, c].sum())
            assert fragment.valid[:length, c].all()
            assert (fragment.terminated[:, c] | fragment.truncated[:, c]).sum() == 1
            assert fragment.terminated[length - 1, c] or fragment.truncated[length - 1, c]
            assert fragment.rewards[:length, c].tolist() == [1.0] * length  # CartPole's
    # Episodes: summed over both agents, and per agent and policy.
    assert sample.episode_returns, "no episode ended in 40 steps of 3 copies"
    for total, a0, a1 in zip(
        sample.episode_returns,
        sample.agent_episode_returns["0"],
        sample.agent_episode_returns["1"],
        strict=True,
    ):
        assert total == a0 + a1
    assert sample.module_episode_returns["p0"] == sample.agent_episode_returns["0"]


def test_agents_sharing_a_policy_are_batched_and_weights_go_per_policy() -> None:
    section = MultiAgentSection(policies={"shared"})
    runner = MultiAgentEnvRunner(cartpoles(agents=3, copies=2), 0, section)
    sample = runner.sample(10)
    assert list(sample.fragments) == ["shared"]
    assert sample.agent_steps == int(sample.fragments["shared"].valid.sum())
    weights = runner.get_weights()
    assert list(weights) == ["shared"]
    zeroed = {"shared": {k: np.zeros_like(v) for k, v in weights["shared"].items()}}
    runner.set_weights(zeroed, weights_version=7)
    assert all(not v.any() for v in runner.get_weights()["shared"].values())
    assert runner.sample(2).fragments["shared"].weights_version == 7


def test_dqn_modules_act_too() -> None:
    section = MultiAgentSection(policies={"p0", "p1"}, policy_mapping_fn=by_index)
    runner = MultiAgentEnvRunner(cartpoles(config=DQNConfig()), 0, section)
    sample = runner.sample(20)
    assert set(sample.fragments) == {"p0", "p1"}


def test_packing_bootstraps_each_segment_from_the_row_after_it() -> None:
    def segment(length: int, terminated: bool, start: float) -> Segment:
        s = Segment()
        for i in range(length):
            s.add([np.full(2, start + i, np.float32)], np.int64(i % 2), {"logp": np.float32(i)})
            s.reward(1.0)
        s.close(terminated, [np.full(2, start + 100, np.float32)])
        return s

    fragment = pack([segment(3, True, 0.0), segment(1, False, 10.0), segment(2, False, 20.0)])
    assert fragment.valid.T.tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    assert fragment.terminated[2, 0] and fragment.truncated[0, 1] and fragment.truncated[1, 2]
    # A shorter segment's bootstrap observation sits in the (invalid) row after it...
    assert fragment.obs[0][1, 1].tolist() == [110.0, 110.0]
    assert fragment.obs[0][2, 2].tolist() == [120.0, 120.0]
    # ...one as long as the fragment bootstraps from next_obs.
    assert fragment.next_obs[0][0].tolist() == [100.0, 100.0]
    assert fragment.rewards[:, 0].tolist() == [1.0, 1.0, 1.0]
    assert fragment.extras["logp"][:, 0].tolist() == [0.0, 1.0, 2.0]


class Turns(MultiAgentEnv):
    """Two agents take turns; a reward for both after each move; 'late' joins at step 2."""

    def __init__(self, config: Any = None) -> None:
        box = gym.spaces.Box(0.0, 10.0, (1,), np.float32)
        self.possible_agents = ["first", "second", "late"]
        self.agents = []
        self.observation_spaces = dict.fromkeys(self.possible_agents, box)
        self.action_spaces = dict.fromkeys(self.possible_agents, gym.spaces.Discrete(2))
        self.t = 0

    def reset(self, *, seed: Any = None, options: Any = None) -> Any:
        self.t = 0
        return {"first": np.zeros(1, np.float32)}, {}

    def step(self, action_dict: Any) -> Any:
        self.t += 1
        obs = np.full(1, self.t, np.float32)
        mover = "second" if self.t % 2 else "first"
        observations = {mover: obs}
        if self.t == 2:
            observations["late"] = obs
        rewards = {"first": 1.0, "second": 2.0}
        done = self.t >= 6
        return observations, rewards, {ALL: done}, {ALL: False}, {}


def test_turn_taking_agents_act_only_with_an_observation_and_collect_rewards_between() -> None:
    config = (
        PPOConfig()
        .environment(Turns)
        .env_runners(num_envs_per_env_runner=1, rollout_fragment_length=6)
    )
    runner = MultiAgentEnvRunner(config, 0, MultiAgentSection(policies={"shared"}))
    sample = runner.sample()
    fragment = sample.fragments["shared"]
    assert sample.episode_returns == [6 * 1.0 + 6 * 2.0]
    assert sample.agent_episode_returns == {"first": [6.0], "second": [12.0]}
    # 'late' saw one observation (acted at step 3); 'first' acted at steps 1, 3, 5 and
    # 'second' at 2, 4, 6: each gets the rewards until its next action on its last row.
    lengths = sorted(int(fragment.valid[:, c].sum()) for c in range(fragment.valid.shape[1]))
    assert lengths == [1, 3, 3]
    totals = sorted(float(fragment.rewards[:, c].sum()) for c in range(fragment.valid.shape[1]))
    # late: none; first: (1+1) x 3; second: (2+2) + (2+2) + 2 (step 1's 2 came before it acted)
    assert totals == [0.0, 6.0, 10.0]


def test_a_mapping_to_an_unknown_policy_fails_at_the_runner() -> None:
    section = MultiAgentSection(policies={"p0"}, policy_mapping_fn=by_index)
    with pytest.raises(ValueError, match="returned 'p1', which is not a policy"):
        MultiAgentEnvRunner(cartpoles(), 0, section)


def test_a_single_agent_env_is_refused() -> None:
    config = PPOConfig().environment("CartPole-v1")
    with pytest.raises(MultiAgentEnvError, match=r"not a training\.MultiAgentEnv"):
        MultiAgentEnvRunner(config, 0, MultiAgentSection(policies={"p"}))


def test_traces_hold_a_row_per_agent_step(tmp_path: Any) -> None:
    from training.traces import read_traces

    config = (
        PPOConfig()
        .environment(Turns)
        .env_runners(num_envs_per_env_runner=1, rollout_fragment_length=6)
        .offline_data(output=str(tmp_path))
    )
    runner = MultiAgentEnvRunner(config, 0, MultiAgentSection(policies={"shared"}))
    runner.sample()
    runner.stop()
    (episode,) = read_traces(tmp_path)
    assert episode["agent_id"] == ["first", "second", "first", "late", "second", "first", "second"]
    assert episode["env_step"] == [0, 1, 2, 2, 3, 4, 5]
    assert set(episode["policy_id"]) == {"shared"}
    assert episode["rewards"] == [2.0, 4.0, 2.0, 0.0, 4.0, 2.0, 2.0]
    assert episode["return"] == 18.0 and episode["length"] == 6
    assert episode["terminated"][-1] and episode["obs"][1] == [[1.0]]
