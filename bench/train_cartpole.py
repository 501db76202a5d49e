"""Benchmark: wall time and env steps for PPO and DQN to solve CartPole-v1.

For each algorithm (its tuned example), reports the wall seconds, env steps and iterations to
a mean training return of 450 and to a deterministic evaluation mean of 475 (evaluation time
excluded from the wall clock), and env steps per second. With ``--sb3-python`` the same run
also measures Stable-Baselines3 (rl-zoo hyper-parameters) as the baseline, on the same
machine, before ours. Prints one JSON line.

    python bench/train_cartpole.py [--seed 0] [--budget-s 180] [--sb3-python .venv-bench/bin/python]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import time
from pathlib import Path
from typing import Any

from training.metrics import (
    EPISODE_RETURN_MEAN_PATH,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    TRAINING_ITERATION,
    lookup,
)
from training.tuned_examples import load_tuned_example

ROOT = Path(__file__).resolve().parent.parent


def measure(example: str, seed: int, budget_s: float) -> dict[str, Any]:
    """Train one tuned example until deterministic evaluation reaches 475 (or the budget)."""
    config = load_tuned_example(example).config
    config.debugging(seed=seed).evaluation(evaluation_interval=None, evaluation_duration=10)
    build_start = time.perf_counter()
    algo = config.build()
    build_s = time.perf_counter() - build_start
    train_s = 0.0
    reached_450: dict[str, Any] | None = None
    reached_eval: dict[str, Any] | None = None
    result: dict[str, Any] = {}
    with algo:
        while train_s < budget_s:
            start = time.perf_counter()
            result = algo.train()
            train_s += time.perf_counter() - start
            ret = lookup(result, EPISODE_RETURN_MEAN_PATH)
            point = {
                "wall_s": round(train_s, 2),
                "env_steps": result[NUM_ENV_STEPS_SAMPLED_LIFETIME],
                "iterations": result[TRAINING_ITERATION],
            }
            if reached_450 is None and not math.isnan(ret) and ret >= 450:
                reached_450 = point
            near = not math.isnan(ret) and ret >= 400
            if reached_eval is None and near:  # evaluate only near the goal (time excluded)
                evaluation = lookup(algo.evaluate(), EPISODE_RETURN_MEAN_PATH)
                if evaluation >= 475:
                    reached_eval = {**point, "eval_return": evaluation}
            if reached_450 is not None and reached_eval is not None:
                break
    steps = result.get(NUM_ENV_STEPS_SAMPLED_LIFETIME, 0)
    return {
        "build_s": round(build_s, 2),
        "to_return_450": reached_450,
        "to_eval_475": reached_eval,
        "env_steps_per_s": round(steps / train_s, 1) if train_s else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget-s", type=float, default=180.0)
    parser.add_argument("--algos", default="PPO,DQN")
    parser.add_argument("--sb3-python", help="a Python that has stable-baselines3 installed")
    args = parser.parse_args()
    figures: dict[str, Any] = {"bench": "train_cartpole", "seed": args.seed}
    algos = args.algos.split(",")
    if args.sb3_python:
        out = subprocess.run(
            [
                args.sb3_python,
                str(ROOT / "bench" / "sb3_cartpole.py"),
                str(args.seed),
                str(args.budget_s),
                ",".join(algos),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        figures.update(json.loads(out.stdout.strip().splitlines()[-1]))
    examples = {"PPO": "cartpole_ppo", "DQN": "cartpole_dqn"}
    figures["rlserve"] = {a: measure(examples[a], args.seed, args.budget_s) for a in algos}
    sb3_ppo = figures.get("sb3", {}).get("PPO", {}).get("reached_450")
    ours = figures["rlserve"].get("PPO", {}).get("to_return_450")
    if sb3_ppo and ours:
        figures["ppo_speedup_vs_sb3_to_450"] = round(sb3_ppo["wall_s"] / ours["wall_s"], 2)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
