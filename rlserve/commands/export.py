"""``rlserve export``: export a checkpoint into a verified artifact."""

from __future__ import annotations

from typing import Annotated

import typer

from rlserve.commands import LogLevel, console, guarded

__all__ = ["command"]


@guarded
def command(
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
        str | None,
        typer.Option(
            help="Policy name in the manifest (default: the algorithm; a multi-agent "
            "checkpoint's policy: its id)."
        ),
    ] = None,
    policy: Annotated[
        list[str] | None,
        typer.Option(
            "--policy",
            help="A multi-agent checkpoint's policy to export (repeat for several; default: "
            "every policy). Each goes to OUT/<policy id>.",
        ),
    ] = None,
    max_batch_size: Annotated[
        int, typer.Option(help="Largest batch every exported format must accept.")
    ] = 4096,
    log_level: LogLevel = None,
) -> None:
    """Export a checkpoint into a verified artifact (ONNX, TorchScript, torch.export).

    A multi-agent checkpoint exports one artifact per policy, under OUT/<policy id>.
    """
    from pathlib import Path

    from exporters import export_checkpoint, load_artifact, multi_agent_policies

    formats = [f.strip() for f in format_.split(",") if f.strip()]
    held = multi_agent_policies(checkpoint)
    if held is None:
        if policy:
            raise typer.BadParameter(
                f"checkpoint {checkpoint} holds one policy; --policy is for multi-agent ones",
                param_hint="--policy",
            )
        targets: list[tuple[str | None, Path]] = [(None, Path(out))]
    else:
        unknown = sorted(set(policy or []) - set(held))
        if unknown:
            raise typer.BadParameter(
                f"no policies {unknown} in {checkpoint}; it holds {held}", param_hint="--policy"
            )
        targets = [(pid, Path(out) / pid) for pid in (policy or held)]
    for pid, target in targets:
        path = export_checkpoint(
            checkpoint,
            target,
            formats,
            policy_name=name if pid is None else (name or pid),
            policy_id=pid,
            max_batch_size=max_batch_size,
        )
        manifest = load_artifact(path).manifest
        console.print(
            f"exported {manifest.algorithm} policy {manifest.policy_name!r} version "
            f"{manifest.version} ({', '.join(sorted(manifest.formats))}) to {path}"
        )
