"""``rlserve tune``: a hyper-parameter sweep through Ray Tune.

``--grid lr=0.01,0.001`` becomes ``tune.grid_search([0.01, 0.001])`` for that setting (values
are JSON when they parse); several ``--grid`` options multiply. Each trial is an algorithm
built from the same base config (any registered algorithm: ``--grid actor_lr=...`` for SAC,
which has no single ``lr``); the trial table and the best checkpoint are printed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from formats.errors import RlserveError
from rlserve.jobs.local_ray import init_ray
from training.metrics import TRAINING_ITERATION, lookup

__all__ = ["SweepError", "parse_grid", "run_sweep"]


class SweepError(RlserveError, ValueError):
    """A ``--grid`` option is malformed, or every trial of the sweep failed."""


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """Parse ``key=v1,v2,...`` items into value lists.

    Raises:
        SweepError: For an item without ``=`` or without values.
    """
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        values = [v.strip() for v in raw.split(",") if v.strip()]
        if not sep or not key.strip() or not values:
            raise SweepError(f"--grid {item!r}: expected key=v1,v2,... e.g. --grid lr=0.01,0.001")
        parsed = []
        for value in values:
            try:
                parsed.append(json.loads(value))
            except json.JSONDecodeError:
                parsed.append(value)
        grid[key.strip()] = parsed
    return grid


def run_sweep(
    config: Any,
    grid: dict[str, list[Any]],
    stop: dict[str, float],
    *,
    num_samples: int,
    storage: str,
    metric: str,
    console: Console,
    address: str | None = None,
    dashboard: bool = False,
) -> Path | None:
    """Run the sweep; print the trial table; return the best trial's checkpoint directory.

    Raises:
        ConfigError: For a grid value the config refuses (checked before Ray starts).
        RayClusterError: When the cluster at ``address`` cannot be reached.
        SweepError: When every trial failed (naming the first failure), or none reported
            ``metric``.
    """
    from ray import tune

    trial_cpus = _trial_cpus(config)
    for key, values in grid.items():
        for candidate in values:
            # Each value is checked here, before Ray starts: a bad one (SAC's lr, a gamma of
            # 2) is one ConfigError now, not every trial failing after Ray's start-up.
            trial_cpus = max(
                trial_cpus, _trial_cpus(config.copy().update_from_dict({key: candidate}))
            )
        config.update_from_dict({key: tune.grid_search(values)})
    # Tune's own ray.init would also start the dashboard (seconds of start-up on a loaded
    # 2-core machine, and a listener nothing here uses) and join any cluster a `ray start`
    # left running here. Trials' checkpoints go to `storage` through Tune's storage context.
    init_ray(address, dashboard=dashboard)
    _check_trial_fits(trial_cpus)
    tuner = tune.Tuner(
        config.algo_class,
        param_space=config,
        tune_config=tune.TuneConfig(num_samples=num_samples),
        run_config=tune.RunConfig(
            storage_path=str(Path(storage).resolve()),
            stop=stop,
            checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=True),
            verbose=0,
        ),
    )
    results = tuner.fit()
    table = Table(title="trials")
    for column in ("trial", *grid, "iterations", metric, "status"):
        table.add_column(column)
    for index in range(len(results)):
        result = results[index]
        trial_config = result.config or {}
        metrics = result.metrics or {}
        try:
            value: Any = lookup(metrics, metric)
        except KeyError:
            value = None
        table.add_row(
            str(index),
            *(str(trial_config.get(key)) for key in grid),
            str(metrics.get(TRAINING_ITERATION, "")),
            "" if value is None else f"{value:.2f}",
            "error" if result.error else "ok",
        )
    console.print(table)
    if results.num_errors == len(results):
        raise SweepError(f"every trial failed; the first: {results[0].error}")
    if not any(_finite(results[i].metrics or {}, metric) for i in range(len(results))):
        # Tune's own get_best_result raises a RuntimeError here: with no finished episode
        # (a trial of 100 env steps on Pendulum, whose episodes are 200) no trial is best.
        raise SweepError(
            f"no trial reported {metric} (no episode finished before the stop criteria); "
            "train longer, e.g. --stop-timesteps or --stop-iters"
        )
    best = results.get_best_result(metric=metric, mode="max")
    if best.checkpoint is None:
        return None
    return Path(best.checkpoint.path)


def _trial_cpus(config: Any) -> float:
    """CPUs one trial reserves: the driver plus one bundle per env runner."""
    request = config.algo_class.default_resource_request(config)
    return float(sum(bundle.get("CPU", 0) for bundle in request.bundles))


def _check_trial_fits(trial_cpus: float) -> None:
    """Refuse a sweep whose trials could never start (Tune would wait for them forever).

    Raises:
        SweepError: Naming the settings that size a trial.
    """
    import ray

    total = float(ray.cluster_resources().get("CPU", 0))  # type: ignore[no-untyped-call]
    if trial_cpus > total:
        raise SweepError(
            f"a trial needs {trial_cpus:g} CPUs (num_cpus_for_main_process plus "
            f"num_cpus_per_env_runner for each of num_env_runners) but the Ray cluster has "
            f"{total:g}: lower them, e.g. --set num_cpus_per_env_runner=0.5, or add nodes"
        )


def _finite(metrics: dict[str, Any], path: str) -> bool:
    """Whether ``metrics`` holds a finite number at ``path``."""
    try:
        value = lookup(metrics, path)
    except KeyError:
        return False
    return isinstance(value, int | float) and math.isfinite(value)
