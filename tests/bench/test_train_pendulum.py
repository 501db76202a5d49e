"""bench/train_pendulum.py and bench/sb3_pendulum.py: the protocol both sides measure with.

SB3 is not installed here (it lives in .venv-bench), so the SB3 half is checked through the
part of it that decides the comparison: its evaluation must replay ``Algorithm.evaluate``
episode for episode. The rlserve half runs for real on a tiny tuned example.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from training.tuned_examples import load_tuned_example

ROOT = Path(__file__).resolve().parents[2]

# A tiny SAC example: about 200 env steps per iteration, small networks and batches; it never
# learns in these few steps, it only runs.
TINY_EXAMPLE = """\
algo: SAC
env: Pendulum-v1
config:
  num_env_runners: 0
  num_envs_per_env_runner: 1
  rollout_fragment_length: 1
  train_batch_size: 32
  num_steps_sampled_before_learning_starts: 100
  min_sample_timesteps_per_iteration: 200
  replay_buffer_config:
    capacity: 2000
  model:
    fcnet_hiddens: [16, 16]
  q_model:
    fcnet_hiddens: [16, 16]
"""


def _load(name: str) -> ModuleType:
    """Import a bench script by path (bench/ is scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ours() -> ModuleType:
    return _load("train_pendulum")


@pytest.fixture(scope="module")
def sb3() -> ModuleType:
    return _load("sb3_pendulum")


@pytest.fixture
def tiny(tmp_path: Path) -> str:
    path = tmp_path / "tiny_pendulum.yaml"
    path.write_text(TINY_EXAMPLE)
    return str(path)


def test_both_sides_derive_the_same_evaluation_seeds(ours: ModuleType, sb3: ModuleType) -> None:
    seeds = [ours.eval_seed(s) for s in range(5)]
    assert seeds == [sb3.default_eval_seed(s) for s in range(5)]
    assert len(set(seeds)) == 5


def test_sb3_evaluation_replays_algorithm_evaluate(
    ours: ModuleType, sb3: ModuleType, tiny: str
) -> None:
    """The SB3 side's episodes are rlserve's: same initial states, same deterministic returns."""
    seed, episodes = 7, 3
    config = load_tuned_example(tiny).config
    config.debugging(seed=seed).evaluation(evaluation_duration=episodes)
    with config.build() as algo:
        algo.train()  # weights away from their initial values: the actions depend on the states
        evaluation = algo.evaluate()["env_runners"]

        def act(obs: np.ndarray) -> Any:
            return algo.compute_single_action(obs, explore=False)

        returns = sb3.evaluate(act, ours.eval_seed(seed), episodes)
        other = sb3.evaluate(act, ours.eval_seed(seed + 1), episodes)
    assert len(returns) == episodes
    assert np.mean(returns) == pytest.approx(evaluation["episode_return_mean"], rel=1e-5)
    assert min(returns) == pytest.approx(evaluation["episode_return_min"], rel=1e-5)
    assert max(returns) == pytest.approx(evaluation["episode_return_max"], rel=1e-5)
    # The seed decides the initial states: another seed plays other episodes.
    assert np.mean(other) != pytest.approx(np.mean(returns), rel=1e-5)


def test_measure_evaluates_on_the_cadence_and_stops_at_the_step_budget(
    ours: ModuleType, tiny: str
) -> None:
    # Iterations of about 200 env steps, evaluation every 250: after the second iteration (the
    # first at or past 250 steps), and at the 600-step budget.
    args = ours.parse_args(
        ["--max-steps", "600", "--eval-every", "250", "--eval-episodes", "1", "--target", "0"]
    )
    result = ours.measure(tiny, 0, args)
    assert result["reached"] is None
    assert 600 <= result["env_steps"] < 800
    assert result["iterations"] == 3
    (first, _), (last, _) = result["curve"]
    assert 250 <= first < 500
    assert last == result["env_steps"]
    assert all(mean < 0 for _, mean in result["curve"])
    assert result["train_s"] > 0
    assert result["env_steps_per_s"] == pytest.approx(
        result["env_steps"] / result["train_s"], rel=0.02
    )
    assert result["torch_threads"] == ours.learner_threads(tiny) == 1


def test_measure_stops_at_the_target_and_ratios_compare_wall_times(
    ours: ModuleType, tiny: str
) -> None:
    args = ours.parse_args(["--eval-every", "200", "--eval-episodes", "1", "--target=-1e9"])
    result = ours.measure(tiny, 0, args)
    reached = result["reached"]
    assert reached is not None
    assert (reached["env_steps"], reached["iterations"]) == (200, 1)
    assert reached["within_max_steps"]
    assert reached["wall_s"] == result["train_s"] > 0
    assert len(result["curve"]) == 1

    sb3_seeds = {"0": {"reached": {"wall_s": reached["wall_s"] * 4}}, "1": {"reached": None}}
    ratios = ours.wall_ratios({"0": result, "1": result}, sb3_seeds)
    assert ratios["per_seed"] == {"0": pytest.approx(0.25, abs=0.001), "1": None}
    assert ratios["median"] == pytest.approx(0.25, abs=0.001)
    assert ratios["seeds_compared"] == 1
