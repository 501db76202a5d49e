"""``rlserve tune``: sweep hyper-parameters with Ray Tune."""

from __future__ import annotations

from typing import Annotated

import typer

from rlserve.commands import Dashboard, LogLevel, RayAddress, console, fail, guarded

__all__ = ["command"]


@guarded
def command(
    algo: Annotated[str, typer.Option(help="PPO, DQN, SAC or IMPALA (any case).")] = "PPO",
    env: Annotated[str | None, typer.Option(help="Gymnasium id or 'module:Class'.")] = None,
    config: Annotated[
        str | None, typer.Option("--config", help="Tuned-example YAML/JSON as the base config.")
    ] = None,
    grid: Annotated[
        list[str] | None,
        typer.Option(
            "--grid",
            help="Sweep a setting: --grid lr=0.01,0.001 (repeatable; SAC: actor_lr, critic_lr).",
        ),
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Fix a setting: --set gamma=0.98.")
    ] = None,
    num_samples: Annotated[int, typer.Option(help="Repeats of the whole grid.")] = 1,
    stop_reward: Annotated[float | None, typer.Option(help="Stop a trial at this return.")] = None,
    stop_timesteps: Annotated[int | None, typer.Option(help="Stop after this many steps.")] = None,
    stop_iters: Annotated[int | None, typer.Option(help="Stop after this many iterations.")] = None,
    storage: Annotated[str, typer.Option(help="Where Tune writes trials.")] = "runs/tune",
    address: RayAddress = None,
    dashboard: Dashboard = False,
    log_level: LogLevel = None,
) -> None:
    """Sweep hyper-parameters with Ray Tune; print the trial table and the best checkpoint."""
    from rlserve.jobs.sweep import parse_grid, run_sweep
    from rlserve.jobs.training import TrainOptions, build_config, parse_set_options
    from training.metrics import EPISODE_RETURN_MEAN_PATH

    options = TrainOptions(
        algo=algo,
        env=env,
        config_file=config,
        settings=parse_set_options(set_ or []),
        stop_reward=stop_reward,
        stop_timesteps=stop_timesteps,
        stop_iters=stop_iters,
    )
    base, stop = build_config(options)
    sweep = parse_grid(grid or [])
    if not sweep:
        raise fail("give at least one --grid key=v1,v2,...")
    best = run_sweep(
        base,
        sweep,
        stop,
        num_samples=num_samples,
        storage=storage,
        metric=EPISODE_RETURN_MEAN_PATH,
        console=console,
        address=address,
        dashboard=dashboard,
    )
    console.print(f"best checkpoint: {best}")
