"""Shared fixtures: one local Ray instance for the whole session, started on first use."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rlserve.local_ray import keep_ray_on_loopback

# Keep Ray quiet and local: no usage stats upload attempts, no dashboard, loopback only
# (set before anything imports ray).
keep_ray_on_loopback()
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="session")
def ray_session() -> Iterator[Any]:
    """Start one local Ray instance (2 CPUs, no dashboard, loopback) shared by every test."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=True,
            configure_logging=False,
        )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def cartpole_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny PPO CartPole checkpoint (one training iteration), shared by the whole session."""
    from training import PPOConfig

    root = tmp_path_factory.mktemp("cartpole_checkpoint")
    config = PPOConfig().environment("CartPole-v1").training(train_batch_size=64, minibatch_size=32)
    algo = config.debugging(seed=0).build()
    try:
        algo.train()
        return Path(algo.save(str(root / "checkpoint")).checkpoint.path)
    finally:
        algo.stop()


@pytest.fixture(scope="session")
def cartpole_artifact(cartpole_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """That checkpoint exported as an ONNX-only artifact."""
    from exporters import export_checkpoint

    return export_checkpoint(
        cartpole_checkpoint, tmp_path_factory.mktemp("cartpole_artifact") / "artifact", ["onnx"]
    )
