"""``rlserve train``: train a policy until a stop criterion is met."""

from __future__ import annotations

from typing import Annotated

import typer

from rlserve.commands import Dashboard, LogLevel, RayAddress, console, err_console, guarded

__all__ = ["command"]


@guarded
def command(
    algo: Annotated[str, typer.Option(help="PPO, DQN, SAC or IMPALA (any case).")] = "PPO",
    env: Annotated[
        str | None,
        typer.Option(help="Gymnasium id or 'module:Class' (default: from --config, else none)."),
    ] = None,
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            help="Tuned-example YAML/JSON (algo, env, stop, config), e.g. "
            "training/tuned_examples/cartpole_ppo.yaml or just cartpole_ppo.",
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override a setting: --set lr=0.001 (repeatable; JSON values; SAC has "
            "actor_lr, critic_lr, alpha_lr instead of lr).",
        ),
    ] = None,
    num_env_runners: Annotated[
        int | None, typer.Option(help="Remote EnvRunner actors (0 samples in this process).")
    ] = None,
    num_envs_per_env_runner: Annotated[
        int | None, typer.Option(help="Vectorised env copies per runner.")
    ] = None,
    stop_reward: Annotated[
        float | None, typer.Option(help="Stop at this mean training return (last 100 episodes).")
    ] = None,
    stop_timesteps: Annotated[
        int | None, typer.Option(help="Stop after this many env steps.")
    ] = None,
    stop_iters: Annotated[int | None, typer.Option(help="Stop after this many iterations.")] = None,
    checkpoint_dir: Annotated[
        str,
        typer.Option(
            help="Run directory: checkpoints, results.jsonl, progress.csv, TensorBoard files."
        ),
    ] = "runs/latest",
    checkpoint_every: Annotated[
        int, typer.Option(help="Also checkpoint every N iterations (0: only at the end).")
    ] = 0,
    output: Annotated[
        str | None, typer.Option(help="Write episode traces as JSON lines into this directory.")
    ] = None,
    address: RayAddress = None,
    dashboard: Dashboard = False,
    log_level: LogLevel = None,
    seed: Annotated[int | None, typer.Option(help="Seed for reproducible runs.")] = None,
    resume: Annotated[
        str | None,
        typer.Option(
            help="Continue training from this checkpoint (its config, weights, optimizer, "
            "filter statistics and counters); --set still overrides settings. A run "
            "directory (e.g. runs/latest) resumes from its newest checkpoint that verifies, "
            "skipping newer empty, partial or tampered ones with a warning."
        ),
    ] = None,
) -> None:
    """Train a policy until a stop criterion is met, then name the best checkpoint.

    Progress: a live display on a terminal (a bar and time left per stop criterion), else lines.
    """
    from rlserve.jobs.training import TrainOptions, parse_set_options, run_training

    settings = parse_set_options(set_ or [])
    for key, value in (
        ("num_env_runners", num_env_runners),
        ("num_envs_per_env_runner", num_envs_per_env_runner),
        ("output", output),
        ("log_level", log_level),
    ):
        if value is not None:
            settings[key] = value
    options = TrainOptions(
        algo=algo,
        env=env,
        config_file=config,
        settings=settings,
        stop_reward=stop_reward,
        stop_timesteps=stop_timesteps,
        stop_iters=stop_iters,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every,
        seed=seed,
        resume=resume,
        address=address,
        dashboard=dashboard,
    )
    run_training(options, console, err_console)
