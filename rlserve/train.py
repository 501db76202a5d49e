"""``rlserve train``: build an algorithm from options or a tuned example and train it.

Prints one progress line per iteration (iteration, env steps, mean return, steps/s, ETA to
the stop criterion), writes every result to the run directory (``results.jsonl``,
``progress.csv`` and TensorBoard event files: :mod:`rlserve.results`), checkpoints periodically
and at the end, and names the best checkpoint on its last line. Ctrl-C writes a final
checkpoint and exits cleanly (exit status 0).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from rlserve.results import ResultLogger

__all__ = ["TrainOptions", "build_config", "parse_set_options", "run_training"]


@dataclass
class TrainOptions:
    """Everything ``rlserve train`` needs, already parsed."""

    algo: str = "PPO"
    env: str | None = None
    config_file: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    stop_reward: float | None = None
    stop_timesteps: int | None = None
    stop_iters: int | None = None
    checkpoint_dir: str = "runs/latest"
    checkpoint_every: int = 0
    seed: int | None = None
    resume: str | None = None


def parse_set_options(items: list[str]) -> dict[str, Any]:
    """Parse ``--set key=value`` items; values are JSON when they parse, strings otherwise.

    Raises:
        ValueError: For an item without ``=``.
    """
    settings: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: expected key=value, e.g. --set lr=0.001")
        try:
            settings[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            settings[key.strip()] = raw
    return settings


def _metric(result: dict[str, Any], path: str) -> float:
    value: Any = result
    for part in path.split("/"):
        if not isinstance(value, dict) or part not in value:
            return math.nan
        value = value[part]
    return float(value) if isinstance(value, int | float) else math.nan


def build_config(options: TrainOptions) -> tuple[Any, dict[str, float]]:
    """The algorithm config and stop criteria that ``options`` describe (validated)."""
    from training.checkpoints import ALGORITHMS, algorithm_class
    from training.config import ConfigError
    from training.tuned_examples import load_tuned_example

    stop: dict[str, float] = {}
    if options.config_file:
        example = load_tuned_example(options.config_file)
        config, stop = example.config, dict(example.stop)
    else:
        algo = options.algo.upper()
        if algo not in ALGORITHMS:
            raise ConfigError(f"--algo {options.algo!r}: choose one of {sorted(ALGORITHMS)}")
        config = algorithm_class(algo).get_default_config()
    if options.env:
        config.environment(options.env)
    config.update_from_dict(options.settings)
    if options.seed is not None:
        config.debugging(seed=options.seed)
    if options.stop_reward is not None:
        stop["env_runners/episode_return_mean"] = options.stop_reward
    if options.stop_timesteps is not None:
        stop["num_env_steps_sampled_lifetime"] = float(options.stop_timesteps)
    if options.stop_iters is not None:
        stop["training_iteration"] = float(options.stop_iters)
    if not stop:
        stop["training_iteration"] = 10.0
    return config, stop


def run_training(options: TrainOptions, console: Console) -> Path:
    """Train until a stop criterion is met; return the best checkpoint's path."""
    config, stop = build_config(options)
    run_dir = Path(options.checkpoint_dir)
    if options.resume:
        if options.config_file or options.env:
            raise ValueError(
                "--resume continues the checkpoint's own config and env; "
                "change settings with --set instead of --config/--env"
            )
        from training import Algorithm

        # Weights, optimizer, filter statistics and counters come back; the stop criteria
        # count from the checkpoint's lifetime totals.
        overrides = dict(options.settings)
        if options.seed is not None:
            overrides["seed"] = options.seed
        resumed = Algorithm.from_checkpoint(options.resume, **overrides)
        config = resumed.config
    run_dir.mkdir(parents=True, exist_ok=True)
    algo = resumed if options.resume else config.build()
    console.print(
        f"[bold]training[/] {algo.name} on {config.env} — stop when "
        + ", ".join(f"{k} >= {v:g}" for k, v in stop.items())
    )
    best_return, best_path = -math.inf, None
    start = time.perf_counter()
    last: dict[str, Any] = {}
    try:
        with ResultLogger(run_dir) as results:
            while True:
                last = algo.train()
                results.log(last)
                console.print(_progress_line(last, stop, time.perf_counter() - start))
                ret = _metric(last, "env_runners/episode_return_mean")
                every = options.checkpoint_every
                if every and algo.iteration % every == 0:
                    path = algo.save(str(run_dir / f"checkpoint_{algo.iteration:06d}"))
                    if ret > best_return:
                        best_return, best_path = ret, Path(path.checkpoint.path)
                if any(_metric(last, k) >= v for k, v in stop.items()):
                    break
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: writing a final checkpoint[/]")
    finally:
        try:
            final = Path(algo.save(str(run_dir / "checkpoint_final")).checkpoint.path)
        finally:
            algo.stop()
    final_return = _metric(last, "env_runners/episode_return_mean")
    if best_path is None or not final_return < best_return:
        best_path = final
    console.print(f"best checkpoint: {best_path}")
    return best_path


def _progress_line(result: dict[str, Any], stop: dict[str, float], elapsed: float) -> str:
    steps = int(result.get("num_env_steps_sampled_lifetime", 0))
    ret = _metric(result, "env_runners/episode_return_mean")
    rate = steps / elapsed if elapsed > 0 else 0.0
    eta = ""
    target = stop.get("num_env_steps_sampled_lifetime")
    if target and rate > 0:
        eta = f"  eta≤{max(0.0, (target - steps) / rate):5.0f}s"
    return (
        f"iter {int(result.get('training_iteration', 0)):4d}  steps {steps:8d}  "
        f"return {ret:8.2f}  {rate:7.0f} steps/s  {elapsed:6.1f}s{eta}"
    )
