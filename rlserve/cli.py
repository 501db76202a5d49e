"""The ``rlserve`` command-line application (Typer).

Commands arrive with the issues that build them: ``train``, ``tune``, ``export``, ``serve``,
``evaluate``, ``bench`` and ``demo``. Heavy imports (torch, ray) happen inside the commands so
that ``rlserve --help`` stays fast.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from rlserve import __version__

app = typer.Typer(
    name="rlserve",
    help="Train reinforcement-learning policies on Ray, export them, and serve them over HTTP.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()


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
