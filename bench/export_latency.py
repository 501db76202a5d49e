"""Benchmark: inference latency of an exported policy in every format, batch 1, 32 and 1024.

Exports a checkpoint (``--checkpoint``, or a tuned example trained for two iterations:
``--example cartpole_ppo``, the default, or ``pendulum_sac`` for SAC's squashed-Gaussian
actor, ``pendulum_ppo``, ``cartpole_dqn``) and times ``action_dist_inputs`` + deterministic
actions per call for onnxruntime (one intra-op thread), TorchScript, ``torch.export`` (the
graph with lifted weights, as serving runs it, and ``ExportedProgram.module()`` for
comparison) and eager torch, all single-threaded, in the same process; plus the serving
runtime's whole graph call (numpy in and out) per backend.
Prints one JSON line: per format and batch, microseconds per call (median of repeated timed
blocks) and rows per second.

    python bench/export_latency.py [--checkpoint DIR | --example NAME] [--seconds 0.5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from exporters import export_checkpoint, load_artifact
from exporters.graph import InferenceGraph
from exporters.torch_policy import load_exported_program
from exporters.verify import load_torch_format
from formats.leaves import obs_to_leaves
from serving.runtime import PolicyRuntime
from training.checkpoints import load_module
from training.tuned_examples import load_tuned_example

BATCHES = (1, 32, 1024)


def _checkpoint(root: Path, example: str) -> Path:
    # Latency does not depend on how well the policy acts: two iterations give real weights.
    config = load_tuned_example(example).config.debugging(seed=0)
    with config.build() as algo:
        algo.train()
        algo.train()
        return Path(algo.save(str(root / "checkpoint")).checkpoint.path)


def _time(call: Callable[[], Any], seconds: float) -> float:
    """Median microseconds per call over five timed blocks."""
    call()
    calls = 1
    start = time.perf_counter()
    while time.perf_counter() - start < seconds / 10:
        call()
        calls += 1
    per_block = max(1, calls)
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(per_block):
            call()
        samples.append((time.perf_counter() - start) / per_block)
    return statistics.median(samples) * 1e6


def _torch_call(model: Any, tensors: list[torch.Tensor]) -> Callable[[], Any]:
    def call() -> Any:
        with torch.no_grad():
            return model(*tensors)

    return call


def _runtime_call(runtime: PolicyRuntime, leaves: list[np.ndarray]) -> Callable[[], Any]:
    return lambda: runtime.run_graph(leaves)


def _onnx_call(policy: Any, leaves: list[np.ndarray]) -> Callable[[], Any]:
    return lambda: policy.run(leaves)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", help="checkpoint directory (default: train an example)")
    source.add_argument(
        "--example", default="cartpole_ppo", help="tuned example to train (default cartpole_ppo)"
    )
    parser.add_argument("--seconds", type=float, default=0.5, help="time budget per measurement")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        checkpoint = Path(args.checkpoint) if args.checkpoint else _checkpoint(root, args.example)
        artifact = load_artifact(export_checkpoint(checkpoint, root / "artifact"))
        onnx_policy = artifact.onnx_policy(intra_op_num_threads=1)
        scripted = load_torch_format("torchscript", artifact.file("torchscript"))
        program = load_torch_format("torch_export", artifact.file("torch_export"))
        program_module = load_exported_program(artifact.file("torch_export")).module()
        runtimes = {
            backend: PolicyRuntime(artifact, backend=backend, allow_torchscript=True)
            for backend in ("onnx", "torch_export", "torchscript")
        }
        eager = InferenceGraph(load_module(checkpoint)[0])
        space = artifact.observation_space
        space.seed(0)
        manifest = artifact.manifest
        figures: dict[str, Any] = {
            "bench": "export_latency",
            "policy": manifest.algorithm,
            "example": None if args.checkpoint else args.example,
            "action_distribution": manifest.action_distribution,
        }
        for batch in BATCHES:
            observations = [space.sample() for _ in range(batch)]
            per_obs = [obs_to_leaves(space, o) for o in observations]
            leaves = [np.stack(column) for column in zip(*per_obs, strict=True)]
            tensors = [torch.as_tensor(x) for x in leaves]

            calls: dict[str, Callable[[], Any]] = {
                "onnxruntime": _onnx_call(onnx_policy, leaves),
                "torchscript": _torch_call(scripted, tensors),
                "torch_export": _torch_call(program, tensors),
                "torch_export_module": _torch_call(program_module, tensors),
                "eager": _torch_call(eager, tensors),
                **{
                    f"serving_{backend}": _runtime_call(runtime, leaves)
                    for backend, runtime in runtimes.items()
                },
            }
            for name, call in calls.items():
                micros = _time(call, args.seconds)
                figures.setdefault(name, {})[f"batch_{batch}"] = {
                    "us_per_call": round(micros, 1),
                    "rows_per_s": round(batch / micros * 1e6),
                }
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
