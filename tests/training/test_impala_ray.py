"""IMPALA with remote EnvRunner actors: requests in flight, lag, weights, a runner killed."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
import ray

from tests.helpers.configs import tiny_impala
from training import IMPALA
from training import metrics as m

pytestmark = pytest.mark.integration

REMOTE: dict[str, Any] = {
    "num_env_runners": 2,
    "rollout_fragment_length": 16,
    "min_sample_timesteps_per_iteration": 1024,
    "observation_filter": "MeanStdFilter",
}
"""Two remote runners of two envs each, 16-step fragments (32 rows), two requests in flight."""


def test_runners_sample_asynchronously_and_end_on_the_learner_weights(ray_session: Any) -> None:
    with tiny_impala(**REMOTE).build() as algo:
        assert isinstance(algo, IMPALA)
        results = [algo.train(), algo.train()]
        result = results[-1]
        learner = result[m.LEARNER_RESULTS][m.DEFAULT_POLICY_ID]
        assert result[m.NUM_HEALTHY_ENV_RUNNERS] == 2
        # Sampling goes on between iterations: requests stay queued on every runner.
        assert 1 <= result[m.NUM_SAMPLE_REQUESTS_IN_FLIGHT] <= 4
        assert learner["num_updates"] >= 1024 // 64 - 1
        assert result[m.WEIGHTS_VERSION] == algo.learner.num_updates
        assert learner["policy_lag_mean"] >= 0.0 and learner["policy_lag_max"] >= 0.0
        assert np.isfinite(learner["mean_rho"]) and np.isfinite(learner["policy_loss"])
        for key in (
            m.NUM_ENV_STEPS_TRAINED_THROUGHPUT,
            m.LEARNER_TIME_SHARE,
            m.DRIVER_MS_PER_FRAGMENT,
            m.LEARNER_QUEUE_LENGTH_MEAN,
        ):
            assert result[key] >= 0.0, key
        assert result[m.NUM_TRAIN_BATCHES_DROPPED_LIFETIME] >= 0
        # The newest weights went out last: once a runner has taken its queued calls, it
        # holds exactly the learner's weights (filter statistics included), with its version.
        learner_weights = algo.get_weights()
        states = algo.env_runner_group.foreach_worker(
            lambda w: (w.get_weights(), w.weights_version), local_env_runner=False
        )
        assert len(states) == 2
        for weights, version in states:
            assert version == algo.learner.num_updates
            for key, value in learner_weights.items():
                np.testing.assert_array_equal(weights[key], value)
        assert not np.allclose(learner_weights["obs_filter.mean"], 0.0)


def test_a_runner_killed_with_requests_in_flight_is_replaced_and_its_requests_counted(
    ray_session: Any,
) -> None:
    with tiny_impala(**REMOTE).build() as algo:
        algo.train()
        group = algo.env_runner_group
        assert group.num_in_flight_requests >= 1
        ray.kill(group._actors[1], no_restart=True)  # a node lost, a process OOM-killed
        time.sleep(0.5)
        result = algo.train()
        assert result[m.NUM_ENV_RUNNER_RESTARTS] == 1
        assert result[m.NUM_SAMPLE_REQUESTS_DROPPED_LIFETIME] >= 1
        result = algo.train()
        assert result[m.NUM_HEALTHY_ENV_RUNNERS] == 2
        assert result[m.LEARNER_RESULTS][m.DEFAULT_POLICY_ID]["num_updates"] > 0
        indices = sorted(algo.env_runner_group.foreach_worker_with_index(lambda i, w: i))
        assert indices == [0, 1, 2]
