"""Benchmark: IMPALA with 1 and 2 asynchronous runners against PPO's tuned example, CartPole-v1.

For each setting, in one run on the same machine: wall seconds (training only, build excluded)
and env steps to a mean training return of 450, env steps/s sampled and trained, the learner's
share of the wall clock, the driver's cost per fragment (the CPU time of its sampling loop's
thread over the fragments taken: what bounds the runners one driver can feed), the policy lag
(updates between the weights that sampled a fragment and the learner's), and train batches
dropped. Prints one JSON line.

    python bench/train_impala.py [--seed 0] [--budget-s 120]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from typing import Any

import numpy as np

from training import metrics as m
from training.tuned_examples import load_tuned_example

SETTINGS: dict[str, tuple[str, dict[str, Any]]] = {
    "impala_2_runners": ("cartpole_impala", {}),
    "impala_1_runner": ("cartpole_impala", {"num_env_runners": 1}),
    "ppo_tuned_example": ("cartpole_ppo", {}),
}


def measure(example: str, overrides: dict[str, Any], seed: int, budget_s: float) -> dict[str, Any]:
    """Train until a mean training return of 450 (or the budget); the figures of the run."""
    config = load_tuned_example(example).config
    config.update_from_dict(overrides)
    config.debugging(seed=seed)
    build_start = time.perf_counter()
    algo = config.build()
    build_s = time.perf_counter() - build_start
    train_s = 0.0
    reached: dict[str, Any] | None = None
    rows: list[dict[str, Any]] = []
    with algo:
        while train_s < budget_s:
            start = time.perf_counter()
            result = algo.train()
            train_s += time.perf_counter() - start
            rows.append(result)
            ret = result[m.ENV_RUNNER_RESULTS][m.EPISODE_RETURN_MEAN]
            if not math.isnan(ret) and ret >= 450:
                reached = {
                    "wall_s": round(train_s, 2),
                    "env_steps": result[m.NUM_ENV_STEPS_SAMPLED_LIFETIME],
                }
                break
    steps = rows[-1][m.NUM_ENV_STEPS_SAMPLED_LIFETIME]
    trained = rows[-1][m.NUM_ENV_STEPS_TRAINED_LIFETIME]
    figures: dict[str, Any] = {
        "example": example,
        "num_env_runners": config.num_env_runners,
        "build_s": round(build_s, 2),
        "to_return_450": reached,
        "env_steps_per_s": round(steps / train_s, 1),
        "env_steps_trained_per_s": round(trained / train_s, 1),
    }
    if m.DRIVER_MS_PER_FRAGMENT in rows[-1] or m.WEIGHTS_VERSION in rows[-1]:
        learner = [r[m.LEARNER_RESULTS][m.DEFAULT_POLICY_ID] for r in rows]

        def mean(key: str) -> float | None:
            values = [r[key] for r in rows if key in r]  # absent when sampling in turn
            return round(float(np.mean(values)), 3) if values else None

        figures.update(
            {
                "policy_lag_mean": round(
                    float(np.mean([x["policy_lag_mean"] for x in learner])), 2
                ),
                "policy_lag_max": max(x["policy_lag_max"] for x in learner),
                "learner_time_share": mean(m.LEARNER_TIME_SHARE),
                "driver_cpu_ms_per_fragment": mean(m.DRIVER_MS_PER_FRAGMENT),
                "rows_per_fragment": config.get_rollout_fragment_length()
                * config.num_envs_per_env_runner,
                "train_batches_dropped": rows[-1].get(m.NUM_TRAIN_BATCHES_DROPPED_LIFETIME, 0),
                "updates": rows[-1][m.WEIGHTS_VERSION],
            }
        )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget-s", type=float, default=120.0)
    parser.add_argument("--settings", default=",".join(SETTINGS))
    args = parser.parse_args()
    figures: dict[str, Any] = {"bench": "train_impala", "seed": args.seed}
    for name in args.settings.split(","):
        example, overrides = SETTINGS[name]
        figures[name] = measure(example, overrides, args.seed, args.budget_s)
    ppo = figures.get("ppo_tuned_example", {}).get("to_return_450")
    impala = figures.get("impala_2_runners", {}).get("to_return_450")
    if ppo and impala:
        figures["impala_2_runners_wall_vs_ppo"] = round(impala["wall_s"] / ppo["wall_s"], 2)
    one = figures.get("impala_1_runner", {}).get("env_steps_per_s")
    two = figures.get("impala_2_runners", {}).get("env_steps_per_s")
    if one and two:
        figures["env_steps_per_s_2_vs_1_runner"] = round(two / one, 2)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
