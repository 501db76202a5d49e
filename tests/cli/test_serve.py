"""``rlserve serve`` refusals and the one-command ``rlserve demo`` (subprocess)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.integration

RLSERVE = shutil.which("rlserve", path=str(Path(sys.executable).parent)) or "rlserve"


@pytest.fixture()
def artifact(cartpole_artifact: Path) -> Path:
    return cartpole_artifact


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RLSERVE, *args], capture_output=True, text=True, timeout=240, cwd=cwd, check=False
    )


def test_serve_refuses_a_public_address_without_a_token(artifact: Path, tmp_path: Path) -> None:
    out = _run("serve", str(artifact), "--host", "0.0.0.0", cwd=tmp_path)
    assert out.returncode == 2
    assert "--token is required" in out.stderr
    assert "Traceback" not in out.stderr


def test_serve_refuses_a_port_in_use(artifact: Path, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = _run("serve", str(artifact), "--port", str(port), cwd=tmp_path)
    assert out.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr


def test_serve_refuses_a_corrupt_artifact(artifact: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(artifact, broken)
    (broken / "model.onnx").write_bytes(b"nope")
    out = _run("serve", str(broken), cwd=tmp_path)
    assert out.returncode == 2
    assert "model.onnx" in out.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backend", "torchscript"], "add --allow-torchscript for artifacts you built yourself"),
        (["--backend", "torch_export"], "no 'torch_export' format; it has ['onnx']"),
        (["--backend", "tensorflow"], "--backend: expected onnx, torch_export or torchscript"),
        (["--max-queued-requests", "-5"], "--max-queued-requests: Input should be greater than"),
        (["--batch-wait-ms", "5000"], "--batch-wait-ms: Input should be less than or equal to 1"),
    ],
)
def test_serve_refuses_options_it_cannot_use(
    artifact: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    out = _run("serve", str(artifact), *args, cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().startswith("error: ") and message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def _left_running(cwd: Path) -> list[str]:
    """Processes still running in ``cwd`` (Ray's processes inherit the command's directory)."""
    deadline = time.monotonic() + 15
    while True:
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if Path(proc.cwd()) == cwd:
                    found.append(" ".join(proc.info["cmdline"] or [])[:120])
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def test_serve_refuses_replicas_larger_than_the_machine(artifact: Path, tmp_path: Path) -> None:
    port = str(_free_port())
    out = _run("serve", str(artifact), "--port", port, "--num-gpus", "1000", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "error: --num-gpus 1000: a replica needs more than this machine's Ray has" in out.stderr
    assert "Traceback" not in out.stderr
    assert _left_running(tmp_path) == []  # Ray had started: it was shut down again


def test_a_replica_that_fails_to_start_is_one_line_and_leaves_nothing_running(
    artifact: Path, tmp_path: Path
) -> None:
    """The artifact changes on disk between rlserve's check and the replica's own load."""
    copy = tmp_path / "artifact"
    shutil.copytree(artifact, copy)
    script = textwrap.dedent(
        f"""
        from pathlib import Path

        import serving.app
        from rlserve.cli import app

        verify = serving.app.load_artifact

        def verify_then_tamper(path):  # build_app's check, the last before the replicas load
            loaded = verify(path)
            (Path(path) / "model.onnx").write_bytes(b"tampered")
            return loaded

        serving.app.load_artifact = verify_then_tamper
        app(["serve", {str(copy)!r}, "--port", "{_free_port()}"], prog_name="rlserve")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
        check=False,
        env={**os.environ, "RAY_SERVE_MAX_PER_REPLICA_RETRY_COUNT": "1"},  # fail at once
    )
    assert out.returncode == 2, out.stderr
    error = out.stderr.strip().splitlines()[-1]
    assert error.startswith("error: the policies could not be deployed: "), out.stderr
    assert "model.onnx" in error and "manifest.json lists" in error  # the replica's own reason
    assert _left_running(tmp_path) == []


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_demo_trains_exports_serves_and_evaluates(tmp_path: Path) -> None:
    out = _run("demo", "--episodes", "1", "--workdir", str(tmp_path / "demo"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "best checkpoint:" in out.stdout
    assert "evaluation over HTTP: 1 episodes, mean return" in out.stdout
    mean = float(out.stdout.split("mean return ")[1].split()[0])
    assert mean >= 400  # the tuned example is solved before it is served
    assert (tmp_path / "demo" / "artifact" / "manifest.json").is_file()
    # Without --keep-running the service has stopped: no URLs as if it were up, and a hint.
    closing = out.stdout.strip().splitlines()[-1]
    assert "rerun with --keep-running" in closing
    assert "try: curl" not in out.stdout and "/docs" not in out.stdout
