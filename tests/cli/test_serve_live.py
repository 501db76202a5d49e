"""``rlserve serve`` in the foreground, as users run it: HAProxy ingress, loopback, Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest

from exporters import export_checkpoint
from rlserve.jobs.service import free_port
from serving import PolicyClient, PolicySession
from serving.client import AuthenticationError, BadRequestError
from tests.helpers.configs import tiny_multi_agent_ppo, tiny_sac
from tests.helpers.policies import TinyPolicies
from tests.helpers.serve_process import serving

pytestmark = pytest.mark.integration

OBS = [0.01, -0.02, 0.03, 0.04]
TOKEN = "s3cret-token"
Service = tuple[subprocess.Popen[str], str, int]


def _listeners(root: psutil.Process, udp: bool = False) -> list[tuple[str, int, str]]:
    """(address, port, process name) of every TCP socket listening in ``root``'s tree.

    With ``udp``, of every bound UDP socket instead (UDP has no listening state).
    """
    found = []
    for proc in [root, *root.children(recursive=True)]:
        try:
            for conn in proc.net_connections(kind="udp" if udp else "tcp"):
                if (udp and conn.laddr) or conn.status == psutil.CONN_LISTEN:
                    found.append((conn.laddr.ip, conn.laddr.port, proc.name()))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1 on dual-stack sockets
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


def _sac_artifact(root: Path) -> Path:
    """A tiny SAC policy (one iteration on Pendulum-v1) exported as ONNX."""
    with tiny_sac().build() as algo:
        algo.train()
        checkpoint = algo.save(str(root / "checkpoint")).checkpoint.path
    return export_checkpoint(checkpoint, root / "artifact", ["onnx"])


MA_OBS = [[0.01, 0.02, -0.03, 0.04], [-0.2, 0.1, 0.05, -0.3]]


@pytest.fixture(scope="module")
def multi_agent(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], dict[str, Any]]:
    """A two-policy checkpoint exported an artifact per policy, and each policy's actions."""
    root = tmp_path_factory.mktemp("multi_agent")
    with tiny_multi_agent_ppo().build() as algo:
        algo.train()
        checkpoint = algo.save(str(root / "checkpoint")).checkpoint.path
        actions = {
            pid: [algo.compute_single_action(o, policy_id=pid, explore=False) for o in MA_OBS]
            for pid in ("p0", "p1")
        }
    artifacts = {
        pid: export_checkpoint(checkpoint, root / pid, ["onnx"], policy_id=pid)
        for pid in ("p0", "p1")
    }
    return artifacts, actions


_MORE_POLICIES = ("multi_agent", "tiny_policies")
"""Fixtures of the tests that need the multi-agent and LSTM policies served too."""


@pytest.fixture(scope="module")
def service(
    cartpole_artifact: Path,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[Service]:
    """``rlserve serve ARTIFACT --token ...`` running in a subprocess (default ingress), with a
    SAC policy beside the CartPole one; and the two policies of a multi-agent checkpoint and
    an LSTM policy when a test of this run asks for them (not in the serial phase, which runs
    only this module's reliability test: their training would only slow it)."""
    port, metrics_port = free_port(), free_port()
    sac = _sac_artifact(tmp_path_factory.mktemp("sac"))
    args = [
        *(str(cartpole_artifact), "--name", "cartpole", "--port", str(port), "--token", TOKEN),
        *(str(sac), "--name", "pendulum-sac"),
        *("--max-batch-size", "32", "--metrics-port", str(metrics_port)),
    ]
    here = request.path
    wanted = any(
        item.path == here and name in getattr(item, "fixturenames", ())
        for item in request.session.items
        for name in _MORE_POLICIES
    )
    if wanted:
        artifacts, _ = request.getfixturevalue("multi_agent")
        lstm = request.getfixturevalue("tiny_policies").artifact("lstm", ["onnx"])
        args += [str(artifacts["p0"]), "--name", "p0", str(artifacts["p1"]), "--name", "p1"]
        args += [str(lstm), "--name", "lstm"]
    env = {"RAY_metrics_report_interval_ms": "500"}  # Ray's default: every 10 s
    with serving(args, tmp_path_factory.mktemp("serve"), env) as proc:
        yield proc, f"http://127.0.0.1:{port}", metrics_port


def test_serve_answers_with_the_token_and_refuses_without(
    service: Service,
) -> None:
    _, url, _ = service
    with PolicyClient(url, token=TOKEN) as client:
        answer = client.compute_action("cartpole", OBS)
        assert answer.action in (0, 1)
        assert answer.policy == "cartpole"
    with PolicyClient(url) as client, pytest.raises(AuthenticationError):
        client.compute_action("cartpole", OBS)
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}


def test_a_served_sac_policy_samples_its_squashed_gaussian_reproducibly_in_bounds(
    service: Service,
) -> None:
    _, url, _ = service
    obs = [1.0, 0.0, 0.5]
    with PolicyClient(url, token=TOKEN) as client:
        mode = client.compute_action("pendulum-sac", obs, return_dist_inputs=True)
        assert mode.action_dist_inputs is not None and np.shape(mode.action_dist_inputs) == (2,)
        assert client.compute_action("pendulum-sac", obs).action == mode.action  # lists
        sampled = [
            client.compute_action("pendulum-sac", obs, explore=True, seed=seed).action
            for seed in (7, 7, 8)
        ]
    assert sampled[0] == sampled[1] != sampled[2]  # the seed picks the sample
    assert all(-2.0 <= float(np.asarray(a).reshape(-1)[0]) <= 2.0 for a in [mode.action, *sampled])


def test_a_multi_agent_checkpoints_policies_serve_under_their_names(
    service: Service, multi_agent: tuple[dict[str, Path], dict[str, Any]]
) -> None:
    _, url, _ = service
    _, expected = multi_agent
    with PolicyClient(url, token=TOKEN) as client:
        names = {p["name"] for p in client.policies()}
        assert {"p0", "p1"} <= names
        for pid in ("p0", "p1"):
            assert [client.compute_action(pid, o).action for o in MA_OBS] == expected[pid]


def test_a_recurrent_policy_carries_its_state_through_the_service(
    service: Service, tiny_policies: TinyPolicies
) -> None:
    """Over HTTP through HAProxy and Serve's batching (the client carries the state), and
    over a session (the replica holds it): the in-process runtime's answers, step by step."""
    from serving import PolicyRuntime

    runtime = PolicyRuntime.from_path(tiny_policies.artifact("lstm", ["onnx"]))
    observations = [[0.01 * t, -0.02 * t] for t in range(12)]
    state, expected = None, []
    for obs in observations:
        batch = runtime.compute([np.asarray([obs], np.float32)], state=state)
        state = batch.state
        expected.append((int(batch.actions[0]), batch.state))
    _, url, _ = service
    with PolicyClient(url, token=TOKEN) as client:
        assert client.policy("lstm")["recurrent"] is True
        carried = None
        for obs, (action, want) in zip(observations, expected, strict=True):
            answer = client.compute_action("lstm", obs, state=carried)
            assert answer.action == action
            assert want is not None and answer.state is not None
            np.testing.assert_allclose(answer.state[0], want[0][0], rtol=1e-5, atol=1e-6)
            carried = answer.state
    with PolicySession(url, "lstm", token=TOKEN) as session:
        for step, (obs, (action, _)) in enumerate(zip(observations, expected, strict=True)):
            answer = session.compute_action(obs, agent="npc-1")
            assert answer.action == action, step


def test_bad_input_through_haproxy_is_a_4xx_and_the_next_request_succeeds(
    service: Service,
) -> None:
    _, url, _ = service
    headers = {"authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
    action = f"{url}/v1/policies/cartpole/compute_action"
    cases = [
        (b"{not json", 400),
        (b'{"observation": [1, 2]}', 422),
        (b'{"observation": [NaN, 0, 0, 0]}', 422),
        (b'{"observations": [[0, 0, 0, 0]]}', 422),
    ]
    for body, status in cases:
        answer = httpx.post(action, content=body, headers=headers)
        assert answer.status_code == status, (body, answer.text)
        assert "detail" in answer.json()
    assert (
        httpx.post(
            f"{url}/v1/policies/nope/compute_action", content=b"{}", headers=headers
        ).status_code
        == 404
    )
    with PolicyClient(url, token=TOKEN) as client:
        with pytest.raises(BadRequestError):
            client.compute_action("cartpole", [0.0, 0.0])
        assert client.compute_action("cartpole", OBS).action in (0, 1)


def _replica_url(proc: subprocess.Popen[str]) -> str:
    """The replica's own HTTP port (Serve's direct ingress, behind HAProxy, on loopback)."""
    for address, port, name in _listeners(psutil.Process(proc.pid)):
        if name.startswith("ray::ServeReplica") and _is_loopback(address):
            candidate = f"http://127.0.0.1:{port}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{candidate}/healthz", timeout=5).status_code == 200:
                    return candidate
    raise AssertionError("no HTTP port of the replica answers")


def test_concurrent_requests_are_batched(service: Service) -> None:
    # Straight to the replica: HAProxy buffers each request whole before forwarding it
    # (slow clients then cost it, not a replica slot), so through it requests arrive one at
    # a time and batch only once the replica falls behind; the batcher is the same.
    proc, _, _ = service
    url = _replica_url(proc)

    async def burst() -> list[int]:
        headers = {"authorization": f"Bearer {TOKEN}"}
        action = f"{url}/v1/policies/cartpole/compute_action"
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(headers=headers, limits=limits) as client:
            sizes: list[int] = []
            for _ in range(5):
                answers = await asyncio.gather(
                    *(client.post(action, json={"observation": OBS}) for _ in range(32))
                )
                assert all(a.status_code == 200 for a in answers)
                sizes += [int(a.headers["x-batched-requests"]) for a in answers]
            return sizes

    sizes = asyncio.run(burst())
    assert max(sizes) > 1, sizes


def test_metrics_are_exported_to_prometheus(service: Service) -> None:
    _, url, metrics_port = service
    with PolicyClient(url, token=TOKEN) as client:
        for _ in range(3):
            client.compute_action("cartpole", OBS)
    session = PolicySession(url, "cartpole", token=TOKEN)  # open while the metrics are read
    for _ in range(3):
        session.compute_action(OBS)  # session messages count as requests too
    deadline = time.monotonic() + 60
    text, served, sessions = "", [], []
    try:
        while time.monotonic() < deadline:
            try:  # Ray's metrics agent starts a few seconds after Serve answers
                text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
            except httpx.ConnectError:
                time.sleep(0.5)
                continue
            lines = text.splitlines()
            served = [
                line
                for line in lines
                if line.startswith("ray_rlserve_requests")
                and 'status="200"' in line
                and 'policy="cartpole"' in line  # (the SAC policy's counts are beside it)
            ]
            sessions = [line for line in lines if line.startswith("ray_rlserve_sessions_open")]
            if (
                served
                and float(served[0].rsplit(" ", 1)[1]) >= 6
                and sessions
                and float(sessions[0].rsplit(" ", 1)[1]) == 1
            ):
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"no rlserve_requests / sessions_open in {text[-3000:]}")
    finally:
        session.close()
    assert 'policy="cartpole"' in sessions[0]
    assert 'policy="cartpole"' in served[0]
    assert "ray_rlserve_batch_requests_bucket" in text
    latency = [line for line in text.splitlines() if "rlserve_inference_latency_ms_count" in line]
    # Tagged with the names they are served under (--name), not the manifests' ("ppo", "sac").
    policies = {line.split('policy="', 1)[1].split('"', 1)[0] for line in latency}
    served_names = {"cartpole", "pendulum-sac", "p0", "p1", "lstm"}
    assert "cartpole" in policies and policies <= served_names, latency


@pytest.mark.reliability
def test_every_listener_of_the_service_is_on_loopback(
    service: Service,
) -> None:
    """Every TCP listener of the service's process tree (Ray, HAProxy, replicas) is loopback."""
    proc, url, metrics_port = service
    root = psutil.Process(proc.pid)
    # An HAProxy reload (a replica settling, Serve's periodic config refresh) replaces the
    # process: for a moment no haproxy is in the tree. Look again for a few seconds.
    deadline = time.monotonic() + 15
    while True:
        listeners = _listeners(root)
        names = {name for _, _, name in listeners}
        if "haproxy" in names or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert "haproxy" in names, listeners  # the default ingress really is HAProxy
    ports = {port for _, port, _ in listeners}
    assert {int(url.rsplit(":", 1)[1]), metrics_port} <= ports, listeners
    assert {"gcs_server", "raylet"} <= names, listeners  # Ray's own listeners are in the list
    public = [item for item in listeners if not _is_loopback(item[0])]
    # Ray Serve 2.60 binds each replica's inter-deployment gRPC server to [::]:0, hard-coded
    # (ray/serve/_private/replica.py); no setting moves it. It is the one exception, and Ray's
    # cluster-token interceptor guards it: see the next test.
    upstream = [item for item in public if item[2].startswith("ray::ServeReplica")]
    # UDP has no listeners, but a socket bound beyond loopback could receive: none may be
    # (HAProxy logs to 127.0.0.1 from a socket of its own, Ray binds none).
    udp = [item for item in _listeners(root, udp=True) if not _is_loopback(item[0])]
    report = f"TCP listeners beyond loopback: {public}; UDP sockets beyond loopback: {udp}"
    assert public == upstream and len(upstream) <= 1, report
    assert udp == [], report


def test_the_replica_grpc_port_refuses_calls_without_the_ray_cluster_token(
    service: Service,
) -> None:
    import grpc  # type: ignore[import-untyped]

    proc, _, _ = service
    ports = [
        port
        for address, port, name in _listeners(psutil.Process(proc.pid))
        if name.startswith("ray::ServeReplica") and not _is_loopback(address)
    ]
    if not ports:
        pytest.skip("this Ray version keeps the replica's gRPC port on loopback")
    with grpc.insecure_channel(f"127.0.0.1:{ports[0]}") as channel:
        call = channel.unary_unary("/ray.serve.ASGIService/HandleRequest")
        with pytest.raises(grpc.RpcError) as refused:
            call(b"", timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


# SIGINT (Ctrl-C) here; SIGTERM of a service at each start-up moment is in test_serve_signals.
@pytest.mark.parametrize("signum", [signal.SIGINT])
def test_a_stop_signal_stops_the_service_and_everything_it_started(
    cartpole_artifact: Path, tmp_path: Path, signum: int
) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlserve", "serve", str(cartpole_artifact), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("serving ") or "error" in line:
            break
    assert line.startswith("serving "), line
    tree = psutil.Process(proc.pid).children(recursive=True)
    assert any(p.name() == "haproxy" for p in tree)
    proc.send_signal(signum)
    signalled = time.monotonic()
    out, _ = proc.communicate(timeout=90)
    # Serve's defaults held a stopping replica open for 30 s (a drain window for external
    # load balancers); behind rlserve's HAProxy a stop takes seconds.
    assert time.monotonic() - signalled < 20
    assert proc.returncode == 0, out[-2000:]
    assert "Traceback" not in out
    _, alive = psutil.wait_procs(tree, timeout=30)
    assert not alive, [p.name() for p in alive]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz")
