"""Stable-Baselines3 yardstick: SAC on Pendulum-v1 with rl-zoo hyper-parameters.

Runs in a separate virtualenv that has stable-baselines3 (never a project dependency); called
by ``bench/train_pendulum.py --sb3-python PATH``. Trains in chunks of ``--eval-every`` env
steps and, after each chunk, plays a deterministic evaluation (not on the wall clock) exactly
as rlserve's ``Algorithm.evaluate`` plays it (see :func:`evaluate`); stops at the first
evaluation mean >= ``--target`` or after ``--max-steps``. Prints one JSON line.

    .venv-bench/bin/python bench/sb3_pendulum.py --seeds 0 [--threads 1] [--device cpu]

Only :func:`evaluate` and :func:`default_eval_seed` are needed without SB3 (the tests import
them from the project's virtualenv to check the protocol against ``Algorithm.evaluate``).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

ENV_ID = "Pendulum-v1"
# rl-zoo's hyperparams/sac.yml, Pendulum-v1: n_timesteps 2e4, MlpPolicy, learning_rate 1e-3;
# the rest are SB3's SAC defaults, spelled out so the JSON says what ran.
HYPERPARAMETERS: dict[str, Any] = {
    "learning_rate": 1e-3,
    "buffer_size": 1_000_000,
    "learning_starts": 100,
    "batch_size": 256,
    "tau": 0.005,
    "gamma": 0.99,
    "train_freq": 1,
    "gradient_steps": 1,
    "ent_coef": "auto",
    "policy_kwargs": {"net_arch": [256, 256]},
}
# training/algorithm.py builds its evaluation runner with this index; its only sub-env is
# reset with training.env_runner.derive_seed(seed, EVAL_RUNNER_INDEX, 0).
EVAL_RUNNER_INDEX = 1_000_000


def default_eval_seed(seed: int) -> int:
    """The seed rlserve's evaluation env gets for training seed ``seed``.

    The same formula as ``training.env_runner.derive_seed(seed, 1_000_000, 0)``, repeated here
    because this script cannot import the project; ``train_pendulum.py`` passes the project's
    value explicitly and the tests check that the two agree.
    """
    return int(np.random.SeedSequence([seed, EVAL_RUNNER_INDEX, 0]).generate_state(1)[0])


def evaluate(act: Callable[[np.ndarray], Any], eval_seed: int, episodes: int) -> list[float]:
    """Play ``episodes`` deterministic episodes; their returns.

    The protocol of ``Algorithm.evaluate``: one env, reset with ``eval_seed`` for the first
    episode; the later episodes start from unseeded resets that continue the env's seeded
    random stream (what gymnasium's vector-env autoreset does), so every evaluation starts
    from the same initial states.
    """
    env = gym.make(ENV_ID)
    returns: list[float] = []
    obs, _ = env.reset(seed=eval_seed)
    while len(returns) < episodes:
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total += float(reward)
            done = bool(terminated or truncated)
        returns.append(total)
        obs, _ = env.reset()
    env.close()
    return returns


def run(seed: int, eval_seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train SB3 SAC for one seed until the evaluation target (or the step/wall budget)."""
    import torch
    from stable_baselines3 import SAC

    torch.set_num_threads(args.threads)
    build_start = time.perf_counter()
    settings = copy.deepcopy(HYPERPARAMETERS)  # SB3 writes into policy_kwargs
    model = SAC("MlpPolicy", ENV_ID, seed=seed, device=args.device, verbose=0, **settings)
    build_s = time.perf_counter() - build_start

    def act(obs: np.ndarray) -> Any:
        return model.predict(obs, deterministic=True)[0]

    train_s = 0.0
    curve: list[list[float]] = []
    reached: dict[str, Any] | None = None
    while model.num_timesteps < args.max_steps and train_s < args.budget_s:
        chunk = min(args.eval_every, args.max_steps - model.num_timesteps)
        start = time.perf_counter()
        # reset_num_timesteps=False: one continuous run (same env, buffer, episode counters);
        # each chunk ends after its last step's gradient update, as rlserve's iterations do.
        model.learn(chunk, reset_num_timesteps=False)
        train_s += time.perf_counter() - start
        mean = float(np.mean(evaluate(act, eval_seed, args.eval_episodes)))
        curve.append([int(model.num_timesteps), round(mean, 1)])
        if mean >= args.target:
            reached = {
                "wall_s": round(train_s, 2),
                "env_steps": int(model.num_timesteps),
                "eval_return": round(mean, 1),
            }
            break
    return {
        "build_s": round(build_s, 2),
        "reached": reached,
        "env_steps": int(model.num_timesteps),
        "train_s": round(train_s, 2),
        "env_steps_per_s": round(model.num_timesteps / train_s, 1) if train_s else 0.0,
        "curve": curve,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument(
        "--eval-seeds", type=int, nargs="+", help="one per seed (default: rlserve's formula)"
    )
    parser.add_argument("--target", type=float, default=-200.0)
    parser.add_argument("--max-steps", type=int, default=20_000)
    parser.add_argument("--budget-s", type=float, default=900.0)
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--device", default="cpu", help="SB3's device (cpu, cuda, auto)")
    args = parser.parse_args()
    eval_seeds = args.eval_seeds or [default_eval_seed(s) for s in args.seeds]
    if len(eval_seeds) != len(args.seeds):
        parser.error(f"--eval-seeds: expected {len(args.seeds)} values, one per seed")
    import stable_baselines3
    import torch

    results = {str(s): run(s, e, args) for s, e in zip(args.seeds, eval_seeds, strict=True)}
    print(
        json.dumps(
            {
                "sb3": {
                    "version": stable_baselines3.__version__,
                    "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(),
                    "device": args.device,
                    "algo": "SAC",
                    "hyperparameters": {"policy": "MlpPolicy", **HYPERPARAMETERS},
                    "seeds": results,
                }
            }
        )
    )


if __name__ == "__main__":
    main()
