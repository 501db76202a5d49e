"""Shared fixtures: one local Ray instance for the whole session, started on first use."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

# Keep Ray quiet and local: no usage stats upload attempts, no dashboard, loopback only.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="session")
def ray_session() -> Iterator[Any]:
    """Start one local Ray instance (2 CPUs, no dashboard, loopback) shared by every test."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=True,
            configure_logging=False,
        )
    yield ray
    ray.shutdown()
