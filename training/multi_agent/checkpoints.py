"""A policy map's checkpoint: a safetensors file per policy, the policies as JSON.

Beside a single-agent checkpoint's ``metadata.json`` and ``algorithm_config.json`` it holds

* ``multi_agent.json`` — every policy's spaces (rlserve's space JSON), its config overrides,
  whether it trains, and the mapping function's name (``"module:function"``, or ``null``:
  it was a lambda, passed again on restore) — never the function itself;
* ``module.<policy_id>.safetensors`` — each policy's module state;
* ``learner_state.<policy_id>.safetensors`` / ``.json`` — each trained policy's optimizer;
* ``filter_state.<policy_id>.json`` — each filtered policy's running observation statistics.

Like every checkpoint it is written atomically and every file's hash is verified before
anything is read (:func:`training.checkpoints.verify_checkpoint`); nothing is unpickled.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors.torch import load_file, save_file

from formats.provenance import CHECKPOINT_LIBRARIES, library_versions
from formats.safeio import read_json, write_directory_atomically, write_json
from formats.spaces import space_from_json, space_to_json
from training.checkpoint_format import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    JSON_LIMIT,
    CheckpointContents,
    verify_checkpoint,
)
from training.config_validation import ConfigError
from training.errors import CheckpointError
from training.multi_agent.spec import PolicySpec, mapping_to_json

__all__ = [
    "MULTI_AGENT_FILE",
    "MultiAgentContents",
    "multi_agent_config",
    "policy_contents",
    "read_multi_agent_checkpoint",
    "write_multi_agent_checkpoint",
]

MULTI_AGENT_FILE = "multi_agent.json"


class MultiAgentContents(NamedTuple):
    """A verified policy map checkpoint, read (all policies, or the ones asked for)."""

    path: Path
    metadata: dict[str, Any]
    config: dict[str, Any]
    policies: dict[str, PolicySpec]
    trained: list[str]
    mapping: str | None
    module_states: dict[str, dict[str, torch.Tensor]]
    learner_states: dict[str, tuple[dict[str, torch.Tensor], dict[str, Any]]]
    filter_states: dict[str, dict[str, Any]]


def write_multi_agent_checkpoint(
    path: str | Path,
    *,
    algorithm: str,
    config: dict[str, Any],
    policies: dict[str, PolicySpec],
    trained: list[str],
    mapping: Any,
    modules: Mapping[str, torch.nn.Module],
    learner_states: dict[str, tuple[dict[str, torch.Tensor], dict[str, Any]]],
    iteration: int,
    filter_states: dict[str, dict[str, Any]] | None = None,
    counters: dict[str, int | float],
    time_total_s: float = 0.0,
) -> Path:
    """Write a policy map's checkpoint directory atomically (replacing an existing one)."""
    spec_json = {
        "policies": {
            pid: {
                "observation_space": space_to_json(spec.spaces[0]),
                "action_space": space_to_json(spec.spaces[1]),
                "config": spec.config,
                "trained": pid in trained,
            }
            for pid, spec in policies.items()
        },
        "policy_mapping_fn": mapping_to_json(mapping),
    }
    states = {
        pid: {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
        for pid, module in modules.items()
    }

    def write_files(directory: Path) -> None:
        write_json(directory / "algorithm_config.json", config)
        write_json(directory / MULTI_AGENT_FILE, spec_json)
        for pid, state in states.items():
            save_file(state, str(directory / f"module.{pid}.safetensors"))
        for pid, (tensors, data) in learner_states.items():
            save_file(tensors, str(directory / f"learner_state.{pid}.safetensors"))
            write_json(directory / f"learner_state.{pid}.json", data)
        for pid, state in (filter_states or {}).items():
            write_json(directory / f"filter_state.{pid}.json", state)

    metadata = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "algorithm": algorithm,
        "multi_agent": True,
        "policies": sorted(policies),
        "iteration": iteration,
        "counters": counters,
        "time_total_s": time_total_s,
        "library_versions": library_versions(CHECKPOINT_LIBRARIES),
    }
    return write_directory_atomically(path, write_files, metadata=metadata)


def read_multi_agent_checkpoint(
    path: str | Path, policy_ids: list[str] | None = None
) -> MultiAgentContents:
    """Verify every file of a policy map checkpoint, then read it (or some of its policies).

    Raises:
        CheckpointError: Naming the bad file, or a policy the checkpoint does not hold.
    """
    root = Path(path)
    metadata = verify_checkpoint(root)
    if not metadata.get("multi_agent"):
        raise CheckpointError(f"checkpoint {root}: not a multi-agent checkpoint")
    try:
        config = read_json(root / "algorithm_config.json", max_bytes=JSON_LIMIT)
        spec_json = read_json(root / MULTI_AGENT_FILE, max_bytes=JSON_LIMIT)
        recorded = spec_json["policies"]
        chosen = sorted(recorded) if policy_ids is None else list(policy_ids)
        unknown = sorted(set(chosen) - set(recorded))
        if unknown:
            raise CheckpointError(
                f"checkpoint {root}: no policies {unknown}; it holds {sorted(recorded)}"
            )
        policies = {
            pid: PolicySpec(
                observation_space=space_from_json(
                    recorded[pid]["observation_space"], f"{pid}.observation_space"
                ),
                action_space=space_from_json(recorded[pid]["action_space"], f"{pid}.action_space"),
                config=dict(recorded[pid]["config"]),
            )
            for pid in chosen
        }
        trained = [pid for pid in chosen if recorded[pid]["trained"]]
        modules = {pid: load_file(str(root / f"module.{pid}.safetensors")) for pid in chosen}
        learners = {
            pid: (
                load_file(str(root / f"learner_state.{pid}.safetensors")),
                read_json(root / f"learner_state.{pid}.json", max_bytes=JSON_LIMIT),
            )
            for pid in trained
        }
        listed = metadata["files"]
        filters = {
            pid: read_json(root / f"filter_state.{pid}.json", max_bytes=JSON_LIMIT)
            for pid in chosen
            if f"filter_state.{pid}.json" in listed
        }
    except (OSError, ValueError, KeyError, TypeError) as err:
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(f"checkpoint {root}: cannot read: {err}") from None
    return MultiAgentContents(
        root,
        metadata,
        config,
        policies,
        trained,
        spec_json.get("policy_mapping_fn"),
        modules,
        learners,
        filters,
    )


def policy_contents(path: str | Path, policy_id: str | None) -> CheckpointContents:
    """One policy of a multi-agent checkpoint, shaped as a single-agent checkpoint's contents.

    Its spaces go into the metadata and its config overrides into the config, so whatever
    rebuilds a module from a checkpoint (export, evaluation) rebuilds this policy's.

    Raises:
        CheckpointError: Not a multi-agent checkpoint, an unknown policy, or none named for a
            checkpoint of several.
    """
    metadata = verify_checkpoint(path)
    if not metadata.get("multi_agent"):
        raise CheckpointError(f"checkpoint {path}: not multi-agent; it has no policy_id")
    held = list(metadata.get("policies", []))
    if policy_id is None:
        if len(held) != 1:
            raise CheckpointError(
                f"checkpoint {path}: a multi-agent checkpoint of policies {held}; name one"
            )
        policy_id = held[0]
    contents = read_multi_agent_checkpoint(path, [policy_id])
    spec = contents.policies[policy_id]
    config = dict(contents.config)
    for key in ("policies", "policy_mapping_fn", "policies_to_train"):
        config.pop(key, None)
    config.update(spec.config)
    tensors, data = contents.learner_states.get(policy_id, ({}, {}))
    described = {
        **contents.metadata,
        "policy_id": policy_id,
        "observation_space": space_to_json(spec.spaces[0]),
        "action_space": space_to_json(spec.spaces[1]),
    }
    return CheckpointContents(
        contents.path,
        described,
        config,
        contents.module_states[policy_id],
        tensors,
        data,
        contents.filter_states.get(policy_id),
    )


def multi_agent_config(
    config: dict[str, Any],
    contents: MultiAgentContents,
    policy_ids: list[str] | None,
    overrides: dict[str, Any],
) -> dict[str, Any]:
    """A policy map checkpoint's config, for all its policies or ``policy_ids``.

    Raises:
        ConfigError: The checkpoint's mapping function was not recorded (a lambda) and none
            is given again, with several policies.
    """
    chosen = sorted(contents.policies) if policy_ids is None else list(policy_ids)
    recorded = dict(config.get("policies") or {})
    config = dict(config)
    config["policies"] = {pid: recorded[pid] for pid in chosen}
    config["policies_to_train"] = [pid for pid in contents.trained if pid in chosen]
    if "policy_mapping_fn" not in overrides:
        if contents.mapping is None and len(chosen) > 1:
            raise ConfigError(
                f"checkpoint {contents.path}: its policy_mapping_fn was not importable by name "
                "(a lambda or a local function), so it was not recorded; pass "
                "policy_mapping_fn=... again"
            )
        config["policy_mapping_fn"] = contents.mapping
    return config
