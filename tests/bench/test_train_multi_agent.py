"""bench/train_multi_agent.py: its figures from a tiny real run of both layouts."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
def test_it_reports_both_layouts_from_a_tiny_run(ray_session: Any) -> None:
    spec = importlib.util.spec_from_file_location(
        "bench_train_multi_agent", ROOT / "bench" / "train_multi_agent.py"
    )
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    for layout in bench.LAYOUTS.values():
        figures = bench.measure(layout, seed=0, target=800.0, max_steps=2048)
        assert figures["to_target"] is None  # one iteration solves nothing
        assert figures["env_steps"] >= 2048 and figures["best_return"] > 0
        assert figures["agent_steps_per_s"] > figures["env_steps_per_s"] > 0
