"""``rlserve bench``: load a running policy service (open loop)."""

from __future__ import annotations

from typing import Annotated

import typer

from rlserve.commands import LogLevel, console, fail, guarded

__all__ = ["command"]


@guarded
def command(
    url: Annotated[str, typer.Argument(help="Service base URL, e.g. http://127.0.0.1:8000.")],
    policy: Annotated[
        str | None, typer.Option(help="Policy name (default: the first the service lists).")
    ] = None,
    token: Annotated[str | None, typer.Option(help="Bearer token of the service.")] = None,
    concurrency: Annotated[
        str, typer.Option(help="Requests in flight, one run per value: e.g. 1,32.")
    ] = "1,32",
    rate: Annotated[float, typer.Option(help="Scheduled requests per second (open loop).")] = 2000,
    seconds: Annotated[float, typer.Option(help="Duration of each run.")] = 5.0,
    rows: Annotated[
        int,
        typer.Option(help="Observations per request (1: compute_action; more: compute_actions)."),
    ] = 1,
    npy: Annotated[
        bool, typer.Option("--npy", help="Send compute_actions batches as npy, answers in npy.")
    ] = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the figures as one JSON line instead of a table.")
    ] = False,
    log_level: LogLevel = None,
) -> None:
    """Load a running policy service (open loop; latency from the scheduled send time)."""
    import json

    from rich.table import Table

    from rlserve.jobs.bench import BenchOptions, run_bench

    try:
        levels = tuple(int(c) for c in concurrency.split(",") if c.strip())
    except ValueError:
        raise fail(f"--concurrency: expected integers like 1,32, got {concurrency!r}") from None
    figures = run_bench(BenchOptions(url, policy, token, levels, rate, seconds, rows, npy))
    if json_out:
        print(json.dumps(figures))
        return
    table = Table(
        title=f"{figures['url']}  ({rows} rows, {figures['format']}, {rate:g} req/s offered)"
    )
    for column in (
        "concurrency",
        "req/s",
        "actions/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "errors",
        "not sent",
    ):
        table.add_column(column, justify="right")
    for level in levels:
        f = figures[f"c{level}"]
        table.add_row(
            str(level),
            f"{f['req_per_s']:,.0f}",
            f"{f['actions_per_s']:,}",
            f"{f['p50_ms']:.2f}",
            f"{f['p90_ms']:.2f}",
            f"{f['p99_ms']:.2f}",
            str(f["errors"]),
            str(f["behind_schedule"]),
        )
    console.print(table)
