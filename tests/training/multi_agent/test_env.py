"""The multi-agent env contract: make_multi_agent, the checker, the PettingZoo adapter."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from training.multi_agent import MultiAgentEnv, MultiAgentEnvError, make_multi_agent
from training.multi_agent.env import ALL, ContractChecker

BOX = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)


def test_make_multi_agent_runs_independent_copies_until_all_are_done() -> None:
    env = make_multi_agent("CartPole-v1")({"num_agents": 3})
    assert env.possible_agents == [0, 1, 2]
    assert env.observation_spaces[1] == gym.make("CartPole-v1").observation_space
    checker = ContractChecker(env, "cartpole x3")
    obs, infos = env.reset(seed=4)
    checker.reset(obs, infos)
    assert sorted(obs) == [0, 1, 2] and not np.allclose(obs[0], obs[1])  # distinct seeds
    left: list[int] = []
    for _ in range(600):
        actions = {agent: 1 for agent in obs}  # always right: every copy falls soon
        returned = env.step(actions)
        checker.step(actions, returned)
        obs, rewards, terminateds, truncateds, _ = returned
        assert set(rewards) == set(actions)
        left += [a for a in actions if terminateds[a]]
        obs = {a: o for a, o in obs.items() if not terminateds.get(a)}
        if terminateds[ALL]:
            break
    assert sorted(left) == [0, 1, 2] and not truncateds[ALL]


def test_the_env_is_named_for_configs_and_checkpoints() -> None:
    from training.config import env_to_json
    from training.envs import UnknownEnvError
    from training.multi_agent.env import multi_agent_creator

    cls = make_multi_agent("CartPole-v1")
    assert env_to_json(cls) == "make_multi_agent:CartPole-v1"
    env = multi_agent_creator("make_multi_agent:CartPole-v1", {"num_agents": 2})()
    assert isinstance(env, MultiAgentEnv) and env.possible_agents == [0, 1]
    with pytest.raises(UnknownEnvError, match="CartPol"):
        multi_agent_creator("make_multi_agent:CartPol-v1")


class Scripted(MultiAgentEnv):
    """Steps return what the test scripts."""

    def __init__(self, script: list[Any]) -> None:
        self.possible_agents = ["a", "b"]
        self.agents = ["a", "b"]
        self.observation_spaces = {"a": BOX, "b": BOX}
        self.action_spaces = {"a": gym.spaces.Discrete(2), "b": gym.spaces.Discrete(2)}
        self.script = script

    def reset(self, *, seed: Any = None, options: Any = None) -> Any:
        return {"a": np.zeros(2, np.float32), "b": np.zeros(2, np.float32)}, {}

    def step(self, action_dict: Any) -> Any:
        return self.script.pop(0)


OK = np.zeros(2, np.float32)


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([({"a": OK}, {"a": 1.0}, {"a": False}, {"a": False}, {})], "terminateds has no '__all__'"),
        ([({"a": OK}, {}, {ALL: False}, {}, {})], "truncateds has no '__all__'"),
        ([[{}, {}, {}, {}]], r"step\(\) must return"),
        ([({"a": OK + 5}, {}, {ALL: False}, {ALL: False}, {})], r"observations\['a'\]: outside"),
        ([({"z": OK}, {}, {ALL: False}, {ALL: False}, {})], r"observations\['z'\]: unknown agent"),
        ([({"a": OK}, {"a": "x"}, {ALL: False}, {ALL: False}, {})], r"rewards\['a'\]: expected"),
        (
            [
                ({"b": OK}, {}, {"a": True, ALL: False}, {ALL: False}, {}),
                ({"a": OK, "b": OK}, {}, {ALL: False}, {ALL: False}, {}),
            ],
            r"step 2: observations\['a'\]: agent 'a' already left",
        ),
        ([({}, [], {ALL: False}, {ALL: False}, {})], "rewards: expected a dict"),
    ],
)
def test_the_checker_names_the_agent_and_the_key(steps: list[Any], message: str) -> None:
    env = Scripted(list(steps))
    checker = ContractChecker(env, "scripted")
    checker.reset(*env.reset())
    with pytest.raises(MultiAgentEnvError, match=message):
        for _ in range(len(steps)):
            actions: dict[Any, Any] = {"a": 0, "b": 0}
            checker.step(actions, env.step(actions))


def test_a_plain_gymnasium_env_is_refused() -> None:
    with pytest.raises(MultiAgentEnvError, match=r"not a training\.MultiAgentEnv"):
        ContractChecker(gym.make("CartPole-v1"), "cartpole")  # type: ignore[arg-type]


def test_the_pettingzoo_adapter_speaks_the_contract() -> None:
    pytest.importorskip("mpe2")
    from mpe2 import simple_spread_v3

    from training.multi_agent.pettingzoo import ParallelPettingZooEnv

    env = ParallelPettingZooEnv(simple_spread_v3.parallel_env(N=2, max_cycles=5))
    checker = ContractChecker(env, "simple_spread")
    obs, infos = env.reset(seed=0)
    checker.reset(obs, infos)
    assert sorted(obs) == ["agent_0", "agent_1"] and env.agents == ["agent_0", "agent_1"]
    for step in range(5):
        actions = {agent: env.action_spaces[agent].sample() for agent in obs}
        returned = env.step(actions)
        checker.step(actions, returned)
        obs, _, terminateds, truncateds, _ = returned
        assert truncateds[ALL] == (step == 4) and not terminateds[ALL]
    assert env.agents == []
