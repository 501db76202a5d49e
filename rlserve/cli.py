"""The ``rlserve`` command-line application (Typer): the app and its commands.

Each command is one module of :mod:`rlserve.commands` (options, a call to its job in
:mod:`rlserve.jobs`, the rendering), run inside the CLI's one error boundary
(:func:`rlserve.commands.guarded`). Heavy imports (torch, ray) happen inside the commands so
that ``rlserve --help`` stays fast.
"""

from __future__ import annotations

from typing import Annotated

import typer

from rlserve import __version__
from rlserve.commands import (
    bench,
    console,
    demo,
    evaluate,
    export,
    ingress_env,
    serve,
    train,
    tune,
)

__all__ = ["app", "main"]

app = typer.Typer(
    name="rlserve",
    help="Train reinforcement-learning policies on Ray, export them, and serve them over HTTP.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"rlserve {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version_callback,
            is_eager=True,
            help="Print the rlserve version and exit.",
        ),
    ] = False,
) -> None:
    """Train reinforcement-learning policies on Ray, export them, and serve them over HTTP."""
    from rlserve.jobs.local_ray import keep_ray_on_loopback
    from rlserve.jobs.stop_signals import take_stop_signals_back

    keep_ray_on_loopback()  # before any command imports ray
    take_stop_signals_back()  # Ctrl-C and SIGTERM stop every command, however we were started


for _module in (train, export, serve, evaluate, demo, tune, bench, ingress_env):
    app.command(_module.__name__.rsplit(".", 1)[-1].replace("_", "-"))(_module.command)
