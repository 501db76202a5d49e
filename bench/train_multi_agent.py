"""Benchmark: two-agent CartPole to RLlib's bar, sampling in the driver and on two runners.

Trains the tuned example ``multi_agent_cartpole_ppo`` (two CartPole agents, one PPO policy
each) until a summed mean training return of ``--target`` (800, RLlib's tuned-example bar) or
``--max-steps`` env steps, twice in one run: with the env copies in the driver
(``num_env_runners=0``, 8 copies) and on two remote runners (4 copies each, the same 8 in all).
Reports per layout: env steps, agent steps and wall seconds to the target (``null`` if not
reached), the best mean return, and env and agent steps per second (sampling and learning
together). RLlib's multi-agent PPO is not run here (``ray[rllib]`` is not installed in the
benchmark's environment). Prints one JSON line.

    python bench/train_multi_agent.py [--seed 0] [--target 800] [--max-steps 300000]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from training import metrics as m
from training.tuned_examples import load_tuned_example

EXAMPLE = "multi_agent_cartpole_ppo"
LAYOUTS = {
    "driver_8_copies": {"num_env_runners": 0, "num_envs_per_env_runner": 8},
    "2_runners_4_copies": {"num_env_runners": 2, "num_envs_per_env_runner": 4},
}


def measure(layout: dict[str, Any], seed: int, target: float, max_steps: int) -> dict[str, Any]:
    """Train the example in ``layout`` until the target or ``max_steps`` env steps."""
    config = load_tuned_example(EXAMPLE).config.debugging(seed=seed)
    config.update_from_dict(layout)
    reached, best, steps, agent_steps, train_s = None, float("-inf"), 0, 0, 0.0
    with config.build() as algo:
        while steps < max_steps:
            start = time.perf_counter()
            result = algo.train()
            train_s += time.perf_counter() - start
            steps = int(result[m.NUM_ENV_STEPS_SAMPLED_LIFETIME])
            agent_steps = int(result[m.NUM_AGENT_STEPS_SAMPLED_LIFETIME])
            ret = float(result[m.ENV_RUNNER_RESULTS][m.EPISODE_RETURN_MEAN])
            best = max(best, ret)
            if ret >= target:
                reached = {
                    "env_steps": steps,
                    "agent_steps": agent_steps,
                    "wall_s": round(train_s, 1),
                }
                break
    return {
        "to_target": reached,
        "best_return": round(best, 1),
        "env_steps": steps,
        "train_s": round(train_s, 1),
        "env_steps_per_s": round(steps / train_s, 1) if train_s else 0.0,
        "agent_steps_per_s": round(agent_steps / train_s, 1) if train_s else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target", type=float, default=800.0)
    parser.add_argument("--max-steps", type=int, default=300_000)
    args = parser.parse_args()
    figures: dict[str, Any] = {"bench": "train_multi_agent", "example": EXAMPLE, "seed": args.seed}
    for name, layout in LAYOUTS.items():
        figures[name] = measure(layout, args.seed, args.target, args.max_steps)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
