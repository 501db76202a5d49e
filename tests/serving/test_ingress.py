"""The HAProxy wrapper: Ray's generated config, rewritten and checked by the real HAProxy."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.ingress import (
    CLIENT_IDLE_TIMEOUT_S,
    DISCONNECT_HEADER,
    HEADER_TIMEOUT_S,
    MAX_WORKDIR_CHARS,
    PROXY_READY_TIMEOUT_S,
    REPLICA_DRAIN_S,
    TIMEOUT_HEADER,
    IngressLimits,
    connection_limits,
    ingress_environment,
)


@pytest.fixture()
def tmp_path() -> Iterator[Path]:
    """pytest's own, but short: an ingress workdir holds Unix sockets (MAX_WORKDIR_CHARS)."""
    path = Path(tempfile.mkdtemp(prefix="rlsi-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_workdir_too_long_for_haproxys_sockets_is_refused() -> None:
    fits = Path("/tmp") / ("w" * (MAX_WORKDIR_CHARS - len("/tmp/")))
    with pytest.raises(ValueError, match=f"at most {MAX_WORKDIR_CHARS}"):
        ingress_environment("haproxy", fits / "x")
    assert ingress_environment("proxy", fits / "x")  # no HAProxy, no sockets


# The shape of the config Ray Serve 2.60 writes (trimmed): the stats page and the Prometheus
# exporter bound to all interfaces, the HTTP frontend on the address asked for.
RAY_CONFIG = """global
    log {log} local0 info
    maxconn 4096
defaults
    mode http
    log global
    option httplog
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    errorfile 502 /tmp/ray/500.http
    errorfile 503 /tmp/ray/500.http
    errorfile 504 /tmp/ray/500.http
frontend prometheus
    bind :{metrics}
    http-request use-service prometheus-exporter if {{ path /metrics }}
frontend http_frontend
    bind 127.0.0.1:{http}
    acl is_http-rlserve path_beg /
    use_backend http-rlserve if is_http-rlserve
    default_backend default_backend
backend default_backend
    http-request return status 404 content-type text/plain string "not found"
backend http-rlserve
    default-server fastinter 250ms check
    server replica 127.0.0.1:30000 check observe layer4 error-limit 3 on-error mark-down
    server fallback 127.0.0.1:8500 check backup
listen stats
  bind *:{stats}
  stats enable
"""


def test_the_wrapper_binds_loopback_marks_requests_and_haproxy_accepts_it(tmp_path: Path) -> None:
    env, ray_config, rewritten = _rewrite(tmp_path)
    stats, metrics = env["RAY_SERVE_HAPROXY_STATS_PORT"], env["RAY_SERVE_HAPROXY_METRICS_PORT"]
    assert f"    bind 127.0.0.1:{metrics}\n" in rewritten
    assert f"  bind 127.0.0.1:{stats}\n" in rewritten
    assert "bind *:" not in rewritten and f"bind :{metrics}" not in rewritten
    frontend = rewritten.split("frontend http_frontend\n", 1)[1].split("backend", 1)[0]
    assert f"http-request set-header {DISCONNECT_HEADER} ?1" in frontend
    assert rewritten.count(DISCONNECT_HEADER) == 1  # only the HTTP frontend
    assert f"http-request del-header {TIMEOUT_HEADER}" in frontend
    # No UDP socket on 0.0.0.0 for the log line: a Unix socket in the private directory.
    assert env["RAY_SERVE_HAPROXY_LOG_TARGET"] == str(tmp_path / "log.sock")
    # Successful requests are not logged; errors and aborts still are.
    assert "    option httplog\n    option dontlog-normal\n" in rewritten
    assert (tmp_path / "haproxy.cfg").read_text() == ray_config  # Ray's file is left as it was
    assert env["RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S"] == str(CLIENT_IDLE_TIMEOUT_S) == "60"
    assert env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] == str(REPLICA_DRAIN_S) == "2.0"
    # A proxy slow to start on a busy machine is waited for, not killed (Ray's default: 5 s).
    assert env["RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S"] == str(PROXY_READY_TIMEOUT_S) == "30.0"


def test_the_proxy_mode_keeps_serves_python_proxy(tmp_path: Path) -> None:
    env = ingress_environment("proxy", tmp_path)
    assert env == {
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0",
        "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "30.0",
    }
    with pytest.raises(ValueError, match="ingress: expected one of haproxy, proxy"):
        ingress_environment("nginx", tmp_path)  # type: ignore[arg-type]


def _rewrite(
    tmp_path: Path, limits: IngressLimits | None = None
) -> tuple[dict[str, str], str, str]:
    """The environment, Ray's configuration and the wrapper's rewrite, checked by HAProxy."""
    env = ingress_environment("haproxy", tmp_path, limits)
    ray_config = RAY_CONFIG.format(
        metrics=env["RAY_SERVE_HAPROXY_METRICS_PORT"],
        stats=env["RAY_SERVE_HAPROXY_STATS_PORT"],
        http=18999,
        log=env["RAY_SERVE_HAPROXY_LOG_TARGET"],
    )
    config = tmp_path / "haproxy.cfg"
    config.write_text(ray_config)
    # `-c` makes HAProxy check the (rewritten) configuration and exit without listening.
    check = subprocess.run(
        [env["RAY_SERVE_HAPROXY_BINARY_PATH"], "-c", "-f", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    return env, ray_config, (tmp_path / "haproxy.cfg.loopback").read_text()


def _rewritten(tmp_path: Path, limits: IngressLimits | None = None) -> str:
    return _rewrite(tmp_path, limits)[2]


def test_sessions_get_a_backend_of_their_own(tmp_path: Path) -> None:
    """Sessions never take HTTP's slots: their own backend, servers tracked from the primary."""
    rewritten = _rewritten(tmp_path, IngressLimits(max_ongoing_requests=8, max_sessions=100))
    frontend = rewritten.split("frontend http_frontend\n", 1)[1].split("\nbackend ", 1)[0]
    session_rule = (
        "use_backend http-rlserve-sessions if is_http-rlserve "
        "{ path_end /session } { req.hdr(upgrade) -i websocket }"
    )
    assert frontend.index(session_rule) < frontend.index("use_backend http-rlserve if")
    sessions = rewritten.split("backend http-rlserve-sessions\n", 1)[1]
    assert "server replica 127.0.0.1:30000 track http-rlserve/replica maxconn 116\n" in sessions
    assert "track http-rlserve/fallback maxconn 116 backup" in sessions  # still a backup
    assert "check maxconn 8\n" in rewritten.split("backend http-rlserve\n", 1)[1]
    assert "default_backend-sessions" not in rewritten


def test_haproxy_bounds_slow_clients_and_the_replicas_queue(tmp_path: Path) -> None:
    rewritten = _rewritten(tmp_path, IngressLimits(max_ongoing_requests=8, max_queued_requests=5))
    defaults = rewritten.split("defaults\n", 1)[1].split("frontend", 1)[0]
    assert f"    timeout http-request {HEADER_TIMEOUT_S}s\n" in defaults
    assert "    timeout queue 5s\n" in defaults
    backend = rewritten.split("backend http-rlserve\n", 1)[1]
    assert "    option http-buffer-request\n" in backend  # small slow bodies wait in HAProxy
    assert "check maxconn 8\n" in backend  # max_ongoing_requests per replica
    assert "hdr Retry-After 1 if { avg_queue ge 5 }" in backend  # then 503 at once
    total, listener, per_client = connection_limits(4096, None)
    assert (total, listener, per_client) == (4096, 4032, 2016)
    frontend = rewritten.split("frontend http_frontend\n", 1)[1].split("backend", 1)[0]
    assert f"    maxconn {listener}\n" in frontend
    assert f"reject if {{ sc0_conn_cur gt {per_client} }}" in frontend
    # The process limit follows the descriptors HAProxy may open: 2 per proxied request.
    assert connection_limits(4096, 1024) == (384, 336, 168)
    unbounded = _rewritten(tmp_path, IngressLimits(max_queued_requests=-1, retry_after_s=2.5))
    assert "avg_queue" not in unbounded and "hdr Retry-After 3 if { status 503 }" in unbounded
    honoured = _rewritten(tmp_path, IngressLimits(honour_timeout_header=True))
    assert f"del-header {TIMEOUT_HEADER}" not in honoured
    # A session handshake switches Serve's request timeout off (sessions time each message),
    # after the client's own header was deleted.
    session_rule = f"set-header {TIMEOUT_HEADER} 0 if {{ path_end /session }}"
    assert frontend.index(f"del-header {TIMEOUT_HEADER}") < frontend.index(session_rule)


def test_haproxys_own_errors_are_json_and_never_500(tmp_path: Path) -> None:
    rewritten = _rewritten(tmp_path)
    assert "/tmp/ray/500.http" not in rewritten  # Ray's page turns 502/503/504 into 500
    pages = {}
    for status in (400, 408, 502, 503, 504):
        assert f'errorfile {status} "{tmp_path / f"error-{status}.http"}"' in rewritten
        head, body = (tmp_path / f"error-{status}.http").read_bytes().split(b"\r\n\r\n")
        assert json.loads(body)["detail"]
        assert f"Content-Length: {len(body)}".encode() in head
        pages[status] = head.decode()
    assert pages[502].startswith("HTTP/1.1 503 ") and "Retry-After: 1" in pages[502]
    assert pages[503].startswith("HTTP/1.1 503 ") and "Retry-After: 1" in pages[503]
    assert pages[504].startswith("HTTP/1.1 504 ")
    assert pages[408].startswith("HTTP/1.1 408 ") and "Connection: close" in pages[408]
