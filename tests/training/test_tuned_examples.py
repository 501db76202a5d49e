"""Every bundled tuned example loads and validates; the Box2D one trains where Box2D is installed.

LunarLanderContinuous-v3 needs Box2D (the ``box2d`` extra, in ``dev`` too). Its training test
runs one tiny iteration with the example's own networks and learning rates, and skips, saying
why, where Box2D is not installed.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

from training.algorithms import ALGORITHMS
from training.tuned_examples import EXAMPLES_DIR, load_tuned_example

EXAMPLES = sorted(EXAMPLES_DIR.glob("*.yaml"))


def test_the_examples_are_found() -> None:
    names = {path.stem for path in EXAMPLES}
    assert {"cartpole_ppo", "cartpole_dqn", "pendulum_ppo", "pendulum_sac"} <= names
    assert "cartpole_impala" in names
    assert "lunarlander_sac" in names
    assert "stateless_cartpole_lstm_ppo" in names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.stem)
def test_every_example_validates_and_says_what_it_reaches(path: Path) -> None:
    example = load_tuned_example(path)
    text = path.read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    assert raw["algo"] in ALGORITHMS
    assert example.config.algo_class.name == raw["algo"]
    assert example.config.env == raw["env"]
    assert example.stop, "an example without a stop criterion would train forever"
    example.config.validate()
    assert text.startswith("# "), "the header comment says what the example reaches"
    assert "FIGURES" not in text, "a placeholder was left in the header"


def test_lunarlander_sac_keeps_rl_zoos_settings() -> None:
    config = load_tuned_example("lunarlander_sac").config
    assert config.env == "LunarLanderContinuous-v3"
    assert (config.actor_lr, config.critic_lr, config.alpha_lr) == (7.3e-4, 7.3e-4, 7.3e-4)
    assert (config.train_batch_size, config.tau, config.gamma) == (256, 0.01, 0.99)
    assert config.num_steps_sampled_before_learning_starts == 10_000
    assert config.replay_buffer_config.capacity == 1_000_000
    assert config.model.fcnet_hiddens == config.q_model.fcnet_hiddens == [400, 300]


def _import_box2d() -> None:
    """Import Box2D, or skip; its SWIG module warns while it loads (and crashes on an error)."""
    if importlib.util.find_spec("Box2D") is None:
        pytest.skip("Box2D is not installed (pip install -e '.[box2d]')")
    with warnings.catch_warnings():
        # "builtin type SwigPyPacked has no __module__ attribute": pytest's warnings-as-errors
        # would turn it into an exception inside the extension's init, which segfaults.
        warnings.simplefilter("ignore", DeprecationWarning)
        importlib.import_module("Box2D")


def test_lunarlander_sac_trains_one_tiny_iteration() -> None:
    _import_box2d()
    config = load_tuned_example("lunarlander_sac").config
    # The example's networks, learning rates and evaluation; fewer steps and a smaller buffer.
    config.update_from_dict(
        {
            "min_sample_timesteps_per_iteration": 64,
            "num_steps_sampled_before_learning_starts": 32,
            "replay_buffer_config": {"capacity": 1000},
            "train_batch_size": 32,
            "evaluation_duration": 1,
            "seed": 0,
        }
    )
    with config.build() as algo:
        result = algo.train()
        learner = result["learners"]["default_policy"]
        assert learner["num_updates"] >= 33
        assert math.isfinite(learner["critic_loss"]) and math.isfinite(learner["actor_loss"])
        assert math.isfinite(result["evaluation"]["env_runners"]["episode_return_mean"])
        obs = np.zeros(8, np.float32)
        for explore in (False, True):
            action = np.asarray(algo.compute_single_action(obs, explore=explore))
            assert action.shape == (2,)
            assert np.all(action >= -1.0) and np.all(action <= 1.0)
