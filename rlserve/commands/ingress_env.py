"""``rlserve ingress-env``: the HAProxy ingress for a Ray cluster's own ``ray start``.

``rlserve serve`` configures the fast ingress (HAProxy straight to the replicas) for a Ray it
starts itself: HAProxy's settings are environment variables of Ray's processes and a wrapper
script beside them. A cluster's nodes are started by their operator, so this command writes
the wrapper into ``--workdir`` and prints the variables as ``export`` lines, to evaluate on
every node before its ``ray start``:

    eval "$(rlserve ingress-env --workdir /var/lib/rlserve/ingress)"
    ray start --head ...

The limits given here must be the ones the service is started with (``rlserve serve
--address ... --max-ongoing-requests ...``): HAProxy enforces them per replica.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from rlserve.commands import LogLevel, fail, guarded

__all__ = ["command"]


@guarded
def command(
    workdir: Annotated[
        str,
        typer.Option(
            help="A private directory for HAProxy's wrapper, config and sockets: the same "
            "path on every node (created; keep it short, it holds Unix sockets)."
        ),
    ] = "/tmp/rlserve-ingress",
    max_batch_size: Annotated[int, typer.Option(help="As for rlserve serve.")] = 64,
    max_ongoing_requests: Annotated[int, typer.Option(help="As for rlserve serve.")] = 256,
    max_queued_requests: Annotated[
        int | None, typer.Option(help="As for rlserve serve (default: sized from the above).")
    ] = None,
    max_sessions: Annotated[int, typer.Option(help="As for rlserve serve.")] = 256,
    log_level: LogLevel = None,
) -> None:
    """Print the environment that gives a cluster node's Ray the HAProxy ingress."""
    from serving import AppArgs
    from serving.ingress import ingress_environment

    if max_batch_size < 1 or max_ongoing_requests < 1 or max_sessions < 0:
        raise fail("--max-batch-size and --max-ongoing-requests must be >= 1, --max-sessions >= 0")
    if max_queued_requests is not None and max_queued_requests < -1:
        raise fail("--max-queued-requests: expected -1 (unbounded) or more")
    # The service's own arithmetic (HTTP slots, queue), without an artifact to serve.
    args = AppArgs.model_construct(
        max_batch_size=max_batch_size,
        max_ongoing_requests=max_ongoing_requests,
        max_queued_requests=max_queued_requests,
        max_sessions=max_sessions,
    )
    directory = Path(workdir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        env = ingress_environment("haproxy", directory.resolve(), limits=args.ingress_limits())
    except (ValueError, FileNotFoundError) as err:
        raise fail(str(err)) from None
    for key, value in sorted(env.items()):
        typer.echo(f"export {key}={shlex.quote(value)}")  # plain: eval reads it
