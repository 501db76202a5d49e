"""SAC with remote EnvRunner actors: shared weights and filter, a failed runner replaced."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers.configs import tiny_sac
from training import metrics as m

pytestmark = pytest.mark.integration

REMOTE: dict[str, Any] = {"num_env_runners": 2, "rollout_fragment_length": 8}
"""Two remote runners of two envs each, 8-step fragments: 32 env steps per sampling round."""


def test_remote_runners_sample_with_the_learner_weights_and_survive_a_failure(
    ray_session: Any, tmp_path: Path
) -> None:
    marker = tmp_path / "fail"
    config = tiny_sac(
        "tests.helpers.ray_envs:FlakyCartPole",
        env_config={"fail_marker": str(marker), "env": "Pendulum-v1"},
        observation_filter="MeanStdFilter",
        **REMOTE,
    )
    with config.build() as algo:
        result = algo.train()
        assert result[m.NUM_HEALTHY_ENV_RUNNERS] == 2
        assert result[m.LEARNER_RESULTS][m.DEFAULT_POLICY_ID]["num_updates"] > 0
        weights = algo.env_runner_group.foreach_worker(lambda w: w.get_weights())
        learner = algo.get_weights()
        assert len(weights) == 3  # the local runner and both remote ones
        for runner_weights in weights:
            for key, value in learner.items():
                np.testing.assert_array_equal(runner_weights[key], value)
        assert not np.allclose(learner["obs_filter.mean"], 0.0)

        marker.touch()  # one env raises: its runner is replaced, training goes on
        result = algo.train()
        assert not marker.exists(), "the injected failure did not fire"
        assert result[m.NUM_ENV_RUNNER_RESTARTS] == 1
        result = algo.train()
        assert result[m.NUM_HEALTHY_ENV_RUNNERS] == 2
        assert np.isfinite(result[m.LEARNER_RESULTS][m.DEFAULT_POLICY_ID]["critic_loss"])
