"""A worker node of a 2-node cluster dies: its env runners and its Serve replica are replaced on
the head. Serving on the cluster also shows replicas on both nodes behind one HTTP address and
artifacts shipped through Ray (the replacement never reads the driver's disk).

Serial, with a cluster of its own per test: each test kills the cluster's worker node.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from rlserve.jobs.service import free_port
from tests.helpers.cluster import Cluster, cluster_env, run_on_cluster, two_node_cluster
from tests.helpers.serve_process import serving

pytestmark = [pytest.mark.integration, pytest.mark.serial]

OBS = {"observation": [0.01, -0.02, 0.03, 0.04]}


@pytest.fixture()
def cluster() -> Iterator[Cluster]:
    with two_node_cluster(cpus_per_node=1) as address:
        yield address


def _replica_nodes() -> list[int]:
    """The raylet (one per node) that started each replica process of the service."""
    parents = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            if "ServeReplica:rlserve" in " ".join(proc.info["cmdline"] or [proc.info["name"]]):
                parent = proc.parent()
                if parent is not None and parent.name() == "raylet":
                    parents.append(parent.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return sorted(parents)


def _running_replicas(cluster: Cluster) -> int:
    """Replicas Serve reports RUNNING (a replacement that cannot load its artifact is not)."""
    code = f"""
import json, ray
from ray import serve
ray.init(address={str(cluster)!r}, configure_logging=False, log_to_driver=False)
app = serve.status().applications["rlserve"]
states = [d.replica_states for d in app.deployments.values()]
print(json.dumps(sum(s.get("RUNNING", 0) for s in states)))
"""
    return int(run_on_cluster(code, timeout=60))


def _answers(url: str, n: int) -> list[int]:
    statuses = []
    with httpx.Client(timeout=10) as client:
        for _ in range(n):
            try:
                statuses.append(
                    client.post(f"{url}/v1/policies/cartpole/compute_action", json=OBS).status_code
                )
            except httpx.HTTPError:
                statuses.append(0)
    return statuses


def test_replicas_on_both_nodes_survive_a_node_and_never_read_the_drivers_disk(
    cluster: Cluster, cartpole_artifact: Path, tmp_path: Path
) -> None:
    artifact = shutil.copytree(cartpole_artifact, tmp_path / "artifact")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [str(artifact), "--name", "cartpole", "--address", cluster, "--port", str(port)]
    args += ["--replicas", "2", "--num-cpus", "0.4", "--proxy-location", "HeadOnly"]
    with serving(args, cwd=tmp_path, env=cluster_env()):
        assert _answers(url, 10) == [200] * 10
        nodes = _replica_nodes()
        assert len(nodes) == 2 and len(set(nodes)) == 2, nodes  # one replica on each node
        version = httpx.get(f"{url}/v1/policies/cartpole", timeout=10).json()["version"]
        # From now on the driver's copy is gone: the replacement must come through Ray.
        shutil.rmtree(artifact)
        cluster.kill_worker_node()
        deadline = time.monotonic() + 120
        while True:
            running, nodes = _running_replicas(cluster), _replica_nodes()
            if running == 2 and len(nodes) == 2:
                break
            assert time.monotonic() < deadline, f"no replacement replica: {running}, {nodes}"
            time.sleep(1)
        assert len(set(nodes)) == 1, nodes  # both on the node that is left
        answer = httpx.post(f"{url}/v1/policies/cartpole/compute_action", json=OBS, timeout=10)
        assert answer.status_code == 200 and answer.json()["version"] == version
        assert _answers(url, 20) == [200] * 20


RUNNERS = """
import json, os, sys, time, ray
from rlserve.jobs.local_ray import init_ray
from training import PPOConfig
init_ray(sys.argv[1], log_to_driver=False)
config = (
    PPOConfig().environment("CartPole-v1")
    .env_runners(num_env_runners=2, num_cpus_per_env_runner=0.5)
    .training(train_batch_size=200, minibatch_size=100, num_epochs=1)
)
def node(runner):
    return ray.get_runtime_context().get_node_id()
with config.build() as algo:
    algo.train()
    placed = algo.env_runner_group.foreach_worker(node, local_env_runner=False)
    print(json.dumps(placed), flush=True)
    while not os.path.exists(sys.argv[2]):  # the test kills the worker node meanwhile
        time.sleep(0.2)
    steps = [algo.train()["num_env_steps_sampled_lifetime"] for _ in range(3)]
    group = algo.env_runner_group
    print(json.dumps({
        "nodes": group.foreach_worker(node, local_env_runner=False),
        "head": ray.get_runtime_context().get_node_id(),
        "restarts": group.num_restarts, "healthy": group.num_healthy_remote_env_runners,
        "steps": steps,
    }), flush=True)
"""


def test_env_runners_of_a_dead_node_are_replaced_on_the_head(
    cluster: Cluster, tmp_path: Path
) -> None:
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-c", RUNNERS, cluster, str(killed)],
        env=cluster_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first, proc.communicate(timeout=30)[1][-4000:]
        assert len(set(json.loads(first))) == 2, first  # one runner on each node
        cluster.kill_worker_node()
        killed.touch()
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-4000:]
    after = json.loads(out.strip().splitlines()[-1])
    assert after["healthy"] == 2 and after["restarts"] >= 1, after
    assert set(after["nodes"]) == {after["head"]}, after  # both now on the head
    assert after["steps"] == sorted(after["steps"]) and after["steps"][0] > 0, after
