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
        str, typer.Option(help="Run directory: checkpoints and results.jsonl go here.")
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
) -> None:
    """Train a policy until a stop criterion is met, then name the best checkpoint."""
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
