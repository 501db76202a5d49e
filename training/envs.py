"""Creating environments from a config's ``env`` setting.

``env`` may be a registered gymnasium id (``"CartPole-v1"``), a ``"module:Class"`` entry point,
or a class/callable that takes ``env_config`` and returns a gymnasium env. (Multi-agent configs
also take ``"make_multi_agent:<env>"``: :func:`training.multi_agent.env.multi_agent_creator`.)
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from typing import Any

import gymnasium as gym

from formats.errors import RlserveError

__all__ = ["EnvCreator", "UnknownEnvError", "make_env_creator"]

EnvCreator = Callable[[], gym.Env[Any, Any]]


class UnknownEnvError(RlserveError, ValueError):
    """The env setting names no registered id and no importable entry point."""


def _import_entry_point(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise UnknownEnvError(
            f"env {spec!r}: cannot import module {module_name!r}: {err}"
        ) from None
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise UnknownEnvError(f"env {spec!r}: module {module_name!r} has no {attr!r}") from None
    if not callable(target):
        raise UnknownEnvError(f"env {spec!r}: {attr!r} is not a class or callable")
    return target


def make_env_creator(env: Any, env_config: dict[str, Any] | None = None) -> EnvCreator:
    """Resolve an env setting into a zero-argument factory, failing early on unknown ids.

    Args:
        env: Registered gymnasium id, ``"module:Class"`` entry point, or class/callable taking
            ``env_config``.
        env_config: Keyword arguments for ``gym.make`` (ids) or the single argument of a
            class/callable.

    Returns:
        A function creating a fresh env each call.

    Raises:
        UnknownEnvError: For an unknown id (listing the closest registered ids) or an entry
            point that does not import.
    """
    config = dict(env_config or {})
    if isinstance(env, str):
        if ":" in env and env not in gym.registry:
            target = _import_entry_point(env)
            return lambda: _checked(target(config), env)
        if env not in gym.registry:
            close = difflib.get_close_matches(env, list(gym.registry), n=5, cutoff=0.5)
            hint = f"; closest registered ids: {', '.join(close)}" if close else ""
            raise UnknownEnvError(f"env {env!r} is not a registered gymnasium id{hint}")
        return lambda: gym.make(env, **config)
    if callable(env):
        return lambda: _checked(env(config), getattr(env, "__name__", repr(env)))
    raise UnknownEnvError(f"env must be an id, 'module:Class' or a callable, got {env!r}")


def _checked(instance: Any, name: str) -> gym.Env[Any, Any]:
    if not isinstance(instance, gym.Env):
        raise UnknownEnvError(
            f"env {name!r} returned {type(instance).__name__}, expected a gymnasium.Env"
        )
    return instance
