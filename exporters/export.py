"""``export_checkpoint``: turn a training checkpoint into a verified artifact directory.

The artifact holds ``model.onnx`` (primary), ``model.ts`` (TorchScript, legacy: upstream has
deprecated it) and ``model.pt2`` (``torch.export``), plus ``manifest.json``. Each exported
graph is checked against the eager module on batches of two sizes before the directory is
published (written beside the target and renamed into place, like checkpoints). The manifest's
``version`` is :func:`exporters.manifest.content_version` of the files as written.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

from exporters.errors import ExportError
from exporters.graph import (
    OUTPUT_NAMES,
    STATE_INPUT_NAMES,
    STATE_OUTPUT_NAMES,
    InferenceGraph,
    example_inputs,
    example_previous,
    example_state,
    input_specs,
    previous_specs,
)
from exporters.manifest import (
    FORMAT_FILES,
    ActionDistribution,
    FormatEntry,
    Manifest,
    StateSpec,
    TensorSpec,
    content_version,
)
from exporters.upstream import upstream_warnings_silenced
from formats.provenance import ARTIFACT_LIBRARIES, library_versions
from formats.safeio import FileTable, sha256_file, write_directory_atomically
from training.checkpoints import load_module

__all__ = ["ExportError", "export_checkpoint", "multi_agent_policies"]

DEFAULT_OPSET = 18


def _distribution(algorithm: str, action_space: gym.Space[Any]) -> ActionDistribution:
    """What ``action_dist_inputs`` holds, so serving samples as training did."""
    if algorithm == "DQN":
        return "q_values"
    if algorithm == "SAC":  # Box only (SAC refuses other spaces at build())
        return "squashed_gaussian"
    return "diag_gaussian" if isinstance(action_space, gym.spaces.Box) else "categorical"


def _outputs(graph: InferenceGraph, examples: tuple[torch.Tensor, ...]) -> list[TensorSpec]:
    with torch.no_grad():
        dist_inputs, actions, *_ = graph(*examples)
    return [
        TensorSpec(name=OUTPUT_NAMES[0], shape=["batch", *dist_inputs.shape[1:]], dtype="float32"),
        TensorSpec(
            name=OUTPUT_NAMES[1],
            shape=["batch", *actions.shape[1:]],
            dtype=str(actions.numpy().dtype),
        ),
    ]


def _state_specs(module: Any) -> list[StateSpec] | None:
    """The manifest's description of a recurrent module's state (``None``: feed-forward)."""
    if not module.is_recurrent:
        return None
    return [
        StateSpec(input=name_in, output=name_out, shape=["batch", *zeros.shape[1:]])
        for (name_in, name_out), zeros in zip(
            zip(STATE_INPUT_NAMES, STATE_OUTPUT_NAMES, strict=True),
            module.initial_state(1).values(),
            strict=True,
        )
    ]


def _batch_dim(max_batch_size: int) -> Any:
    return torch.export.Dim("batch", min=1, max=max_batch_size)


def _dynamic_shapes(count: int, max_batch_size: int) -> tuple[tuple[dict[int, Any], ...]]:
    batch = _batch_dim(max_batch_size)
    return (tuple({0: batch} for _ in range(count)),)


def _quiet_onnx_registry() -> None:
    # The ONNX exporter logs a warning per torchvision op it cannot register; we export none.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)


def _export_onnx(
    graph: InferenceGraph,
    examples: tuple[torch.Tensor, ...],
    path: Path,
    names: list[str],
    max_batch_size: int,
    opset: int,
) -> None:
    import onnx

    _quiet_onnx_registry()
    outputs = [*OUTPUT_NAMES, *(STATE_OUTPUT_NAMES if graph.module.is_recurrent else ())]
    torch.onnx.export(
        graph,
        examples,
        str(path),
        input_names=names,
        output_names=outputs,
        dynamic_shapes=_dynamic_shapes(len(examples), max_batch_size),
        opset_version=opset,
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    onnx.checker.check_model(str(path), full_check=True)


def _export_torchscript(
    graph: InferenceGraph, examples: tuple[torch.Tensor, ...], path: Path
) -> None:
    # TorchScript is deprecated upstream; the legacy format is kept working (see upstream.py).
    traced = torch.jit.trace(graph, examples, check_trace=False)  # type: ignore[no-untyped-call]
    torch.jit.save(traced, str(path))


def _export_program(
    graph: InferenceGraph, examples: tuple[torch.Tensor, ...], path: Path, max_batch_size: int
) -> None:
    program = torch.export.export(
        graph, examples, dynamic_shapes=_dynamic_shapes(len(examples), max_batch_size)
    )
    # torch saves the sample inputs with torch.save and loads them with pickle; without them
    # the archive is JSON and raw tensor bytes only (exporters.torch_policy checks this).
    program.example_inputs = None
    torch.export.save(program, str(path))


def multi_agent_policies(checkpoint_path: str | Path) -> list[str] | None:
    """The policy ids of a multi-agent checkpoint (``None``: a single-agent one).

    Raises:
        training.CheckpointError: For a checkpoint that does not verify.
    """
    from training.checkpoints import verify_checkpoint

    metadata = verify_checkpoint(checkpoint_path)
    return list(metadata["policies"]) if metadata.get("multi_agent") else None


def export_checkpoint(
    checkpoint_path: str | Path,
    out_dir: str | Path,
    formats: Iterable[str] = ("onnx", "torchscript", "torch_export"),
    *,
    policy_name: str | None = None,
    policy_id: str | None = None,
    max_batch_size: int = 4096,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Export a checkpoint's inference path into a verified artifact directory.

    The env is never created: spaces come from the checkpoint's metadata.

    Args:
        checkpoint_path: A checkpoint directory written by ``Algorithm.save``.
        out_dir: The artifact directory to create (replaced atomically if it exists).
        formats: Any of ``"onnx"``, ``"torchscript"``, ``"torch_export"``.
        policy_name: Name recorded in the manifest (default: the algorithm, lower case; a
            multi-agent checkpoint's policy: its id).
        policy_id: Which policy of a multi-agent checkpoint to export (needed when it holds
            several; :func:`multi_agent_policies` lists them).
        max_batch_size: Largest batch every format must accept (at least 4096 recommended).
        opset: ONNX opset.

    Returns:
        The artifact directory.

    Raises:
        ExportError: For an unknown format, a failed export, or a graph that disagrees with
            the eager module.
        training.CheckpointError: For a corrupt or tampered checkpoint.
    """
    chosen = list(dict.fromkeys(formats))
    unknown = [f for f in chosen if f not in FORMAT_FILES]
    if unknown or not chosen:
        raise ExportError(f"formats: unknown {unknown}; choose from {sorted(FORMAT_FILES)}")
    if max_batch_size < 8:
        raise ExportError(f"max_batch_size must be >= 8, got {max_batch_size}")
    module, contents = load_module(checkpoint_path, policy_id)
    graph = InferenceGraph(module)
    obs_space, act_space = module.observation_space, module.action_space
    # A recurrent graph takes its state after the observation leaves, under its own names.
    # An LSTM that reads the previous action and reward takes them between the two.
    examples = (
        *example_inputs(obs_space, batch=3),
        *example_previous(module, batch=3),
        *example_state(module, batch=3),
    )
    inputs = [TensorSpec(**spec) for spec in input_specs(obs_space)]
    algorithm = str(contents.metadata["algorithm"])
    format_entries = {
        name: FormatEntry(
            file=FORMAT_FILES[name],
            opset=opset if name == "onnx" else None,
            legacy=name == "torchscript",
            note="TorchScript is deprecated upstream; prefer onnx or torch_export"
            if name == "torchscript"
            else None,
        )
        for name in chosen
    }
    graph_contains = ["preprocessing", "policy_network", "deterministic_action"]
    if module.is_recurrent:
        graph_contains.insert(2, "lstm")
    if module.obs_filter.enabled:
        graph_contains.insert(1, "observation_filter")
    if isinstance(act_space, gym.spaces.Box):
        graph_contains.append("action_clipping")
    # The version hashes the files written below: it is filled in once they exist.
    draft = Manifest(
        policy_name=policy_name or contents.metadata.get("policy_id") or algorithm.lower(),
        version="",
        algorithm=algorithm,
        source_checkpoint=str(Path(checkpoint_path).resolve()),
        source_metadata_sha256=sha256_file(Path(checkpoint_path) / "metadata.json"),
        source_iteration=int(contents.metadata["iteration"]),
        observation_space=contents.metadata["observation_space"],
        action_space=contents.metadata["action_space"],
        action_distribution=_distribution(algorithm, act_space),
        inputs=inputs,
        outputs=_outputs(graph, examples),
        graph_contains=graph_contains,
        observation_filter="MeanStdFilter" if module.obs_filter.enabled else "NoFilter",
        max_batch_size=max_batch_size,
        formats=format_entries,
        library_versions=library_versions(ARTIFACT_LIBRARIES),
        state=_state_specs(module),
        previous=[TensorSpec(**spec) for spec in previous_specs(module)] or None,
    )
    names = [spec.name for spec in inputs]
    if module.is_recurrent:
        names += [*graph.previous_names, *STATE_INPUT_NAMES]

    def write_files(directory: Path) -> None:
        for name in chosen:
            path = directory / FORMAT_FILES[name]
            try:
                with upstream_warnings_silenced():
                    if name == "onnx":
                        _export_onnx(graph, examples, path, names, max_batch_size, opset)
                    elif name == "torchscript":
                        _export_torchscript(graph, examples, path)
                    else:
                        _export_program(graph, examples, path, max_batch_size)
            except ExportError:
                raise
            except Exception as err:
                raise ExportError(f"export to {name} failed: {type(err).__name__}: {err}") from err
        from exporters.verify import verify_against_eager

        with upstream_warnings_silenced():
            verify_against_eager(directory, chosen, graph, obs_space, names)

    def manifest_for(files: FileTable) -> dict[str, Any]:
        version = content_version(draft, files)
        return draft.model_copy(update={"version": version}).to_json()

    return write_directory_atomically(
        out_dir, write_files, metadata_name="manifest.json", metadata=manifest_for
    )
