"""``rlserve demo``: the whole pipeline: train, export, serve, query, evaluate."""

from __future__ import annotations

from typing import Annotated

import typer

from rlserve.commands import LogLevel, console, guarded

__all__ = ["command"]


@guarded
def command(
    episodes: Annotated[int, typer.Option(help="Evaluation episodes played over HTTP.")] = 5,
    port: Annotated[int, typer.Option(help="HTTP port (0 picks a free one).")] = 0,
    workdir: Annotated[str, typer.Option(help="Where the run and the artifact go.")] = "runs/demo",
    keep_running: Annotated[
        bool,
        typer.Option(
            help="Keep serving after the demo until Ctrl-C (or SIGTERM); the demo then "
            "prints the service's URLs."
        ),
    ] = False,
    log_level: LogLevel = None,
) -> None:
    """Train PPO on CartPole until solved, export it, serve it, query it, evaluate it."""
    from rlserve.jobs.demo import run_demo

    run_demo(console, episodes=episodes, port=port, workdir=workdir, keep_running=keep_running)
