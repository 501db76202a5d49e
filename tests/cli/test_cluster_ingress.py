"""The HAProxy ingress on a Ray cluster started by its operator: ``rlserve ingress-env`` on each
node before ``ray start``, then ``rlserve serve --address``.

Serial, with a 2-node cluster of its own started with that environment.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from rlserve.jobs.service import free_port
from tests.helpers.cluster import Cluster, cluster_env, two_node_cluster
from tests.helpers.serve_process import serving

pytestmark = [pytest.mark.integration, pytest.mark.serial]

OBS = {"observation": [0.01, -0.02, 0.03, 0.04]}


def ingress_env(workdir: Path, *options: str) -> dict[str, str]:
    """What ``eval "$(rlserve ingress-env ...)"`` would export."""
    out = subprocess.run(
        [sys.executable, "-m", "rlserve", "ingress-env", "--workdir", str(workdir), *options],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    env = {}
    for line in out.stdout.splitlines():
        (word,) = shlex.split(line.removeprefix("export "))
        key, _, value = word.partition("=")
        env[key] = value
    return env


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    # Short: it holds Unix sockets (pytest's tmp_path is too long for them).
    path = Path(tempfile.mkdtemp(prefix="rlsi-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(workdir: Path) -> Iterator[Cluster]:
    with two_node_cluster(node_env=ingress_env(workdir, "--max-ongoing-requests", "8")) as head:
        yield head


def test_ingress_env_prints_the_haproxy_environment_and_writes_the_wrapper(
    workdir: Path, tmp_path: Path
) -> None:
    env = ingress_env(workdir / "w", "--max-ongoing-requests", "8", "--max-batch-size", "4")
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    wrapper = Path(env["RAY_SERVE_HAPROXY_BINARY_PATH"])
    assert wrapper.parent == (workdir / "w").resolve() and wrapper.stat().st_mode & 0o100
    # HAProxy gates each replica at the service's HTTP slots and queue (8, and 8 queued).
    assert "maxconn 8/" in wrapper.read_text() and "avg_queue ge 8" in wrapper.read_text()
    refused = subprocess.run(
        [sys.executable, "-m", "rlserve", "ingress-env", "--max-queued-requests", "-2"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert refused.returncode == 2 and "error: --max-queued-requests" in refused.stderr
    # pytest's own temporary directories are too long for HAProxy's per-node sockets.
    too_long = subprocess.run(
        [sys.executable, "-m", "rlserve", "ingress-env", "--workdir", str(tmp_path / "w")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert too_long.returncode == 2 and "characters long" in too_long.stderr, too_long.stderr


def test_a_joined_cluster_serves_through_haproxy(
    cluster: Cluster, workdir: Path, cartpole_artifact: Path, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [str(cartpole_artifact), "--name", "cartpole", "--address", cluster]
    args += ["--port", str(port), "--replicas", "2", "--num-cpus", "0.4"]
    args += ["--max-ongoing-requests", "8", "--proxy-location", "HeadOnly"]
    with serving(args, cwd=tmp_path, env=cluster_env()):
        with httpx.Client(timeout=10) as client:
            answers = [
                client.post(f"{url}/v1/policies/cartpole/compute_action", json=OBS)
                for _ in range(20)
            ]
        assert [a.status_code for a in answers] == [200] * 20
        # The HTTP port is HAProxy's, started by the head's Serve from the wrapper.
        owners = {
            proc.info["name"] for proc in psutil.process_iter(["name"]) if _listens(proc, port)
        }
        assert owners == {"haproxy"}, owners


def _listens(proc: psutil.Process, port: int) -> bool:
    try:
        return any(
            c.status == psutil.CONN_LISTEN and c.laddr.port == port
            for c in proc.net_connections(kind="tcp")
        )
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
