"""bench/slow_env.py: each mode's sampling rate from a tiny real run, and the JSON line."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_slow_env", ROOT / "bench" / "slow_env.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_parallel_modes_beat_stepping_slow_envs_one_after_another(ray_session: Any) -> None:
    bench = _bench()
    rates = {mode: bench.measure(mode, 20.0, 4, 10, 1)["env_steps_per_s"] for mode in bench.MODES}
    # 4 envs of 20 ms: sequential is at most 50 steps/s; both parallel modes overlap the waits.
    assert rates["sequential"] <= 50.0
    assert rates["async"] > 1.5 * rates["sequential"], rates
    assert rates["remote_envs"] > 1.5 * rates["sequential"], rates


def test_the_script_prints_one_json_line_with_the_ratios() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "slow_env.py"), "--latency-ms", "2", "--envs", "2",
         "--steps", "5", "--repeats", "1"],
        capture_output=True, text=True, timeout=180, check=True, cwd=ROOT,
    )  # fmt: skip
    (line,) = out.stdout.strip().splitlines()
    figures = json.loads(line)
    assert figures["bench"] == "slow_env" and figures["ceiling_env_steps_per_s"] == 1000.0
    assert set(figures["target_4x_met"]) == {"async", "remote_envs"}
    assert figures["async_vs_sequential"] > 0
