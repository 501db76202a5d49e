"""A Ray instance that ``rlserve`` starts on this machine stays on loopback.

Ray binds its GCS, raylet, object manager and every worker's gRPC server to the node IP, and on
Linux it picks the machine's network address for that even when ``ray.init`` is asked for
``_node_ip_address="127.0.0.1"`` (Ray swaps loopback for a "reachable" address). A Ray started by
``rlserve`` serves no other machine, so none of those ports belongs on the network. Ray's switch
for single-machine, loopback-only operation is the environment variable
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (named for the platforms where it is the default). Ray
reads it when ``ray`` is first imported, so :func:`keep_ray_on_loopback` must run before that;
the ``rlserve`` CLI calls it first thing. Library users who start a local Ray themselves can call
it before importing ``ray`` (or export the variable). A variable already set is respected.

Stopping such a Ray at any moment is :mod:`rlserve.jobs.stop_signals`'s part, and cleaning up
after it (runtime directories, leftovers of a SIGKILL) :mod:`rlserve.jobs.runtime_dirs`'s.
"""

from __future__ import annotations

import os
import sys

__all__ = ["LOOPBACK_ENVIRONMENT", "keep_ray_on_loopback"]

LOOPBACK_ENVIRONMENT: dict[str, str] = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # node IP = 127.0.0.1 for every Ray listener
    "RAY_USAGE_STATS_ENABLED": "0",  # no usage-stats upload attempts from a local instance
}


def keep_ray_on_loopback() -> bool:
    """Set :data:`LOOPBACK_ENVIRONMENT` (where unset) for a Ray started by this process.

    Returns:
        Whether it can still take effect: ``False`` when ``ray`` was imported already (Ray has
        read its settings; a Ray started now may listen on the network address).
    """
    for key, value in LOOPBACK_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    return "ray" not in sys.modules
