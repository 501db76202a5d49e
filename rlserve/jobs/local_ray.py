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

:func:`init_ray` is how every command starts Ray: a private instance on this machine unless an
``--address`` names a cluster. Ray's own ``ray.init()`` would join any cluster a ``ray start``
left running on the machine (it looks for one first), so a ``train`` meant to run here could
land on a shared cluster by accident; a private instance is asked for with ``address="local"``.

Stopping such a Ray at any moment is :mod:`rlserve.jobs.stop_signals`'s part, and cleaning up
after it (runtime directories, leftovers of a SIGKILL) :mod:`rlserve.jobs.runtime_dirs`'s.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

from formats.errors import RlserveError

__all__ = ["LOOPBACK_ENVIRONMENT", "RayClusterError", "init_ray", "keep_ray_on_loopback"]

logger = logging.getLogger(__name__)
_AUTH_MODE = "RAY_AUTH_MODE"
_TOKEN_SOURCES = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
_DEFAULT_TOKEN = Path.home() / ".ray" / "auth_token"


class RayClusterError(RlserveError, ConnectionError):
    """The Ray cluster given by ``--address`` cannot be reached or refuses this client."""


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


def _probe(address: str) -> None:
    """Fail fast on a ``host:port`` nothing listens on (``ray.init`` retries for minutes)."""
    host, sep, port = address.rpartition(":")
    if address in ("auto", "local") or "://" in address or not sep or not port.isdigit():
        return  # Ray resolves these itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as err:
        raise RayClusterError(
            f"cannot reach the Ray cluster at {address}: {err.strerror or err} (is the head "
            "node running? `ray status` on it prints its address)"
        ) from None


def _token_available() -> bool:
    return any(os.environ.get(name) for name in _TOKEN_SOURCES) or _DEFAULT_TOKEN.is_file()


def init_ray(address: str | None = None, *, dashboard: bool = False, **kwargs: Any) -> bool:
    """Start a private Ray on this machine, or join the cluster at ``address``.

    Args:
        address: ``None`` for a new Ray instance of this process's own (never an existing
            one); ``"auto"`` for the cluster a ``ray start`` runs on this machine; or a
            ``host:port`` / ``ray://host:10001`` address.
        dashboard: Start Ray's dashboard with a Ray started here, on 127.0.0.1:8265 (a
            joined cluster keeps its own). Off by default: seconds of start-up, and a listener
            that lets whoever reaches it submit jobs to this Ray.
        **kwargs: More ``ray.init`` arguments (``log_to_driver``, ``num_cpus``, ...).

    Returns:
        Whether this call started or joined Ray (``False``: it was initialised already).

    Raises:
        RayClusterError: When the cluster cannot be reached, naming the usual causes.
    """
    import ray

    if ray.is_initialized():
        return False
    if address is not None:
        _probe(address)
    if address is not None and _AUTH_MODE not in os.environ and _token_available():
        # Ray 2.5x clusters require a token by default, but a client joining by address
        # sends none unless RAY_AUTH_MODE=token (only Ray's own auto-discovery switches it
        # on): without this the join fails as "Failed to connect", with no word of tokens.
        os.environ[_AUTH_MODE] = "token"
    if dashboard and address is None:
        kwargs.setdefault("include_dashboard", True)
        kwargs.setdefault("dashboard_host", "127.0.0.1")
        logger.warning(
            "Ray's dashboard at http://127.0.0.1:8265 accepts jobs from anyone who can reach "
            "it on this machine (forward it with `ssh -L 8265:127.0.0.1:8265`, never expose it)"
        )
    elif dashboard:
        logger.warning("--dashboard: the cluster at %s serves its own dashboard", address)
    kwargs.setdefault("include_dashboard", False)
    kwargs.setdefault("configure_logging", False)
    try:
        ray.init(address=address or "local", **kwargs)
    except (ConnectionError, RuntimeError) as err:
        if address is None:
            raise
        if os.environ.get(_AUTH_MODE) != "token" and not _token_available():
            # Something listens there (the probe got through), but this client has no token
            # to show: what a token-authenticated cluster (Ray's default) answers with.
            raise RayClusterError(
                f"the Ray cluster at {address} answered but did not let this client join: a "
                "cluster with token authentication (Ray's default) needs its token here, in "
                "RAY_AUTH_TOKEN, a file named by RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token "
                f"(Ray said: {err})"
            ) from None
        hint = (
            "check the address (`ray status` on the head node prints it) and that this "
            "machine reaches it; a cluster with token authentication (Ray's default) needs "
            "RAY_AUTH_MODE=token here and its token in RAY_AUTH_TOKEN or ~/.ray/auth_token"
        )
        raise RayClusterError(
            f"cannot reach the Ray cluster at {address}: {err} ({hint})"
        ) from None
    return True
