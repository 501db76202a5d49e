"""Benchmark: a slow env (5 ms a step, no CPU), 6 envs per runner: sequential, ASYNC, remote envs.

The env is ``training.example_envs:SlowCartPole``, a simulator that waits ``--latency-ms`` per
step. One runner in the driver steps 6 copies: one after another (``SYNC``, gymnasium's
``SyncVectorEnv``), each in a subprocess (``gym_env_vectorize_mode="ASYNC"``), and each in a Ray
actor stepped when ready (``remote_worker_envs=True``, ``remote_env_batch_wait_ms=0``). Env
steps/s are measured over ``runner.sample`` calls of ``--steps`` steps per env after one
warm-up call (no learning: the sampling rate is the question). Ceiling: ``envs / latency``.
Prints one JSON line.

    python bench/slow_env.py [--latency-ms 5] [--envs 6] [--steps 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from training import PPOConfig
from training.env_runner import EnvRunner

MODES: dict[str, dict[str, Any]] = {
    "sequential": {},
    "async": {"gym_env_vectorize_mode": "ASYNC"},
    "remote_envs": {"remote_worker_envs": True, "remote_env_batch_wait_ms": 0.0},
}


def measure(mode: str, latency_ms: float, envs: int, steps: int, repeats: int) -> dict[str, Any]:
    """Env steps/s of one runner sampling ``envs`` slow envs in one of :data:`MODES`."""
    config = (
        PPOConfig()
        .environment(
            "training.example_envs:SlowCartPole", env_config={"step_latency_s": latency_ms / 1e3}
        )
        .env_runners(num_envs_per_env_runner=envs, rollout_fragment_length=steps, **MODES[mode])
        .debugging(seed=0)
    )
    runner = EnvRunner(config, 0)
    try:
        runner.sample()  # warm-up: processes and actors started, first episodes running
        start = time.perf_counter()
        rows = sum(runner.sample().rewards.size for _ in range(repeats))
        elapsed = time.perf_counter() - start
    finally:
        runner.stop()
    return {"env_steps_per_s": round(rows / elapsed, 1), "seconds": round(elapsed, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=5.0)
    parser.add_argument("--envs", type=int, default=6)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    figures: dict[str, Any] = {
        "bench": "slow_env",
        "latency_ms": args.latency_ms,
        "envs": args.envs,
        "ceiling_env_steps_per_s": round(args.envs * 1000.0 / args.latency_ms, 1),
    }
    for mode in MODES:
        figures[mode] = measure(mode, args.latency_ms, args.envs, args.steps, args.repeats)
    base = figures["sequential"]["env_steps_per_s"]
    for mode in ("async", "remote_envs"):
        figures[f"{mode}_vs_sequential"] = round(figures[mode]["env_steps_per_s"] / base, 2)
    figures["target_4x_met"] = {
        mode: figures[f"{mode}_vs_sequential"] >= 4.0 for mode in ("async", "remote_envs")
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
