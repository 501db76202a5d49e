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
console = Console(soft_wrap=True)


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
    from rlserve.local_ray import keep_ray_on_loopback

    keep_ray_on_loopback()  # before any command imports ray


err_console = Console(stderr=True)


@app.command()
def train(
    algo: Annotated[str, typer.Option(help="Algorithm: PPO or DQN.")] = "PPO",
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
        typer.Option("--set", help="Override a setting: --set lr=0.001 (repeatable; JSON values)."),
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
    log_level: Annotated[
        str | None, typer.Option(help="DEBUG, INFO, WARN or ERROR (DEBUG also shows tracebacks).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for reproducible runs.")] = None,
    resume: Annotated[
        str | None,
        typer.Option(
            help="Continue training from this checkpoint (its config, weights, optimizer, "
            "filter statistics and counters); --set still overrides settings."
        ),
    ] = None,
) -> None:
    """Train a policy until a stop criterion is met, then name the best checkpoint.

    Progress: a live display on a terminal (a bar and time left per stop criterion), else lines.
    """
    from rlserve.train import TrainOptions, parse_set_options, run_training

    try:
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
        )
        run_training(options, console)
    except ValueError as err:  # ConfigError, UnknownEnvError, CheckpointError, bad --set
        if (log_level or "").upper() == "DEBUG":
            raise
        err_console.print(f"error: {err}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(code=2) from None


@app.command()
def export(
    checkpoint: Annotated[str, typer.Argument(help="Checkpoint directory written by train.")],
    out: Annotated[
        str, typer.Option("--out", help="Artifact directory to write.")
    ] = "artifacts/policy",
    format_: Annotated[
        str,
        typer.Option(
            "--format",
            help="Comma-separated formats: onnx, torchscript (legacy), torch_export.",
        ),
    ] = "onnx,torchscript,torch_export",
    name: Annotated[
        str | None, typer.Option(help="Policy name in the manifest (default: the algorithm).")
    ] = None,
    max_batch_size: Annotated[
        int, typer.Option(help="Largest batch every exported format must accept.")
    ] = 4096,
) -> None:
    """Export a checkpoint into a verified artifact (ONNX, TorchScript, torch.export)."""
    from exporters import export_checkpoint, load_artifact

    try:
        formats = [f.strip() for f in format_.split(",") if f.strip()]
        path = export_checkpoint(
            checkpoint, out, formats, policy_name=name, max_batch_size=max_batch_size
        )
        artifact = load_artifact(path)
    except ValueError as err:  # ExportError, CheckpointError
        err_console.print(f"error: {err}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(code=2) from None
    manifest = artifact.manifest
    console.print(
        f"exported {manifest.algorithm} policy {manifest.policy_name!r} version {manifest.version} "
        f"({', '.join(sorted(manifest.formats))}) to {path}"
    )


def _fail(err: Exception) -> typer.Exit:
    err_console.print(f"error: {err}", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


@app.command()
def serve(
    artifact_dirs: Annotated[
        list[str] | None, typer.Argument(help="Artifact directories to serve.")
    ] = None,
    name: Annotated[
        list[str] | None,
        typer.Option("--name", help="Policy name per artifact (default: the manifest's)."),
    ] = None,
    host: Annotated[
        str, typer.Option(help="Bind address; anything but loopback needs --token.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8000,
    token: Annotated[str | None, typer.Option(help="Bearer token required on /v1 routes.")] = None,
    replicas: Annotated[int, typer.Option(help="Replicas of the deployment.")] = 1,
    num_cpus: Annotated[float, typer.Option(help="CPUs per replica (inference threads).")] = 1.0,
    num_gpus: Annotated[
        float, typer.Option(help="GPUs per replica (fractions allowed); > 0 infers on CUDA.")
    ] = 0.0,
    backend: Annotated[
        str,
        typer.Option(
            help="onnx (onnxruntime), torch_export (torch, pickle-free) or torchscript "
            "(legacy torch; needs --allow-torchscript)."
        ),
    ] = "onnx",
    allow_torchscript: Annotated[
        bool,
        typer.Option(
            help="Allow --backend torchscript: its archives are unpickled when loaded, so use "
            "it only for artifacts you built yourself."
        ),
    ] = False,
    max_batch_size: Annotated[int, typer.Option(help="Requests combined per inference.")] = 64,
    batch_wait_ms: Annotated[
        float, typer.Option(help="How long a batch waits for more requests.")
    ] = 2.0,
    request_timeout_s: Annotated[
        float | None, typer.Option(help="Answer 408 to requests not done in this time.")
    ] = None,
    max_ongoing_requests: Annotated[
        int,
        typer.Option(
            help="Requests a replica works on at once (raised to --max-batch-size at least)."
        ),
    ] = 256,
    max_queued_requests: Annotated[
        int,
        typer.Option(
            help="Requests waiting per replica beyond those; more are answered 503 with "
            "Retry-After (-1: unbounded)."
        ),
    ] = -1,
    ingress: Annotated[
        str,
        typer.Option(
            help="haproxy: HAProxy forwards straight to the replicas (fast; bundled with "
            "ray[serve]); proxy: Ray Serve's Python proxy. Applies when rlserve starts Ray."
        ),
    ] = "haproxy",
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Serve Prometheus metrics (rlserve_requests, rlserve_batch_requests, "
            "rlserve_inference_latency_ms and Ray's own) at http://127.0.0.1:PORT/metrics. "
            "Without it, a Ray started here collects no metrics: Ray's metrics agent costs "
            "tail latency on small machines."
        ),
    ] = None,
    config_file: Annotated[
        str | None,
        typer.Option(
            "--config",
            help="A Ray Serve config file (see examples/serve_config.yaml) to run instead of "
            "artifact directories; its http_options set host and port.",
        ),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(
            help="Ray cluster to deploy on ('auto' or 'ray://host:10001'); default: start a "
            "private Ray on this machine, on loopback."
        ),
    ] = None,
) -> None:
    """Serve exported policies over HTTP until Ctrl-C."""
    import time

    from exporters import load_artifact
    from rlserve.service import ServiceOptions, run_config_file, start_service, stop_service

    if config_file is not None:
        try:
            if artifact_dirs:
                raise ValueError("give artifact directories or --config, not both")
            code = run_config_file(config_file, ingress)
        except ValueError as err:
            raise _fail(err) from None
        raise typer.Exit(code)
    if not artifact_dirs:
        raise _fail(ValueError("give at least one artifact directory (or --config FILE)"))
    try:
        names = list(name or [])
        if names and len(names) != len(artifact_dirs):
            raise ValueError("give one --name per artifact directory, or none")
        paths = {
            names[i] if names else load_artifact(path).manifest.policy_name: path
            for i, path in enumerate(artifact_dirs)
        }
        options = ServiceOptions(
            paths,
            host=host,
            port=port,
            token=token,
            replicas=replicas,
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            backend=backend,
            allow_torchscript=allow_torchscript,
            max_batch_size=max_batch_size,
            batch_wait_ms=batch_wait_ms,
            request_timeout_s=request_timeout_s,
            max_ongoing_requests=max_ongoing_requests,
            max_queued_requests=max_queued_requests,
            ingress=ingress,
            address=address,
            metrics_port=metrics_port,
        )
        url = start_service(options)
    except ValueError as err:
        stop_service()
        raise _fail(err) from None
    console.print(f"serving {', '.join(sorted(paths))} at {url}  (docs: {url}/docs; Ctrl-C stops)")
    import signal

    def _terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM (docker stop, systemd, timeout) stops like Ctrl-C

    signal.signal(signal.SIGTERM, _terminate)
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        console.print("stopping")
    finally:
        stop_service()


@app.command()
def evaluate(
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
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Also write the JSON report here.")
    ] = None,
    json_: Annotated[
        bool, typer.Option("--json", help="Print the JSON report instead of the table.")
    ] = False,
    min_return: Annotated[
        float | None, typer.Option(help="Exit with code 1 if the mean return is below this.")
    ] = None,
    log_level: Annotated[
        str | None, typer.Option(help="DEBUG, INFO, WARN or ERROR (DEBUG also shows tracebacks).")
    ] = None,
) -> None:
    """Play N seeded episodes with a policy (optionally on Ray workers) and summarise returns.

    Exit codes: 0 done, 1 mean return below --min-return, 2 error.
    """
    import json
    import logging

    from rlserve.evaluate import EvaluationOptions, render_report, run_evaluation, write_report

    debug = (log_level or "").upper() == "DEBUG"
    try:
        if log_level is not None:
            levels = {"DEBUG": 10, "INFO": 20, "WARN": 30, "WARNING": 30, "ERROR": 40}
            if log_level.upper() not in levels:
                raise ValueError(f"--log-level {log_level!r}: choose DEBUG, INFO, WARN or ERROR")
            logging.basicConfig(format="%(name)s: %(message)s")
            logging.getLogger("rlserve").setLevel(levels[log_level.upper()])
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
            min_return=min_return,
            output=output,
        )
        report = run_evaluation(options)
        if output is not None:
            write_report(report, output)
    except ValueError as err:  # EvaluationError, CheckpointError, ArtifactError, UnknownEnvError
        if debug:
            raise
        raise _fail(err) from None
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


@app.command()
def demo(
    episodes: Annotated[int, typer.Option(help="Evaluation episodes played over HTTP.")] = 5,
    port: Annotated[int, typer.Option(help="HTTP port (0 picks a free one).")] = 0,
    workdir: Annotated[str, typer.Option(help="Where the run and the artifact go.")] = "runs/demo",
    keep_running: Annotated[
        bool, typer.Option(help="Keep serving after the demo until Ctrl-C.")
    ] = False,
) -> None:
    """Train PPO on CartPole until solved, export it, serve it, query it, evaluate it."""
    import time
    from pathlib import Path

    import gymnasium as gym

    from exporters import export_checkpoint, load_artifact
    from rlserve.service import ServiceOptions, free_port, start_service, stop_service
    from rlserve.train import TrainOptions, run_training
    from serving import PolicyClient, play_episodes

    work = Path(workdir)
    start = time.perf_counter()
    checkpoint = run_training(
        TrainOptions(config_file="cartpole_ppo", checkpoint_dir=str(work), seed=0), console
    )
    trained_s = time.perf_counter() - start
    artifact_dir = export_checkpoint(checkpoint, work / "artifact", policy_name="cartpole")
    artifact = load_artifact(artifact_dir)
    console.print(f"exported version {artifact.version} to {artifact_dir}")
    try:
        url = start_service(
            ServiceOptions({"cartpole": str(artifact_dir)}, port=port or free_port())
        )
        console.print(f"serving at {url}")
        obs = [0.01, -0.02, 0.03, 0.04]
        with PolicyClient(url) as client:
            single = client.compute_action("cartpole", obs, return_dist_inputs=True)
            console.print(f"compute_action({obs}) -> {single}")
            batch = client.compute_actions("cartpole", [obs, [0.0, 0.5, 0.0, -0.5]])
            console.print(f"compute_actions(2 observations) -> {batch['actions']}")
            env = gym.make("CartPole-v1")
            try:
                played = play_episodes(client, "cartpole", env, episodes, seed=0)
            finally:
                env.close()
        mean = sum(e.episode_return for e in played) / max(1, len(played))
        console.print(
            f"\n[bold]summary[/]: trained in {trained_s:.1f} s -> {checkpoint}\n"
            f"  artifact {artifact_dir} (version {artifact.version})\n"
            f"  evaluation over HTTP: {len(played)} episodes, mean return {mean:.1f}\n"
            f"  try: curl -s {url}/v1/policies/cartpole/compute_action "
            f"-H 'content-type: application/json' -d '{{\"observation\": {obs}}}'\n"
            f"  docs: {url}/docs   policies: {url}/v1/policies"
        )
        if keep_running:
            console.print("serving until Ctrl-C")
            while True:
                time.sleep(1.0)
    except KeyboardInterrupt:
        console.print("stopping")
    except ValueError as err:
        raise _fail(err) from None
    finally:
        stop_service()


@app.command()
def tune(
    algo: Annotated[str, typer.Option(help="Algorithm: PPO or DQN.")] = "PPO",
    env: Annotated[str | None, typer.Option(help="Gymnasium id or 'module:Class'.")] = None,
    config: Annotated[
        str | None, typer.Option("--config", help="Tuned-example YAML/JSON as the base config.")
    ] = None,
    grid: Annotated[
        list[str] | None,
        typer.Option("--grid", help="Sweep a setting: --grid lr=0.01,0.001 (repeatable)."),
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Fix a setting: --set gamma=0.98.")
    ] = None,
    num_samples: Annotated[int, typer.Option(help="Repeats of the whole grid.")] = 1,
    stop_reward: Annotated[float | None, typer.Option(help="Stop a trial at this return.")] = None,
    stop_timesteps: Annotated[int | None, typer.Option(help="Stop after this many steps.")] = None,
    stop_iters: Annotated[int | None, typer.Option(help="Stop after this many iterations.")] = None,
    storage: Annotated[str, typer.Option(help="Where Tune writes trials.")] = "runs/tune",
) -> None:
    """Sweep hyper-parameters with Ray Tune; print the trial table and the best checkpoint."""
    from rlserve.train import TrainOptions, build_config, parse_set_options
    from rlserve.tune_command import parse_grid, run_sweep

    try:
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
            raise ValueError("give at least one --grid key=v1,v2,...")
        best = run_sweep(
            base,
            sweep,
            stop,
            num_samples=num_samples,
            storage=storage,
            metric="env_runners/episode_return_mean",
            console=console,
        )
    except ValueError as err:
        raise _fail(err) from None
    console.print(f"best checkpoint: {best}")


@app.command()
def bench(
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
) -> None:
    """Load a running policy service (open loop; latency from the scheduled send time)."""
    import json

    from rich.table import Table

    from rlserve.bench_command import BenchOptions, run_bench

    try:
        levels = tuple(int(c) for c in concurrency.split(",") if c.strip())
    except ValueError:
        raise _fail(
            ValueError(f"--concurrency: expected integers like 1,32, got {concurrency!r}")
        ) from None
    try:
        figures = run_bench(BenchOptions(url, policy, token, levels, rate, seconds, rows, npy))
    except ValueError as err:
        raise _fail(err) from None
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
