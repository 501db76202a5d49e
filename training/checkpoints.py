"""Algorithm checkpoints: safetensors + JSON, written atomically, verified before loading.

A checkpoint directory holds

* ``metadata.json`` — format name and version, algorithm, library versions, iteration,
  counters, the observation and action spaces as JSON, sha256 and size of every file;
* ``algorithm_config.json`` — the full config (``AlgorithmConfig.to_json_dict``);
* ``module.safetensors`` — the module's parameters and buffers (filter statistics included);
* ``learner_state.safetensors`` + ``learner_state.json`` — optimizer (and target network)
  tensors, and the optimizer's non-tensor state;
* ``filter_state.json`` — the merged running observation statistics.

Nothing is unpickled: JSON and safetensors only, and only after every file's size and hash
match the metadata.

A *run directory* holds several checkpoints: :mod:`training.run_directory` picks one to resume.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from formats.provenance import CHECKPOINT_LIBRARIES, library_versions
from formats.safeio import read_json, write_directory_atomically, write_json
from formats.spaces import space_from_json, space_to_json
from training.algorithms import ALGORITHMS, algorithm_class
from training.checkpoint_format import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    JSON_LIMIT,
    CheckpointContents,
    verify_checkpoint,
)
from training.errors import CheckpointError, CheckpointVersionError
from training.rl_module import RLModule

__all__ = [
    "ALGORITHMS",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CheckpointContents",
    "CheckpointError",
    "CheckpointVersionError",
    "algorithm_class",
    "flatten_optimizer_state",
    "load_module",
    "read_checkpoint",
    "unflatten_optimizer_state",
    "verify_checkpoint",
    "write_checkpoint",
]


def flatten_optimizer_state(
    state: dict[str, Any], prefix: str
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split a torch optimizer ``state_dict`` into tensors and JSON."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, entry in state["state"].items():
        for name, value in entry.items():
            key = f"{prefix}.state.{index}.{name}"
            if isinstance(value, torch.Tensor):
                tensors[key] = value.detach().cpu().contiguous()
            else:
                scalars[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer_state(
    tensors: dict[str, torch.Tensor], data: dict[str, Any], prefix: str
) -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer_state`."""
    state: dict[int, dict[str, Any]] = {}
    items = [*tensors.items(), *data.get("scalars", {}).items()]
    for key, value in items:
        if not key.startswith(f"{prefix}.state."):
            continue
        index, name = key[len(prefix) + 7 :].split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": data["param_groups"]}


def write_checkpoint(
    path: str | Path,
    *,
    algorithm: str,
    config: dict[str, Any],
    module: torch.nn.Module,
    learner_tensors: dict[str, torch.Tensor],
    learner_json: dict[str, Any],
    filter_state: dict[str, Any] | None,
    observation_space: Any,
    action_space: Any,
    iteration: int,
    counters: dict[str, int | float],
    time_total_s: float = 0.0,
) -> Path:
    """Write a checkpoint directory atomically (replacing an existing one)."""
    module_state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}

    def write_files(directory: Path) -> None:
        write_json(directory / "algorithm_config.json", config)
        save_file(module_state, str(directory / "module.safetensors"))
        save_file(learner_tensors, str(directory / "learner_state.safetensors"))
        write_json(directory / "learner_state.json", learner_json)
        if filter_state is not None:
            write_json(directory / "filter_state.json", filter_state)

    metadata = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "algorithm": algorithm,
        "iteration": iteration,
        "counters": counters,
        "time_total_s": time_total_s,
        "observation_space": space_to_json(observation_space),
        "action_space": space_to_json(action_space),
        "library_versions": library_versions(CHECKPOINT_LIBRARIES),
    }
    return write_directory_atomically(path, write_files, metadata=metadata)


def read_checkpoint(path: str | Path) -> CheckpointContents:
    """Verify every file of a checkpoint, then read it.

    Raises:
        CheckpointError: Naming the bad file (tampered, truncated, missing) or field.
        CheckpointVersionError: For a newer major format version.
    """
    root = Path(path)
    metadata = verify_checkpoint(root)
    if metadata.get("multi_agent"):
        raise CheckpointError(
            f"checkpoint {root}: a multi-agent checkpoint of policies {metadata['policies']}; "
            "read it with training.multi_agent.checkpoints (or name a policy)"
        )
    listed = metadata["files"]
    try:
        config = read_json(root / "algorithm_config.json", max_bytes=JSON_LIMIT)
        learner_json = read_json(root / "learner_state.json", max_bytes=JSON_LIMIT)
        filter_state = (
            read_json(root / "filter_state.json", max_bytes=JSON_LIMIT)
            if "filter_state.json" in listed
            else None
        )
        module_state = load_file(str(root / "module.safetensors"))
        learner_tensors = load_file(str(root / "learner_state.safetensors"))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint {root}: cannot read: {err}") from None
    return CheckpointContents(
        root, metadata, config, module_state, learner_tensors, learner_json, filter_state
    )


def load_module(
    path: str | Path, policy_id: str | None = None
) -> tuple[RLModule, CheckpointContents]:
    """Rebuild the inference module from a checkpoint alone (the env is never created).

    Args:
        path: A checkpoint directory.
        policy_id: Which policy of a multi-agent checkpoint (needed when it holds several).

    Returns:
        The module (eval mode, CPU) and the checkpoint's contents (for a multi-agent
        checkpoint: the policy's, with its spaces in the metadata as a single-agent one has).

    Raises:
        CheckpointError: A bad checkpoint; a policy id it does not hold, or none given for
            one with several policies (the message lists them).
    """
    if policy_id is not None or verify_checkpoint(path).get("multi_agent"):
        from training.multi_agent.checkpoints import policy_contents

        contents = policy_contents(path, policy_id)
    else:
        contents = read_checkpoint(path)
    cls = algorithm_class(str(contents.metadata.get("algorithm")))
    config = cls.get_default_config().update_from_dict(contents.config)
    obs_space = space_from_json(contents.metadata["observation_space"], "observation_space")
    act_space = space_from_json(contents.metadata["action_space"], "action_space")
    module: RLModule = cls.build_module(config, obs_space, act_space)
    module.load_state_dict(contents.module_state)
    module.eval()
    return module, contents
