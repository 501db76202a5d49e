"""``rlserve train``: build an algorithm from options or a tuned example and train it.

Shows progress (iteration, env steps, mean return, steps/s, ETA to the stop criterion) as a
rich live display on a terminal and as one line per iteration elsewhere
(:mod:`rlserve.jobs.progress`), writes every result to the run directory (``results.jsonl``,
``progress.csv`` and TensorBoard event files: :mod:`rlserve.jobs.results`), checkpoints periodically
and at the end, and names the best checkpoint on its last line. Ctrl-C (or SIGTERM) writes a
final checkpoint and exits cleanly (exit status 0). ``--resume`` takes a checkpoint directory or a
run directory (its newest checkpoint that verifies; newer broken ones are skipped, with a
warning each).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from formats.safeio import read_json
from rlserve.jobs.local_ray import init_ray
from rlserve.jobs.progress import TrainingProgress, metric
from rlserve.jobs.results import ResultLogger
from rlserve.jobs.stop_signals import StopSignals
from training.metrics import (
    EPISODE_RETURN_MEAN_PATH,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    TRAINING_ITERATION,
)

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
    address: str | None = None
    """The Ray cluster the env runners run on (``None``: a private Ray, started when needed)."""
    dashboard: bool = False
    """Start Ray's dashboard (loopback) with the Ray started here."""


def parse_set_options(items: list[str]) -> dict[str, Any]:
    """Parse ``--set key=value`` items; values are JSON when they parse, strings otherwise.

    Raises:
        ConfigError: For an item without ``=``.
    """
    from training.config import ConfigError

    settings: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set lr=0.001")
        try:
            settings[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            settings[key.strip()] = raw
    return settings


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
        stop[EPISODE_RETURN_MEAN_PATH] = options.stop_reward
    if options.stop_timesteps is not None:
        stop[NUM_ENV_STEPS_SAMPLED_LIFETIME] = float(options.stop_timesteps)
    if options.stop_iters is not None:
        stop[TRAINING_ITERATION] = float(options.stop_iters)
    if not stop:
        stop[TRAINING_ITERATION] = 10.0
    return config, stop


def _resume(options: TrainOptions, source: str, console: Console, warnings: Console) -> Any:
    """The algorithm ``--resume source`` names, rebuilt with ``--set``/``--seed`` applied."""
    if options.config_file or options.env:
        from training.config import ConfigError

        raise ConfigError(
            "--resume continues the checkpoint's own config and env; "
            "change settings with --set instead of --config/--env"
        )
    from training import Algorithm
    from training.checkpoints import algorithm_class
    from training.run_directory import resolve_checkpoint

    # A run directory resumes from its newest checkpoint that verifies; newer ones that do
    # not (a kill mid-save, tampering) are named, with why, and passed over.
    checkpoint, skipped = resolve_checkpoint(source)
    for item in skipped:
        warnings.print(
            f"[yellow]warning:[/] skipping checkpoint {escape(str(item.path))}: "
            + escape(item.reason),
            highlight=False,
            soft_wrap=True,  # one line per skipped checkpoint, however long
        )
    if checkpoint != Path(source):
        console.print(f"resuming from {escape(str(checkpoint))}", highlight=False)
    # Weights, optimizer, filter statistics and counters come back; the stop criteria count
    # from the checkpoint's lifetime totals.
    overrides = dict(options.settings)
    if options.seed is not None:
        overrides["seed"] = options.seed
    metadata = read_json(checkpoint / "metadata.json", max_bytes=1024**2)
    saved = read_json(checkpoint / "algorithm_config.json", max_bytes=1024**2)
    config = algorithm_class(str(metadata.get("algorithm"))).get_default_config()
    _start_ray(options, config.update_from_dict(saved).update_from_dict(overrides).uses_ray)
    return Algorithm.from_checkpoint(checkpoint, **overrides)


def _start_ray(options: TrainOptions, uses_ray: bool) -> None:
    """Join ``--address``, or start a private Ray for the config's actors or ``--dashboard``.

    Before ``build()``: the library's own ``ray.init()`` (for remote runners, learner actors
    or env actors) would join any cluster a ``ray start`` left running on this machine.
    Checkpoints are written by this process (the driver), so no other node needs this disk.
    """
    if options.address is not None or options.dashboard or uses_ray:
        init_ray(options.address, dashboard=options.dashboard)


def run_training(options: TrainOptions, console: Console, warnings: Console | None = None) -> Path:
    """Train until a stop criterion is met; return the best checkpoint's path.

    Args:
        options: What to train and how.
        console: Progress and the final ``best checkpoint:`` line.
        warnings: Where warnings go (one line each), e.g. a stderr console; default ``console``.

    Raises:
        CheckpointError: If ``--resume`` names a checkpoint that does not verify, or a run
            directory none of whose checkpoints verifies.
    """
    config, stop = build_config(options)
    run_dir = Path(options.checkpoint_dir)
    resumed = None
    if options.resume:
        resumed = _resume(options, options.resume, console, warnings or console)
        config = resumed.config
    run_dir.mkdir(parents=True, exist_ok=True)
    if resumed is None:
        _start_ray(options, config.uses_ray)
    algo = resumed if resumed is not None else config.build()
    console.print(
        f"[bold]training[/] {algo.name} on {config.env} — stop when "
        + ", ".join(f"{k} >= {v:g}" for k, v in stop.items())
    )
    best_return, best_path = -math.inf, None
    last: dict[str, Any] = {}
    # Ctrl-C and SIGTERM (docker stop) both end training with a final checkpoint. A signal
    # that lands inside Ray's C++ calls can be swallowed there; check() raises it again after
    # the iteration, so a stop is never lost.
    with StopSignals() as guard:
        try:
            with ResultLogger(run_dir) as results, TrainingProgress(console, stop) as progress:
                while True:
                    last = algo.train()
                    results.log(last)
                    progress.update(last)
                    guard.check()
                    ret = metric(last, EPISODE_RETURN_MEAN_PATH)
                    every = options.checkpoint_every
                    if every and algo.iteration % every == 0:
                        path = algo.save(str(run_dir / f"checkpoint_{algo.iteration:06d}"))
                        if ret > best_return:
                            best_return, best_path = ret, Path(path.checkpoint.path)
                    if any(metric(last, k) >= v for k, v in stop.items()):
                        break
        except KeyboardInterrupt:
            console.print("[yellow]interrupted: writing a final checkpoint[/]")
        finally:
            with guard.stopping():  # a second signal must not cut the final save short
                try:
                    final = Path(algo.save(str(run_dir / "checkpoint_final")).checkpoint.path)
                finally:
                    algo.stop()
    final_return = metric(last, EPISODE_RETURN_MEAN_PATH)
    if best_path is None or not final_return < best_return:
        best_path = final
    console.print(f"best checkpoint: {best_path}")
    return best_path
