"""``--address``: train, tune and evaluate on an existing 2-node Ray cluster on this machine.

Serial: a ``ray start`` cluster is visible to every Ray started on the machine meanwhile (Ray's
own ``ray.init()`` would join it), which is the very accident ``init_ray`` avoids, and which would
disturb the parallel phase's tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.helpers.cluster import cluster_env, run_on_cluster, two_node_cluster

pytestmark = [pytest.mark.integration, pytest.mark.serial]


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    with two_node_cluster(cpus_per_node=1) as address:
        yield address


def _rlserve(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rlserve", *args],
        cwd=cwd,
        env=cluster_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def test_env_runners_are_placed_on_both_nodes(cluster: str) -> None:
    code = f"""
import json, ray
from rlserve.jobs.local_ray import init_ray
from training import PPOConfig
init_ray({cluster!r}, log_to_driver=False)
config = PPOConfig().environment("CartPole-v1").env_runners(num_env_runners=2)
with config.training(train_batch_size=200, minibatch_size=100, num_epochs=1).build() as algo:
    algo.train()
    nodes = algo.env_runner_group.foreach_worker(
        lambda runner: ray.get_runtime_context().get_node_id(), local_env_runner=False
    )
print(json.dumps({{"runners": nodes, "cluster": [n["NodeID"] for n in ray.nodes()]}}))
"""
    placed = run_on_cluster(code, timeout=180)
    assert isinstance(placed, dict)
    assert len(placed["runners"]) == 2
    assert set(placed["runners"]) == set(placed["cluster"])  # one runner per 1-CPU node


def test_a_private_ray_is_started_even_beside_a_running_cluster(cluster: str) -> None:
    code = """
import json, ray
from rlserve.jobs.local_ray import init_ray
init_ray(None, num_cpus=1, log_to_driver=False)
print(json.dumps(ray.get_runtime_context().gcs_address))
"""
    gcs = run_on_cluster(code)
    # Compared by port: the cluster's nodes advertise Ray's choice of address, not 127.0.0.1.
    assert _port(gcs) != _port(cluster)  # plain ray.init() would have joined the cluster


@pytest.mark.parametrize(
    "settings",
    [{"num_learners": 1}, {"remote_worker_envs": True, "num_envs_per_env_runner": 2}],
    ids=["learner-actor", "env-actors"],
)
def test_training_without_address_never_joins_a_running_cluster(
    cluster: str, settings: dict[str, object], tmp_path: Path
) -> None:
    # No remote runners, but actors all the same: the library's own ray.init() would have
    # joined the cluster (what `rlserve train` did before it asked the config).
    settings = {**settings, "train_batch_size": 200, "minibatch_size": 100, "num_epochs": 1}
    code = f"""
import json, ray
from rich.console import Console
from rlserve.jobs.training import TrainOptions, run_training
options = TrainOptions(env="CartPole-v1", settings={settings!r}, stop_iters=1,
                       checkpoint_dir={str(tmp_path / "run")!r})
run_training(options, Console(quiet=True))
print(json.dumps(ray.get_runtime_context().gcs_address))
"""
    gcs = run_on_cluster(code, timeout=180)
    assert _port(gcs) != _port(cluster)


def test_train_then_evaluate_on_the_cluster(cluster: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    trained = _rlserve(
        "train",
        "--address",
        cluster,
        "--env",
        "CartPole-v1",
        "--num-env-runners",
        "2",
        "--set",
        "train_batch_size=200",
        "--set",
        "minibatch_size=100",
        "--stop-iters",
        "1",
        "--checkpoint-dir",
        str(run_dir),
        cwd=tmp_path,
    )
    assert trained.returncode == 0, trained.stderr[-4000:]
    checkpoint = run_dir / "checkpoint_final"
    assert (checkpoint / "algorithm_config.json").is_file()  # written by the driver
    report = tmp_path / "report.json"
    evaluated = _rlserve(
        "evaluate",
        str(checkpoint),
        "--address",
        cluster,
        "--num-workers",
        "2",
        "--episodes",
        "4",
        "--output",
        str(report),
        cwd=tmp_path,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-4000:]
    result = json.loads(report.read_text())
    assert len(result["episodes"]) == 4 and result["workers_used"] == 2


def test_an_unreachable_address_is_a_clear_error_at_once(tmp_path: Path) -> None:
    out = _rlserve(
        "train",
        "--address",
        "127.0.0.1:1",
        "--env",
        "CartPole-v1",
        "--stop-iters",
        "1",
        cwd=tmp_path,
        timeout=60,
    )
    assert out.returncode == 2, out.stderr
    assert "error: cannot reach the Ray cluster at 127.0.0.1:1" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_cluster_that_wants_a_token_says_so(cluster: str, tmp_path: Path) -> None:
    # The cluster answers, but this client has no token to show (none in the environment,
    # none in ~/.ray): the error says what is missing instead of "cannot reach".
    env = {k: v for k, v in cluster_env().items() if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_MODE")}
    out = subprocess.run(
        [sys.executable, "-m", "rlserve", "train", "--address", cluster, "--env", "CartPole-v1",
         "--stop-iters", "1", "--checkpoint-dir", str(tmp_path / "run")],
        cwd=tmp_path, env={**env, "HOME": str(tmp_path)}, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr[-4000:]
    assert f"error: the Ray cluster at {cluster} answered" in out.stderr, out.stderr[-4000:]
    assert "needs its token here, in RAY_AUTH_TOKEN" in out.stderr
    assert "Traceback" not in out.stderr


def _trial_nodes_while_running(proc: subprocess.Popen[str]) -> set[int]:
    """The raylets (one per node) whose workers ran a PPO trial while ``proc`` ran."""
    seen: set[int] = set()
    while proc.poll() is None:
        for worker in psutil.process_iter(["cmdline"]):
            try:
                if " ".join(worker.info["cmdline"] or []).startswith("ray::PPO"):
                    parent = worker.parent()
                    if parent is not None and parent.name() == "raylet":
                        seen.add(parent.pid)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        time.sleep(0.2)
    return seen


def test_tune_trials_run_on_both_nodes(cluster: str, tmp_path: Path) -> None:
    # One CPU per trial (the algorithm's driver; no remote runners) on 1-CPU nodes: the two
    # trials of the grid can only run at once on different nodes.
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlserve", "tune", "--address", cluster, "--env", "CartPole-v1",
         "--grid", "lr=0.001,0.0005", "--set", "train_batch_size=1000",
         "--set", "minibatch_size=250", "--stop-iters", "4", "--storage", str(tmp_path / "tune")],
        cwd=tmp_path, env=cluster_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        nodes = _trial_nodes_while_running(proc)
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-4000:]
    assert any(line.startswith("best checkpoint: ") for line in out.splitlines()), out
    assert len(nodes) == 2, nodes
