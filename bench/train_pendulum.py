"""Benchmark: wall time and env steps for SAC to a deterministic evaluation of -200 on Pendulum-v1.

For each seed, trains the tuned example (default ``pendulum_sac``) and, whenever the env steps
reach the next multiple of ``--eval-every``, plays ``--eval-episodes`` deterministic episodes
with ``algo.evaluate()`` (evaluation time excluded from the wall clock); stops at the first
evaluation mean >= ``--target`` or after ``--max-steps`` env steps (or ``--budget-s`` wall
seconds of training). Reports wall seconds, env steps and iterations to the target, env steps
per second and the evaluation curve ``[env steps, eval mean]``.

With ``--sb3-python`` the same run first measures Stable-Baselines3 SAC (rl-zoo
hyper-parameters, ``bench/sb3_pendulum.py``) for the same seeds, on the same machine, with the
same evaluation protocol (the same seeded initial states, deterministic actions, episodes and
cadence) and the same torch thread count as our learner, and reports our wall time to the target
divided by SB3's, per seed and the median. Prints one JSON line.

    python bench/train_pendulum.py [--seeds 0 1 2] [--example pendulum_sac]
        [--sb3-python .venv-bench/bin/python] [--num-gpus 1 --sb3-device cuda]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

from training.env_runner import derive_seed
from training.metrics import (
    EPISODE_RETURN_MEAN_PATH,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    TRAINING_ITERATION,
    lookup,
)
from training.tuned_examples import load_tuned_example

ROOT = Path(__file__).resolve().parent.parent
EVAL_RUNNER_INDEX = 1_000_000
"""The runner index ``Algorithm.evaluate`` gives its evaluation runner (training/algorithm.py)."""


def eval_seed(seed: int) -> int:
    """The seed of the env ``algo.evaluate()`` plays for training seed ``seed``."""
    value = derive_seed(seed, EVAL_RUNNER_INDEX, 0)
    assert value is not None  # a seed in gives a seed out
    return value


def learner_threads(example: str) -> int:
    """Torch threads our learner runs with (what ``Algorithm.setup`` sets from the config)."""
    return max(1, int(load_tuned_example(example).config.num_cpus_for_main_process))


def measure(example: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train one seed of the tuned example until the evaluation target (or a budget)."""
    config = load_tuned_example(example).config
    config.debugging(seed=seed).evaluation(
        evaluation_interval=None, evaluation_duration=args.eval_episodes
    )
    if args.num_gpus:
        config.resources(num_gpus=args.num_gpus)
    build_start = time.perf_counter()
    algo = config.build()
    build_s = time.perf_counter() - build_start
    train_s = 0.0
    steps = iterations = 0
    next_eval = args.eval_every
    curve: list[list[float]] = []
    reached: dict[str, Any] | None = None
    with algo:
        while steps < args.max_steps and train_s < args.budget_s:
            start = time.perf_counter()
            result = algo.train()
            train_s += time.perf_counter() - start
            steps = int(result[NUM_ENV_STEPS_SAMPLED_LIFETIME])
            iterations = int(result[TRAINING_ITERATION])
            if steps < next_eval and steps < args.max_steps:
                continue
            # The same cadence as SB3's chunks, whatever an iteration's size (time excluded).
            next_eval = (steps // args.eval_every + 1) * args.eval_every
            mean = float(lookup(algo.evaluate(), EPISODE_RETURN_MEAN_PATH))
            curve.append([steps, round(mean, 1)])
            if mean >= args.target:
                reached = {
                    "wall_s": round(train_s, 2),
                    "env_steps": steps,
                    "iterations": iterations,
                    "eval_return": round(mean, 1),
                    # The last iteration may end past --max-steps; say whether it did.
                    "within_max_steps": steps <= args.max_steps,
                }
                break
        threads = torch.get_num_threads()
    return {
        "build_s": round(build_s, 2),
        "reached": reached,
        "env_steps": steps,
        "iterations": iterations,
        "train_s": round(train_s, 2),
        "env_steps_per_s": round(steps / train_s, 1) if train_s else 0.0,
        "torch_threads": threads,
        "curve": curve,
    }


def run_sb3(python: str, seeds: list[int], threads: int, args: argparse.Namespace) -> Any:
    """Run ``bench/sb3_pendulum.py`` in its own virtualenv with our protocol; its JSON."""
    command = [
        python,
        str(ROOT / "bench" / "sb3_pendulum.py"),
        "--seeds",
        *map(str, seeds),
        "--eval-seeds",
        *(str(eval_seed(s)) for s in seeds),
        "--target",
        str(args.target),
        "--max-steps",
        str(args.max_steps),
        "--budget-s",
        str(args.budget_s),
        "--eval-every",
        str(args.eval_every),
        "--eval-episodes",
        str(args.eval_episodes),
        "--threads",
        str(threads),
        "--device",
        args.sb3_device,
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{python} bench/sb3_pendulum.py failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])["sb3"]


def wall_ratios(ours: dict[str, Any], sb3: dict[str, Any]) -> dict[str, Any]:
    """Our wall seconds to the target over SB3's, per seed (None where either missed) and median.

    Args:
        ours: Per-seed results of :func:`measure`, keyed by the seed as a string.
        sb3: Per-seed results of ``sb3_pendulum.run``, same keys.
    """
    per_seed: dict[str, float | None] = {}
    for seed, result in ours.items():
        mine, theirs = result["reached"], sb3.get(seed, {}).get("reached")
        per_seed[seed] = round(mine["wall_s"] / theirs["wall_s"], 3) if mine and theirs else None
    known = [r for r in per_seed.values() if r is not None]
    return {
        "per_seed": per_seed,
        "median": round(statistics.median(known), 3) if known else None,
        "seeds_compared": len(known),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``argv``, default ``sys.argv[1:]``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--example", default="pendulum_sac", help="tuned example name or file")
    parser.add_argument("--target", type=float, default=-200.0)
    parser.add_argument("--max-steps", type=int, default=20_000)
    parser.add_argument("--budget-s", type=float, default=900.0, help="training wall s per seed")
    parser.add_argument("--eval-every", type=int, default=1000, help="env steps")
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--num-gpus", type=float, default=0, help="our learner on CUDA")
    parser.add_argument("--sb3-python", help="a Python that has stable-baselines3 installed")
    parser.add_argument("--sb3-device", default="cpu", help="SB3's device (cpu, cuda)")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    threads = learner_threads(args.example)
    figures: dict[str, Any] = {
        "bench": "train_pendulum",
        "env": "Pendulum-v1",
        "example": args.example,
        "target": args.target,
        "max_env_steps": args.max_steps,
        "evaluation": {
            "episodes": args.eval_episodes,
            "every_env_steps": args.eval_every,
            "deterministic": True,
            "env_seeds": {str(s): eval_seed(s) for s in args.seeds},
        },
        "torch_threads": threads,
    }
    if args.sb3_python:
        figures["sb3"] = run_sb3(args.sb3_python, args.seeds, threads, args)
    ours = {str(s): measure(args.example, s, args) for s in args.seeds}
    figures["rlserve"] = {"num_gpus": args.num_gpus, "seeds": ours}
    figures["seeds_reached"] = {  # within --max-steps (our last iteration may end past it)
        "rlserve": sum(
            bool(r["reached"] and r["reached"]["within_max_steps"]) for r in ours.values()
        ),
        "of": len(ours),
    }
    if "sb3" in figures:
        sb3 = figures["sb3"]["seeds"]
        figures["seeds_reached"]["sb3"] = sum(r["reached"] is not None for r in sb3.values())
        figures["wall_ratio_vs_sb3"] = wall_ratios(ours, sb3)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
