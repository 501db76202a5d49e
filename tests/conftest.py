"""Shared fixtures: one local Ray instance and one set of tiny trained policies per session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from rlserve.jobs.local_ray import keep_ray_on_loopback

if TYPE_CHECKING:
    from tests.helpers.policies import TinyPolicies

# Keep Ray quiet and local: no usage stats upload attempts, no dashboard, loopback only
# (set before anything imports ray).
keep_ray_on_loopback()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The reliability suite is a sub-tier of integration: ``-m "not integration"`` skips it."""
    loose = [
        item.nodeid
        for item in items
        if item.get_closest_marker("reliability") and not item.get_closest_marker("integration")
    ]
    if loose:
        raise pytest.UsageError(f"reliability tests must also be marked integration: {loose}")


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
def tiny_policies(tmp_path_factory: pytest.TempPathFactory) -> TinyPolicies:
    """The session's tiny trained policies (``tests/helpers/policies.py``), made on first use."""
    from tests.helpers.policies import TinyPolicies

    return TinyPolicies(tmp_path_factory.mktemp("tiny_policies"))


@pytest.fixture(scope="session")
def cartpole_checkpoint(tiny_policies: TinyPolicies) -> Path:
    """A tiny PPO CartPole checkpoint (one training iteration), shared by the whole session."""
    return tiny_policies.checkpoint("cartpole", iteration=1)


@pytest.fixture(scope="session")
def cartpole_artifact(tiny_policies: TinyPolicies) -> Path:
    """That checkpoint exported as an ONNX-only artifact."""
    return tiny_policies.artifact("cartpole", ["onnx"], iteration=1)
