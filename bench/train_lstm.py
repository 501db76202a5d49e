"""Benchmark: what memory costs and buys in training, on StatelessCartPole (no velocities).

Trains the tuned example ``stateless_cartpole_lstm_ppo`` twice in one run: with its LSTM and
with the same settings feed-forward (``use_lstm`` off), each until a mean training return of
``--target`` (350, RLlib's bar) or ``--max-steps`` env steps or ``--budget-s`` seconds of
training. Reports per run: env steps and wall seconds to the target (``null`` if not reached),
the best mean return and env steps/s (sampling and learning together); then the LSTM's env
steps/s relative to feed-forward (the cost of carrying a state: per-step state bookkeeping in
the runners, sequences replayed step by step in the learner). Prints one JSON line.

    python bench/train_lstm.py [--seed 0] [--max-steps 500000] [--budget-s 150]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from training.metrics import (
    EPISODE_RETURN_MEAN_PATH,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    lookup,
)
from training.tuned_examples import load_tuned_example

EXAMPLE = "stateless_cartpole_lstm_ppo"


def measure(
    use_lstm: bool, seed: int, target: float, max_steps: int, budget_s: float, **overrides: Any
) -> dict[str, Any]:
    """Train the example (with or without its LSTM) until the target or a budget."""
    config = load_tuned_example(EXAMPLE).config.debugging(seed=seed)
    config.training(model={**config.model.model_dump(), "use_lstm": use_lstm})
    if overrides:
        config.update_from_dict(overrides)
    reached, best, steps = None, float("-inf"), 0
    train_s = 0.0
    with config.build() as algo:
        while train_s < budget_s and steps < max_steps:
            start = time.perf_counter()
            result = algo.train()
            train_s += time.perf_counter() - start
            steps = int(lookup(result, NUM_ENV_STEPS_SAMPLED_LIFETIME))
            ret = float(lookup(result, EPISODE_RETURN_MEAN_PATH))
            best = max(best, ret)
            if ret >= target:
                reached = {"env_steps": steps, "wall_s": round(train_s, 1)}
                break
    return {
        "use_lstm": use_lstm,
        "to_target": reached,
        "best_return": round(best, 1),
        "env_steps": steps,
        "train_s": round(train_s, 1),
        "env_steps_per_s": round(steps / train_s, 1) if train_s else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target", type=float, default=350.0)
    parser.add_argument("--max-steps", type=int, default=500_000)
    parser.add_argument("--budget-s", type=float, default=150.0)
    args = parser.parse_args()
    runs = {
        name: measure(use_lstm, args.seed, args.target, args.max_steps, args.budget_s)
        for name, use_lstm in (("lstm", True), ("feed_forward", False))
    }
    figures: dict[str, Any] = {"bench": "train_lstm", "example": EXAMPLE, "seed": args.seed}
    figures.update(runs)
    if runs["feed_forward"]["env_steps_per_s"]:
        figures["lstm_env_steps_per_s_vs_feed_forward"] = round(
            runs["lstm"]["env_steps_per_s"] / runs["feed_forward"]["env_steps_per_s"], 2
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
