"""bench/train_lstm.py: its figures from a tiny real run of both settings."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_it_reports_both_settings_from_a_tiny_run() -> None:
    spec = importlib.util.spec_from_file_location(
        "bench_train_lstm", ROOT / "bench" / "train_lstm.py"
    )
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    tiny = {"train_batch_size": 128, "rollout_fragment_length": 16, "num_envs_per_env_runner": 8,
            "minibatch_size": 64, "num_epochs": 1}  # fmt: skip
    lstm = bench.measure(True, 0, 350.0, 256, 30.0, **tiny)
    feed_forward = bench.measure(False, 0, 350.0, 256, 30.0, **tiny)
    for figures, use_lstm in ((lstm, True), (feed_forward, False)):
        assert figures["use_lstm"] is use_lstm
        assert figures["to_target"] is None  # 256 steps solve nothing
        assert figures["env_steps"] >= 256 and figures["env_steps_per_s"] > 0
        assert figures["best_return"] > 0
