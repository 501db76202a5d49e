"""Benchmark: what a recurrent policy's state costs in serving, against feed-forward.

Two PPO policies for ``StatelessCartPole`` (2 observations, 2 actions) of the same width: the
tuned example's LSTM (a 64-unit layer, then a 64-cell LSTM) and a feed-forward one with two
64-unit layers in its place. Both are exported to ONNX and served by one app (uvicorn, the
app every replica runs) on 127.0.0.1. Measured in the same run, each policy in turn:

* the graph alone (``PolicyRuntime.run_graph``): microseconds per call at batch 1 and 32 (the
  LSTM also reads and writes its state rows);
* sessions, closed loop, one message in flight each, at 1 and 32 sessions: messages per
  second and latency. The LSTM's state stays on the server, per session; every message is
  one step of its agent's episode.

The runs alternate (feed-forward, LSTM, twice) and each figure is the better of its two, so
drift on a shared machine hits both alike. Prints one JSON line, with the LSTM's throughput
relative to feed-forward.

    python bench/serve_lstm.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from session_load import _uvicorn  # bench/ is the script's directory (on sys.path)

from rlserve.jobs.session_loadgen import run_sessions
from serving import PolicyRuntime, wire

POLICIES = ("feed_forward", "lstm")
OBS = [0.01, -0.02]
MESSAGE = json.dumps({"observation": OBS})
SESSION_COUNTS = (1, 32)
GRAPH_BATCHES = (1, 32)
APP = """
from serving import PolicyRegistry, create_app
from serving.sessions import SessionSettings
app = create_app(PolicyRegistry.from_paths({paths!r}), sessions=SessionSettings(max_sessions=64))
"""


def build_artifacts(root: Path) -> dict[str, Path]:
    """The two policies, untrained (weights do not change the cost), exported to ONNX."""
    from exporters import export_checkpoint
    from training.tuned_examples import load_tuned_example

    artifacts = {}
    for name in POLICIES:
        config = load_tuned_example("stateless_cartpole_lstm_ppo").config.debugging(seed=0)
        model = config.model.model_dump()
        if name == "feed_forward":
            model.update(use_lstm=False, fcnet_hiddens=[64, 64])
        config.training(model=model).env_runners(num_envs_per_env_runner=1)
        with config.build() as algo:
            checkpoint = algo.save(str(root / name / "checkpoint")).checkpoint.path
        artifacts[name] = export_checkpoint(checkpoint, root / name / "artifact", ["onnx"])
    return artifacts


def graph_us(artifact: Path, batch: int, seconds: float) -> float:
    """Microseconds per graph call at ``batch`` rows (the state fed back each call)."""
    runtime = PolicyRuntime.from_path(artifact)
    leaves = [np.tile(np.asarray(OBS, np.float32), (batch, 1))]
    state = runtime.initial_state(batch) if runtime.is_recurrent else None
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        state = runtime.run_graph(leaves, state).state
        calls += 1
    return round((time.perf_counter() - start) / calls * 1e6, 1)


def sessions(
    base: str, policy: str, count: int, seconds: float, settle_s: float = 0.5
) -> dict[str, Any]:
    url = base.replace("http://", "ws://", 1) + wire.session_path(policy)
    figures = asyncio.run(
        run_sessions(url, MESSAGE, sessions=count, seconds=seconds, rate_per_session=None)
    )
    time.sleep(settle_s)  # the server lets go of these sessions before the next run
    return figures


def _better(a: dict[str, Any] | None, b: dict[str, Any]) -> dict[str, Any]:
    return b if a is None or b["msgs_per_s"] > a["msgs_per_s"] else a


def measure(seconds: float, rounds: int = 2, settle_s: float = 0.5) -> dict[str, Any]:
    """Every figure of the benchmark (see the module's docstring).

    Args:
        seconds: Length of each session run (a third of it per graph figure).
        rounds: How many times each policy is measured (the best counts).
        settle_s: Pause after each session run (the server closes its sessions).
    """
    with tempfile.TemporaryDirectory(prefix="rlserve-bench-lstm-") as tmp:
        root = Path(tmp)
        artifacts = build_artifacts(root)
        graph: dict[str, dict[str, float]] = {name: {} for name in POLICIES}
        for _ in range(rounds):
            for name in POLICIES:
                for batch in GRAPH_BATCHES:
                    us = graph_us(artifacts[name], batch, seconds / 3)
                    key = f"b{batch}_us"
                    graph[name][key] = min(graph[name].get(key, us), us)
        paths = {name: str(path) for name, path in artifacts.items()}
        (root / "bench_lstm_app.py").write_text(APP.format(paths=paths))
        runs: dict[str, dict[str, Any]] = {name: {} for name in POLICIES}
        with _uvicorn(root, "bench_lstm_app") as base:
            for name in POLICIES:  # warm-up
                sessions(base, name, 4, min(seconds, 1.0), settle_s)
            for _ in range(rounds):
                for name in POLICIES:
                    for count in SESSION_COUNTS:
                        key = f"c{count}"
                        runs[name][key] = _better(
                            runs[name].get(key), sessions(base, name, count, seconds, settle_s)
                        )
    relative = {
        f"sessions_c{count}": round(
            runs["lstm"][f"c{count}"]["msgs_per_s"]
            / max(1e-9, runs["feed_forward"][f"c{count}"]["msgs_per_s"]),
            3,
        )
        for count in SESSION_COUNTS
    }
    return {
        "benchmark": "serve_lstm",
        "seconds": seconds,
        "graph": graph,
        "sessions": runs,
        "lstm_relative_to_feed_forward": relative,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="Length of each run.")
    args = parser.parse_args()
    print(json.dumps(measure(args.seconds)))


if __name__ == "__main__":
    main()
