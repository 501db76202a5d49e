"""The names of training results, written once (RLlib's ``utils/metrics/__init__.py``).

An :meth:`Algorithm.train` result is RLlib-shaped: nested dicts (``result[ENV_RUNNER_RESULTS]
[EPISODE_RETURN_MEAN]``) whose flattened paths (``"env_runners/episode_return_mean"``) are what
stop criteria, Tune metrics, progress bars, CSV columns and TensorBoard tags name. Every module
that reads or writes a result uses these constants instead of spelling the keys.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "AGENT_EPISODE_RETURNS_MEAN",
    "DEFAULT_POLICY_ID",
    "DRIVER_MS_PER_FRAGMENT",
    "ENV_RUNNER_RESULTS",
    "EPISODE_LEN_MEAN",
    "EPISODE_RETURN_MAX",
    "EPISODE_RETURN_MEAN",
    "EPISODE_RETURN_MEAN_PATH",
    "EPISODE_RETURN_MIN",
    "EVALUATION_RESULTS",
    "LEARNER_QUEUE_LENGTH_MEAN",
    "LEARNER_RESULTS",
    "LEARNER_TIME_SHARE",
    "MODULE_EPISODE_RETURNS_MEAN",
    "NUM_AGENT_STEPS_SAMPLED",
    "NUM_AGENT_STEPS_SAMPLED_LIFETIME",
    "NUM_ENV_RUNNER_RESTARTS",
    "NUM_ENV_STEPS_SAMPLED",
    "NUM_ENV_STEPS_SAMPLED_LIFETIME",
    "NUM_ENV_STEPS_SAMPLED_THROUGHPUT",
    "NUM_ENV_STEPS_TRAINED_LIFETIME",
    "NUM_ENV_STEPS_TRAINED_THROUGHPUT",
    "NUM_EPISODES",
    "NUM_EPISODES_LIFETIME",
    "NUM_HEALTHY_ENV_RUNNERS",
    "NUM_REMOTE_ENV_RUNNERS",
    "NUM_SAMPLE_REQUESTS_DROPPED_LIFETIME",
    "NUM_SAMPLE_REQUESTS_IN_FLIGHT",
    "NUM_TRAIN_BATCHES_DROPPED_LIFETIME",
    "SEP",
    "TIME_TOTAL_S",
    "TRAINING_ITERATION",
    "WEIGHTS_VERSION",
    "episode_summary",
    "learner_path",
    "lookup",
    "path",
]

SEP = "/"
"""Separator of a flattened result path."""

# Top-level sections of a result.
ENV_RUNNER_RESULTS = "env_runners"
LEARNER_RESULTS = "learners"
EVALUATION_RESULTS = "evaluation"
DEFAULT_POLICY_ID = "default_policy"

# Inside ENV_RUNNER_RESULTS (this iteration's sampling, returns smoothed over recent episodes).
EPISODE_RETURN_MEAN = "episode_return_mean"
EPISODE_RETURN_MIN = "episode_return_min"
EPISODE_RETURN_MAX = "episode_return_max"
EPISODE_LEN_MEAN = "episode_len_mean"
NUM_EPISODES = "num_episodes"
NUM_ENV_STEPS_SAMPLED = "num_env_steps_sampled"
# Multi-agent: agent steps (an env step counts once per acting agent), returns per agent id and
# per policy (module) over the same recent episodes.
NUM_AGENT_STEPS_SAMPLED = "num_agent_steps_sampled"
AGENT_EPISODE_RETURNS_MEAN = "agent_episode_returns_mean"
MODULE_EPISODE_RETURNS_MEAN = "module_episode_returns_mean"

# Top level: lifetime counters (saved in checkpoints), runner health and throughput.
NUM_ENV_STEPS_SAMPLED_LIFETIME = "num_env_steps_sampled_lifetime"
NUM_ENV_STEPS_TRAINED_LIFETIME = "num_env_steps_trained_lifetime"
NUM_EPISODES_LIFETIME = "num_episodes_lifetime"
NUM_AGENT_STEPS_SAMPLED_LIFETIME = "num_agent_steps_sampled_lifetime"
NUM_HEALTHY_ENV_RUNNERS = "num_healthy_env_runners"
NUM_REMOTE_ENV_RUNNERS = "num_remote_env_runners"
NUM_ENV_RUNNER_RESTARTS = "num_env_runner_restarts"
NUM_ENV_STEPS_SAMPLED_THROUGHPUT = "num_env_steps_sampled_throughput_per_sec"

# Top level, asynchronous algorithms (IMPALA): the learner's pace against sampling.
NUM_ENV_STEPS_TRAINED_THROUGHPUT = "num_env_steps_trained_throughput_per_sec"
NUM_SAMPLE_REQUESTS_IN_FLIGHT = "num_sample_requests_in_flight"
NUM_SAMPLE_REQUESTS_DROPPED_LIFETIME = "num_sample_requests_dropped_lifetime"
NUM_TRAIN_BATCHES_DROPPED_LIFETIME = "num_train_batches_dropped_lifetime"
LEARNER_QUEUE_LENGTH_MEAN = "learner_queue_length_mean"
LEARNER_TIME_SHARE = "learner_time_share"
DRIVER_MS_PER_FRAGMENT = "driver_cpu_ms_per_fragment"
WEIGHTS_VERSION = "weights_version"

# Filled in by Ray Tune's Trainable around every result.
TRAINING_ITERATION = "training_iteration"
TIME_TOTAL_S = "time_total_s"


def path(*keys: str) -> str:
    """The flattened path of nested keys: ``path("env_runners", "num_episodes")``."""
    return SEP.join(keys)


def learner_path(metric: str, policy: str = DEFAULT_POLICY_ID) -> str:
    """The path of a learner metric: ``learners/default_policy/<metric>``."""
    return path(LEARNER_RESULTS, policy, metric)


EPISODE_RETURN_MEAN_PATH = path(ENV_RUNNER_RESULTS, EPISODE_RETURN_MEAN)
"""``"env_runners/episode_return_mean"``: the usual stop criterion and Tune metric."""


def lookup(result: Mapping[str, Any], metric_path: str) -> Any:
    """The value at a flattened path of a nested result.

    Raises:
        KeyError: Naming the first missing key of the path.
    """
    node: Any = result
    for key in metric_path.split(SEP):
        if not isinstance(node, Mapping) or key not in node:
            raise KeyError(metric_path)
        node = node[key]
    return node


def episode_summary(returns: Sequence[float], lengths: Sequence[int]) -> dict[str, float]:
    """Mean, min and max return and mean length of episodes (NaN when there are none)."""
    if not returns:
        nan = math.nan
        return {EPISODE_RETURN_MEAN: nan, EPISODE_RETURN_MIN: nan, EPISODE_RETURN_MAX: nan,
                EPISODE_LEN_MEAN: nan}  # fmt: skip
    return {
        EPISODE_RETURN_MEAN: float(np.mean(returns)),
        EPISODE_RETURN_MIN: float(np.min(returns)),
        EPISODE_RETURN_MAX: float(np.max(returns)),
        EPISODE_LEN_MEAN: float(np.mean(lengths)),
    }
