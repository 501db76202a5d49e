"""Which policies a multi-agent config trains, and which agent each policy plays.

``config.multi_agent(policies=..., policy_mapping_fn=..., policies_to_train=...)`` (RLlib's
names) validates into :class:`MultiAgentSection`. :func:`resolve_policies` then fills in every
policy's spaces from the env's agents through the mapping, at ``build()``: a mapping that
returns an unknown policy, or agents of different spaces mapped to one policy, fail there,
named, before anything samples.

A checkpoint records the resolved policies (spaces as JSON, which ones train) and the mapping
function only by name (``"module:function"``), never its code: a lambda is not recorded, and
whoever restores passes it again.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import gymnasium as gym
from pydantic import Field, field_validator

from training.config_sections import Section
from training.config_validation import ConfigError

__all__ = [
    "DEFAULT_POLICY_ID",
    "MultiAgentSection",
    "PolicySpec",
    "import_function",
    "mapping_to_json",
    "policies_to_json",
    "policy_config",
]

DEFAULT_POLICY_ID = "default_policy"
_POLICY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
"""Policy ids name files and result keys: letters, digits, ``_.-``, at most 64."""


@dataclass(frozen=True)
class PolicySpec:
    """One policy of a multi-agent config.

    Attributes:
        observation_space: Its observation space (``None``: from the agents mapped to it).
        action_space: Its action space (``None``: likewise).
        config: Overrides of the algorithm's ``training()`` settings for this policy alone
            (e.g. ``{"lr": 1e-4}`` or ``{"model": {"fcnet_hiddens": [32]}}``).
    """

    observation_space: gym.Space[Any] | None = None
    action_space: gym.Space[Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def spaces(self) -> tuple[gym.Space[Any], gym.Space[Any]]:
        """Both spaces (of a resolved spec: :func:`resolve_policies` fills them in)."""
        if self.observation_space is None or self.action_space is None:
            raise ValueError("this PolicySpec's spaces are not resolved yet")
        return self.observation_space, self.action_space


def _spec(pid: str, value: Any) -> PolicySpec:
    if value is None:
        return PolicySpec()
    if isinstance(value, PolicySpec):
        return value
    if isinstance(value, Mapping):
        unknown = set(value) - {"observation_space", "action_space", "config"}
        if unknown:
            raise ValueError(f"policies[{pid!r}]: unknown keys {sorted(unknown)}")
        fields = dict(value)
        for key in ("observation_space", "action_space"):  # a checkpoint's JSON form
            if isinstance(fields.get(key), Mapping):
                from formats.spaces import space_from_json

                fields[key] = space_from_json(fields[key], f"policies[{pid!r}].{key}")
        fields["config"] = dict(fields.get("config") or {})
        return PolicySpec(**fields)
    raise ValueError(f"policies[{pid!r}]: expected a PolicySpec (or None), got {value!r}")


def import_function(spec: str, what: str) -> Callable[..., Any]:
    """The function a ``"module:function"`` string names.

    Raises:
        ValueError: Naming ``what`` and why it does not import.
    """
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise ValueError(f"{what}: expected 'module:function', got {spec!r}")
    try:
        target: Any = importlib.import_module(module_name)
        for part in name.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"{what}: cannot import {spec!r}: {err}") from None
    if not callable(target):
        raise ValueError(f"{what}: {spec!r} is not callable")
    return target  # type: ignore[no-any-return]


def mapping_to_json(fn: Any) -> str | None:
    """A mapping function's recorded name (``"module:function"``), or ``None``.

    ``None`` for a lambda or a local function: not recordable, passed again on restore.
    """
    if fn is None or isinstance(fn, str):
        return fn
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if module and qualname and "<" not in qualname:
        return f"{module}:{qualname}"
    return None


class MultiAgentSection(Section):
    """``multi_agent()``: the policies, the agent-to-policy mapping, which policies train.

    Attributes:
        policies: Policy ids (a set or list: spaces from the env) or a dict of id to
            :class:`PolicySpec` (or ``None``). Empty: single-agent training.
        policy_mapping_fn: ``fn(agent_id, episode, **kwargs) -> policy_id``, or its
            ``"module:function"`` name; asked once per agent and episode. ``None`` with one
            policy: every agent plays it.
        policies_to_train: ``None`` (all), a list of ids, or ``fn(policy_id, batch) -> bool``;
            the others still act (a fixed opponent, say) but never update.
    """

    policies: Any = Field(default_factory=dict)
    policy_mapping_fn: Any = None
    policies_to_train: Any = None

    @field_validator("policies", mode="before")
    @classmethod
    def _policies(cls, value: Any) -> dict[str, PolicySpec]:
        if value is None:
            return {}
        if isinstance(value, set | frozenset | list | tuple):
            value = dict.fromkeys(value)
        if not isinstance(value, Mapping):
            raise ValueError(f"expected a set of policy ids or a dict of PolicySpec, got {value!r}")
        specs = {}
        for pid, spec in value.items():
            if not isinstance(pid, str) or not _POLICY_ID.match(pid):
                raise ValueError(
                    f"policy id {pid!r}: expected 1-64 letters, digits, '_', '.' or '-'"
                )
            specs[pid] = _spec(pid, spec)
        return specs

    @field_validator("policy_mapping_fn")
    @classmethod
    def _mapping(cls, value: Any) -> Any:
        if value is None or callable(value):
            return value
        if isinstance(value, str):
            import_function(value, "policy_mapping_fn")
            return value
        raise ValueError(f"expected a function or 'module:function', got {value!r}")

    @field_validator("policies_to_train")
    @classmethod
    def _to_train(cls, value: Any) -> Any:
        if value is None or callable(value):
            return value
        if isinstance(value, list | tuple | set) and all(isinstance(p, str) for p in value):
            return sorted(value)
        raise ValueError(f"expected None, a list of policy ids or a function, got {value!r}")

    def mapping(self) -> Callable[..., str]:
        """The mapping function (imported if named; every agent to the one policy if none)."""
        fn = self.policy_mapping_fn
        if fn is None:
            (only,) = self.policies
            return lambda agent_id, episode=None, **kwargs: only
        if isinstance(fn, str):
            return import_function(fn, "policy_mapping_fn")
        return fn  # type: ignore[no-any-return]

    def trained(self) -> list[str]:
        """The ids of the policies that train, in id order."""
        choice = self.policies_to_train
        if choice is None:
            return sorted(self.policies)
        if callable(choice):
            return sorted(pid for pid in self.policies if choice(pid, None))
        return list(choice)

    def check(self) -> None:
        """What can be checked before the env exists.

        Raises:
            ValueError: Naming the setting.
        """
        if not self.policies:
            if self.policy_mapping_fn is not None or self.policies_to_train is not None:
                raise ValueError("policy_mapping_fn / policies_to_train need policies")
            return
        if self.policy_mapping_fn is None and len(self.policies) > 1:
            raise ValueError(
                f"policy_mapping_fn: {len(self.policies)} policies need a mapping from agent "
                "ids to policy ids"
            )
        if isinstance(self.policies_to_train, list):
            unknown = sorted(set(self.policies_to_train) - set(self.policies))
            if unknown:
                raise ValueError(
                    f"policies_to_train: unknown policies {unknown}; the policies are "
                    f"{sorted(self.policies)}"
                )


def resolve_policies(
    section: MultiAgentSection,
    possible_agents: list[Any],
    observation_spaces: Mapping[Any, gym.Space[Any]],
    action_spaces: Mapping[Any, gym.Space[Any]],
) -> dict[str, PolicySpec]:
    """Every policy with both its spaces, filled in from the agents mapped to it.

    Each possible agent is mapped once (with ``episode=None``) to learn which policies play
    which spaces; a mapping that depends on the episode must map each agent to policies of
    its spaces whatever the episode.

    Raises:
        ConfigError: A mapping to an unknown policy, agents of different spaces mapped to one
            policy, or a policy whose spaces nobody gives.
    """
    mapping = section.mapping()
    seen: dict[str, tuple[Any, gym.Space[Any], gym.Space[Any]]] = {}
    resolved = dict(section.policies)
    for agent in possible_agents:
        pid = mapping(agent, None)
        if pid not in resolved:
            raise ConfigError(
                f"policy_mapping_fn({agent!r}) returned {pid!r}, which is not a policy; the "
                f"policies are {sorted(resolved)}"
            )
        spaces = (observation_spaces[agent], action_spaces[agent])
        if pid in seen:
            first, obs_space, act_space = seen[pid]
            if (obs_space, act_space) != spaces:
                raise ConfigError(
                    f"policy {pid!r}: agents {first!r} and {agent!r} are mapped to it with "
                    f"different spaces ({obs_space}, {act_space} vs {spaces[0]}, {spaces[1]})"
                )
        else:
            seen[pid] = (agent, *spaces)
    for pid, spec in resolved.items():
        from_agents = seen.get(pid)
        given = (spec.observation_space, spec.action_space)
        inferred = (from_agents[1], from_agents[2]) if from_agents else (None, None)
        policy_obs, policy_act = given[0] or inferred[0], given[1] or inferred[1]
        if policy_obs is None or policy_act is None:
            raise ConfigError(
                f"policy {pid!r}: no agent is mapped to it, so its spaces are unknown; give "
                "them in its PolicySpec"
            )
        resolved[pid] = replace(spec, observation_space=policy_obs, action_space=policy_act)
    return resolved


def policies_to_json(section: MultiAgentSection) -> dict[str, Any]:
    """The section's settings as JSON (a config's ``to_json_dict``), functions by name.

    Spaces are recorded (as rlserve's space JSON) where a spec gives them; a mapping function
    that is not importable by name is left out (``None``: pass it again on restore), and a
    ``policies_to_train`` function is recorded as the list it selects.
    """
    from formats.spaces import space_to_json

    policies = {
        pid: {
            "observation_space": None
            if spec.observation_space is None
            else space_to_json(spec.observation_space),
            "action_space": None if spec.action_space is None else space_to_json(spec.action_space),
            "config": spec.config,
        }
        for pid, spec in section.policies.items()
    }
    return {
        "policies": policies,
        "policy_mapping_fn": mapping_to_json(section.policy_mapping_fn),
        "policies_to_train": section.trained() if section.policies else None,
    }


def policy_config(config: Any, spec: PolicySpec) -> Any:
    """The algorithm config of one policy: the shared one with its spec's overrides."""
    if not spec.config:
        return config
    overridden = config.copy()
    overridden.training(**spec.config)
    return overridden
