"""``rlserve evaluate``: play seeded episodes with a policy and summarise the returns."""

from __future__ import annotations

from typing import Annotated

import typer

from rlserve.commands import LogLevel, RayAddress, console, err_console, guarded

__all__ = ["command"]


@guarded
def command(
    source: Annotated[
        str,
        typer.Argument(
            help="Checkpoint directory, artifact directory, or http(s):// URL of a service."
        ),
    ],
    env: Annotated[
        str | None,
        typer.Option(help="Gymnasium id or 'module:Class' (default: the one the source records)."),
    ] = None,
    episodes: Annotated[int, typer.Option(help="Episodes to play.")] = 10,
    num_workers: Annotated[
        int, typer.Option(help="Ray tasks the episodes are spread over (0: this process, no Ray).")
    ] = 1,
    seed: Annotated[
        int, typer.Option(help="Episode i resets with seed+i (same results for any --num-workers).")
    ] = 0,
    explore: Annotated[
        bool, typer.Option("--explore/--no-explore", help="Sample actions (seeded per step).")
    ] = False,
    max_episode_steps: Annotated[
        int | None, typer.Option(help="Truncate episodes after this many steps.")
    ] = None,
    policy: Annotated[
        str | None, typer.Option(help="Served policy name (URL source; default: the first).")
    ] = None,
    token: Annotated[str | None, typer.Option(help="Bearer token (URL source).")] = None,
    session: Annotated[
        bool,
        typer.Option(
            "--session/--no-session",
            help="URL source: play over one WebSocket session per worker instead of an HTTP "
            "request per step.",
        ),
    ] = False,
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Also write the JSON report here.")
    ] = None,
    json_: Annotated[
        bool, typer.Option("--json", help="Print the JSON report instead of the table.")
    ] = False,
    min_return: Annotated[
        float | None, typer.Option(help="Exit with code 1 if the mean return is below this.")
    ] = None,
    address: RayAddress = None,
    log_level: LogLevel = None,
) -> None:
    """Play N seeded episodes with a policy (optionally on Ray workers) and summarise returns.

    Exit codes: 0 done, 1 mean return below --min-return, 2 error.
    """
    import json

    from rlserve.jobs.evaluation import (
        EvaluationOptions,
        render_report,
        run_evaluation,
        write_report,
    )

    try:
        options = EvaluationOptions(
            source=source,
            env=env,
            episodes=episodes,
            num_workers=num_workers,
            seed=seed,
            explore=explore,
            max_episode_steps=max_episode_steps,
            policy=policy,
            token=token,
            session=session,
            min_return=min_return,
            output=output,
            address=address,
        )
        report = run_evaluation(options)
        if output is not None:
            write_report(report, output)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        raise typer.Exit(code=130) from None
    if json_:
        typer.echo(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        render_report(report, console)
        if output is not None:
            console.print(f"wrote {output}", highlight=False)
    if report.passed is False:
        err_console.print(
            f"FAILED: mean return {report.summary['return_mean']:.2f} is below "
            f"--min-return {min_return:g}",
            markup=False,
            highlight=False,
        )
        raise typer.Exit(code=1)
