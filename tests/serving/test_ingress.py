"""The HAProxy wrapper: Ray's generated config, rewritten and checked by the real HAProxy."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from serving.ingress import (
    CLIENT_IDLE_TIMEOUT_S,
    DISCONNECT_HEADER,
    REPLICA_DRAIN_S,
    ingress_environment,
)

# The shape of the config Ray Serve 2.60 writes (trimmed): the stats page and the Prometheus
# exporter bound to all interfaces, the HTTP frontend on the address asked for.
RAY_CONFIG = """global
    log 127.0.0.1:514 local0 info
    maxconn 100
defaults
    mode http
    log global
    option httplog
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend prometheus
    bind :{metrics}
    http-request use-service prometheus-exporter if {{ path /metrics }}
frontend http_frontend
    bind 127.0.0.1:{http}
    default_backend http-rlserve
backend http-rlserve
    server replica 127.0.0.1:30000
listen stats
  bind *:{stats}
  stats enable
"""


def test_the_wrapper_binds_loopback_marks_requests_and_haproxy_accepts_it(tmp_path: Path) -> None:
    env = ingress_environment("haproxy", tmp_path)
    stats, metrics = env["RAY_SERVE_HAPROXY_STATS_PORT"], env["RAY_SERVE_HAPROXY_METRICS_PORT"]
    config = tmp_path / "haproxy.cfg"
    config.write_text(RAY_CONFIG.format(metrics=metrics, stats=stats, http=18999))
    # `-c` makes HAProxy check the (rewritten) configuration and exit without listening.
    check = subprocess.run(
        [env["RAY_SERVE_HAPROXY_BINARY_PATH"], "-c", "-f", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    rewritten = (tmp_path / "haproxy.cfg.loopback").read_text()
    assert f"    bind 127.0.0.1:{metrics}\n" in rewritten
    assert f"  bind 127.0.0.1:{stats}\n" in rewritten
    assert "bind *:" not in rewritten and f"bind :{metrics}" not in rewritten
    frontend = rewritten.split("frontend http_frontend\n", 1)[1].split("backend", 1)[0]
    assert f"http-request set-header {DISCONNECT_HEADER} ?1" in frontend
    assert rewritten.count(DISCONNECT_HEADER) == 1  # only the HTTP frontend
    # Successful requests are not logged; errors and aborts still are.
    assert "    option httplog\n    option dontlog-normal\n" in rewritten
    assert config.read_text() == RAY_CONFIG.format(metrics=metrics, stats=stats, http=18999)
    assert env["RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S"] == str(CLIENT_IDLE_TIMEOUT_S) == "60"
    assert env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] == str(REPLICA_DRAIN_S) == "2.0"


def test_the_proxy_mode_keeps_serves_python_proxy(tmp_path: Path) -> None:
    env = ingress_environment("proxy", tmp_path)
    assert env == {
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0",
    }
    with pytest.raises(ValueError, match="ingress: expected one of haproxy, proxy"):
        ingress_environment("nginx", tmp_path)  # type: ignore[arg-type]
