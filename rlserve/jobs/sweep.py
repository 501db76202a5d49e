"""``rlserve tune``: a hyper-parameter sweep through Ray Tune.

``--grid lr=0.01,0.001`` becomes ``tune.grid_search([0.01, 0.001])`` for that setting (values
are JSON when they parse); several ``--grid`` options multiply. Each trial is an algorithm
built from the same base config; the trial table and the best checkpoint are printed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from formats.errors import RlserveError
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
) -> Path | None:
    """Run the sweep; print the trial table; return the best trial's checkpoint directory.

    Raises:
        SweepError: When every trial failed (naming the first failure).
    """
    from ray import tune

    for key, values in grid.items():
        config.update_from_dict({key: tune.grid_search(values)})
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
    best = results.get_best_result(metric=metric, mode="max")
    if best.checkpoint is None:
        return None
    return Path(best.checkpoint.path)
