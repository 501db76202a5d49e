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
        str | None, typer.Option(help="Policy name in the manifest (default: the algorithm).")
    ] = None,
    max_batch_size: Annotated[
        int, typer.Option(help="Largest batch every exported format must accept.")
    ] = 4096,
    log_level: LogLevel = None,
) -> None:
    """Export a checkpoint into a verified artifact (ONNX, TorchScript, torch.export)."""
    from exporters import export_checkpoint, load_artifact

    formats = [f.strip() for f in format_.split(",") if f.strip()]
    path = export_checkpoint(
        checkpoint, out, formats, policy_name=name, max_batch_size=max_batch_size
    )
    artifact = load_artifact(path)
    manifest = artifact.manifest
    console.print(
        f"exported {manifest.algorithm} policy {manifest.policy_name!r} version {manifest.version} "
        f"({', '.join(sorted(manifest.formats))}) to {path}"
    )
