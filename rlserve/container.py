"""Entry point of the Docker image: ``rlserve serve --host 0.0.0.0`` with a required token.

``python -m rlserve.container [ARTIFACT_DIR ...] [SERVE OPTIONS ...]`` runs ``rlserve serve``
bound to every interface on ``$RLSERVE_PORT`` (default 8000), with the bearer token taken from
``$RLSERVE_TOKEN``. Arguments that start with an option (or none at all) serve
``/artifacts/policy``, so ``docker run IMAGE --num-gpus 1`` works on the default mount.

Without a token it exits with status 2 and says why, before importing anything heavy. The token
is handed to the CLI inside this process, so it never appears on a command line (``ps`` and
``/proc/<pid>/cmdline`` show every user the arguments of every process; a process's
environment is readable only by its owner).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

from formats.errors import RlserveError

__all__ = ["DEFAULT_ARTIFACT_DIR", "ContainerError", "main", "serve_arguments"]


class ContainerError(RlserveError, ValueError):
    """The container's environment cannot run the service (no token, a bad port)."""


DEFAULT_ARTIFACT_DIR = "/artifacts/policy"
"""Served when no artifact directory is given (mount one there)."""


def serve_arguments(argv: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    """The ``rlserve`` arguments for ``argv`` (the container's arguments) and ``environ``.

    Raises:
        ContainerError: When ``RLSERVE_TOKEN`` is unset or blank, or ``RLSERVE_PORT`` is no port.
    """
    token = environ.get("RLSERVE_TOKEN", "").strip()
    if not token:
        raise ContainerError(
            "RLSERVE_TOKEN is not set: the container serves on 0.0.0.0, so every /v1 request "
            "must carry a bearer token; run it with -e RLSERVE_TOKEN=<a long random secret>"
        )
    port = environ.get("RLSERVE_PORT", "8000").strip()
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ContainerError(f"RLSERVE_PORT={port!r}: expected a TCP port number")
    args = list(argv)
    if not args or args[0].startswith("-"):
        args = [DEFAULT_ARTIFACT_DIR, *args]  # options only: serve the default mount
    return ["serve", "--host", "0.0.0.0", "--port", port, "--token", token, *args]


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``rlserve serve`` for the container; return the exit status."""
    try:
        args = serve_arguments(sys.argv[1:] if argv is None else argv, os.environ)
    except ContainerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from rlserve.cli import app

    try:
        app(args=args, prog_name="rlserve")
    except SystemExit as done:  # click ends with SystemExit in standalone mode
        code = done.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
