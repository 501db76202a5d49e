"""multi_agent()'s settings: policies, the mapping, which policies train, resolved spaces."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from pydantic import ValidationError

from training.multi_agent import PolicySpec
from training.multi_agent.spec import MultiAgentSection, mapping_to_json, resolve_policies

BOX2 = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
BOX3 = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
TWO = gym.spaces.Discrete(2)
AGENTS = ["red_0", "red_1", "blue_0"]
OBS = {"red_0": BOX2, "red_1": BOX2, "blue_0": BOX3}
ACT = dict.fromkeys(AGENTS, TWO)


def by_team(agent_id: Any, episode: Any = None, **kwargs: Any) -> str:
    return str(agent_id).split("_")[0]


def test_ids_or_specs_and_spaces_from_the_agents_mapped() -> None:
    section = MultiAgentSection(policies={"red", "blue"}, policy_mapping_fn=by_team)
    resolved = resolve_policies(section, AGENTS, OBS, ACT)
    assert resolved["red"].observation_space == BOX2 and resolved["blue"].observation_space == BOX3
    assert section.trained() == ["blue", "red"]
    fixed = MultiAgentSection(
        policies={"red": None, "blue": PolicySpec(config={"lr": 1e-4})},
        policy_mapping_fn=f"{__name__}:by_team",
        policies_to_train=["red"],
    )
    assert fixed.trained() == ["red"] and fixed.mapping()("blue_0") == "blue"
    assert resolve_policies(fixed, AGENTS, OBS, ACT)["blue"].config == {"lr": 1e-4}
    picked = MultiAgentSection(policies={"red", "blue"}, policy_mapping_fn=by_team,
                               policies_to_train=lambda pid, batch: pid == "blue")  # fmt: skip
    assert picked.trained() == ["blue"]


def test_one_policy_needs_no_mapping() -> None:
    section = MultiAgentSection(policies={"shared"})
    section.check()
    resolved = resolve_policies(section, ["red_0", "red_1"], OBS, ACT)
    assert list(resolved) == ["shared"]


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (dict(policies={"red", "blue"}, policy_mapping_fn=lambda a, e=None: "green"),
         "returned 'green', which is not a policy"),
        (dict(policies={"all"}, policy_mapping_fn=lambda a, e=None: "all"),
         "agents 'red_0' and 'blue_0' are mapped to it with different spaces"),
        (dict(policies={"red", "blue", "spare"}, policy_mapping_fn=by_team),
         "policy 'spare': no agent is mapped to it"),
    ],
)  # fmt: skip
def test_a_wrong_mapping_fails_when_resolved(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_policies(MultiAgentSection(**section), AGENTS, OBS, ACT)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (dict(policies={"a b"}), "policy id 'a b'"),
        (dict(policies={"red": 3}), "expected a PolicySpec"),
        (dict(policies={"red": {"lr": 1}}), "unknown keys"),
        (dict(policy_mapping_fn="nowhere:fn"), "cannot import 'nowhere:fn'"),
        (dict(policy_mapping_fn=3), "expected a function"),
        (dict(policies_to_train="red"), "expected None, a list"),
    ],
)  # fmt: skip
def test_bad_settings_are_refused_naming_them(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        MultiAgentSection(**section)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (dict(policies={"red", "blue"}), "2 policies need a mapping"),
        (dict(policies={"red"}, policies_to_train=["blue"]), r"unknown policies \['blue'\]"),
        (dict(policy_mapping_fn=by_team), "need policies"),
    ],
)  # fmt: skip
def test_inconsistent_settings_fail_the_check(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MultiAgentSection(**section).check()


def test_the_mapping_is_recorded_by_name_only() -> None:
    assert mapping_to_json(by_team) == f"{__name__}:by_team"
    assert mapping_to_json(lambda a, e=None: "x") is None
    assert mapping_to_json("pkg.mod:fn") == "pkg.mod:fn"
