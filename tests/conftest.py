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
    """Check the tiers, mark the serial tests, and run the slowest files first.

    The reliability suite is a sub-tier of integration (``-m "not integration"`` skips it) and
    is serial: its overload, slow-client and signal timings must not share the CPU.

    Files with learning tests go first, then integration files, then the unit files (each
    file's own order kept): on ``pytest -n 2 --dist loadfile`` (``make test``) the long files
    start at once and the short ones fill in behind them, instead of a learning file starting
    last on one worker while the other has nothing left to do.
    """
    loose = [
        item.nodeid
        for item in items
        if item.get_closest_marker("reliability") and not item.get_closest_marker("integration")
    ]
    if loose:
        raise pytest.UsageError(f"reliability tests must also be marked integration: {loose}")
    for item in items:
        if item.get_closest_marker("reliability"):
            item.add_marker(pytest.mark.serial)
    rank: dict[str, int] = {}
    for item in items:
        tier = 0 if item.get_closest_marker("learning") else 1
        tier = tier if tier == 0 or item.get_closest_marker("integration") else 2
        path = item.nodeid.split("::", 1)[0]
        rank[path] = min(rank.get(path, tier), tier)
    items.sort(key=lambda item: rank[item.nodeid.split("::", 1)[0]])  # stable


os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# Ray starts its workers at niceness 15: beside the other pytest worker (niceness 0) an
# IMPALA run's runners then starve while its learner does not, and the policy lag V-trace
# must correct grows without bound. The tests' Ray workers take their fair share instead.
os.environ.setdefault("RAY_worker_niceness", "0")


@pytest.fixture(scope="session")
def ray_session() -> Iterator[Any]:
    """Start one local Ray instance (2 CPUs, no dashboard, loopback) shared by every test."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",  # never a cluster some `ray start` left running here
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
