"""Tuned examples: YAML files users copy, and a loader used by ``rlserve train --config``.

Each file has ``algo`` (a name in :data:`training.algorithms.ALGORITHMS`: ``PPO``, ``DQN``,
``SAC``, ``IMPALA``), ``env``, optional ``stop`` criteria (Tune-style metric paths such as
``env_runners/episode_return_mean``, or ``evaluation/env_runners/episode_return_mean`` for the
deterministic evaluation) and ``config`` (flat settings as in ``AlgorithmConfig.to_dict()``).
Its header comment says what it reaches, and how fast, on a 2-core machine.

The examples: ``cartpole_ppo``, ``cartpole_dqn``, ``cartpole_impala``, ``pendulum_ppo``,
``pendulum_sac``, ``lunarlander_sac`` (LunarLanderContinuous-v3: needs Box2D, the ``box2d``
extra) and ``stateless_cartpole_lstm_ppo`` (a recurrent policy on a memory task).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from training.algorithms import ALGORITHMS, algorithm_class
from training.config import AlgorithmConfig, ConfigError

__all__ = ["EXAMPLES_DIR", "TunedExample", "load_tuned_example"]

EXAMPLES_DIR = Path(__file__).parent


@dataclass
class TunedExample:
    """A parsed tuned example: the config to build and the stop criteria."""

    config: AlgorithmConfig
    stop: dict[str, float] = field(default_factory=dict)


def load_tuned_example(path: str | Path) -> TunedExample:
    """Load a tuned-example file (YAML or JSON), validating every setting.

    Args:
        path: A file path, or the stem of a bundled example (``"cartpole_ppo"``).

    Raises:
        ConfigError: For a missing file, bad YAML, an unknown algorithm or setting.
    """
    file = Path(path)
    if not file.exists() and (EXAMPLES_DIR / f"{path}.yaml").exists():
        file = EXAMPLES_DIR / f"{path}.yaml"
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"config file {file}: cannot read it ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {file}: not valid YAML/JSON ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {file}: expected a mapping with algo, env and config")
    unknown = set(data) - {"algo", "env", "stop", "config"}
    if unknown:
        raise ConfigError(
            f"config file {file}: unknown top-level key(s) {sorted(unknown)}; "
            "allowed: algo, env, stop, config"
        )
    algo = str(data.get("algo", "PPO")).upper()
    if algo not in ALGORITHMS:
        raise ConfigError(
            f"config file {file}: algo {algo!r} is unknown; choose one of {sorted(ALGORITHMS)}"
        )
    config: AlgorithmConfig = algorithm_class(algo).get_default_config()
    settings = data.get("config") or {}
    if not isinstance(settings, dict):
        raise ConfigError(f"config file {file}: 'config' must be a mapping of settings")
    config.update_from_dict(settings)
    if "env" in data:
        config.environment(data["env"])
    stop = data.get("stop") or {}
    if not isinstance(stop, dict) or not all(isinstance(v, int | float) for v in stop.values()):
        raise ConfigError(f"config file {file}: 'stop' must map metric names to numbers")
    return TunedExample(config, {str(k): float(v) for k, v in stop.items()})
