"""One module per ``rlserve`` command: parse the options, call the job, render the result.

Every command runs inside :func:`guarded`, the CLI's one error boundary, and takes
``--log-level`` (:data:`LogLevel`). Heavy imports (torch, ray) happen inside the commands so
that ``rlserve --help`` stays fast.
"""

from __future__ import annotations

import functools
import logging
import traceback
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import click
import typer
from rich.console import Console

from formats.errors import RlserveError

__all__ = [
    "CliError",
    "Dashboard",
    "LogLevel",
    "RayAddress",
    "console",
    "err_console",
    "fail",
    "guarded",
]

logger = logging.getLogger(__name__)

console = Console(soft_wrap=True)
err_console = Console(stderr=True)

LogLevel = Annotated[
    str | None, typer.Option(help="DEBUG, INFO, WARN or ERROR (DEBUG also shows tracebacks).")
]
"""The ``--log-level`` option every command takes."""

RayAddress = Annotated[
    str | None,
    typer.Option(
        "--address",
        help="Ray cluster to run on ('auto' for the one `ray start` runs here, or "
        "'host:6379'); default: a private Ray on this machine, on loopback.",
    ),
]
"""The ``--address`` option of the commands that run on Ray (train, tune, evaluate, serve)."""

Dashboard = Annotated[
    bool,
    typer.Option(
        "--dashboard/--no-dashboard",
        help="Start Ray's dashboard (127.0.0.1:8265, loopback only) with the Ray started here.",
    ),
]
"""The ``--dashboard`` option: Ray's dashboard, on loopback, for the Ray a command starts."""

_LEVELS = {"DEBUG": 10, "INFO": 20, "WARN": 30, "WARNING": 30, "ERROR": 40}

F = TypeVar("F", bound=Callable[..., Any])


class CliError(RlserveError, ValueError):
    """An option or a combination of options the CLI cannot use (the message says why)."""


def fail(message: str) -> CliError:
    """A :class:`CliError` to raise for a bad option."""
    return CliError(message)


def _configure_logging(log_level: str | None) -> bool:
    """Apply ``--log-level`` to the ``rlserve`` loggers; return whether it is DEBUG.

    Raises:
        CliError: For an unknown level.
    """
    if log_level is None:
        return False
    level = log_level.upper()
    if level not in _LEVELS:
        raise CliError(f"--log-level {log_level!r}: choose DEBUG, INFO, WARN or ERROR")
    logging.basicConfig(format="%(name)s: %(message)s")
    logging.getLogger("rlserve").setLevel(_LEVELS[level])
    return level == "DEBUG"


# Exits and usage errors are click's to show. typer >= 0.2x bundles its own copy of click,
# whose exceptions derive from typer.exceptions.TyperException, not from click's classes.
_PASS_THROUGH: tuple[type[BaseException], ...] = (
    typer.Exit,
    typer.Abort,
    click.exceptions.Exit,
    click.ClickException,
    *filter(None, [getattr(typer.exceptions, "TyperException", None)]),
)


def guarded(command: F) -> F:
    """The CLI's one error boundary, around a command that takes ``log_level``.

    An :class:`~formats.errors.RlserveError` is the user's to fix: one line ``error: ...`` on
    stderr and exit status 2. Anything else is a bug: its traceback and exit status 1. With
    ``--log-level DEBUG`` the traceback is shown for both.
    """

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        debug = False
        try:
            debug = _configure_logging(kwargs.get("log_level"))
            return command(*args, **kwargs)
        except _PASS_THROUGH:
            raise
        except RlserveError as err:
            if debug:
                traceback.print_exc()
            err_console.print(f"error: {err}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None
        except Exception:
            traceback.print_exc()
            raise typer.Exit(code=1) from None

    return run  # type: ignore[return-value]
