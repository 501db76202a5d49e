"""bench/train_impala.py: its figures from a tiny real run, in turn and with a remote runner."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = {"train_batch_size": 64, "rollout_fragment_length": 16, "num_envs_per_env_runner": 2,
        "min_sample_timesteps_per_iteration": 256}  # fmt: skip


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """The bench script, imported by path (bench/ is scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(
        "bench_train_impala", ROOT / "bench" / "train_impala.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_in_turn_it_reports_throughput_and_no_driver_figures(bench: ModuleType) -> None:
    figures = bench.measure("cartpole_impala", {**TINY, "num_env_runners": 0}, 0, 1.0)
    assert figures["example"] == "cartpole_impala" and figures["num_env_runners"] == 0
    assert figures["to_return_450"] is None  # a second of training does not solve it
    assert figures["env_steps_per_s"] > 0 and figures["env_steps_trained_per_s"] > 0
    assert figures["policy_lag_mean"] == 0.0 and figures["updates"] >= 4
    assert figures["driver_cpu_ms_per_fragment"] is None


@pytest.mark.integration
def test_with_a_remote_runner_it_reports_the_drivers_cost_and_the_lag(
    bench: ModuleType, ray_session: Any
) -> None:
    settings = {**TINY, "num_env_runners": 1, "num_cpus_per_env_runner": 0.5}
    figures = bench.measure("cartpole_impala", settings, 0, 2.0)
    assert figures["num_env_runners"] == 1 and figures["rows_per_fragment"] == 32
    assert figures["driver_cpu_ms_per_fragment"] > 0
    assert 0.0 <= figures["learner_time_share"] <= 1.0
    assert figures["policy_lag_max"] >= figures["policy_lag_mean"] >= 0.0
