"""``serve run`` of the example Serve config file (subprocess, real Serve on 127.0.0.1)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from serving import wire
from serving.ingress import PROXY_READY_TIMEOUT_VARIABLE

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _example_config(artifact: Path, tmp_path: Path) -> tuple[Path, int]:
    """The example config file pointed at ``artifact`` and a free port."""
    config = yaml.safe_load((ROOT / "examples" / "serve_config.yaml").read_text())
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    config["http_options"]["port"] = port
    config["applications"][0]["args"]["artifact"] = str(artifact)
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, port


def _tail(log: Path, lines: int = 60) -> str:
    """The end of a child's log, for an assertion message."""
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _first_answer(port: int, process: subprocess.Popen[bytes], log: Path) -> httpx.Response:
    """Wait until the service is ready, then ask it for one action.

    A 503 is retried as a client would (it carries ``Retry-After``): just after start-up Ray
    reloads HAProxy as the replica settles, and a request can meet that moment.
    """
    deadline = time.monotonic() + 180
    last = "no answer"
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if client.get(wire.READYZ).status_code == 200:
                    answer = client.post(
                        wire.action_path("cartpole"),
                        json={"observation": [0.0, 0.0, 0.0, 0.0]},
                    )
                    if answer.status_code != 503:
                        return answer
                    last = answer.text
            except httpx.TransportError as err:
                last = repr(err)
            time.sleep(0.5)
    raise AssertionError(
        f"the service did not answer ({last}; exit code {process.poll()}):\n{_tail(log)}"
    )


def test_example_config_file_serves_the_artifact(cartpole_artifact: Path, tmp_path: Path) -> None:
    path, port = _example_config(cartpole_artifact, tmp_path)
    serve = shutil.which("serve", path=str(Path(sys.executable).parent)) or "serve"
    # Serve's 5 s proxy start-up limit fails `serve run` on a loaded 2-core machine; rlserve
    # sets the same variable (serving.ingress.PROXY_READY_TIMEOUT_S).
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", PROXY_READY_TIMEOUT_VARIABLE: "30"}
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [serve, "run", str(path)],
            cwd=tmp_path,
            env=env,
            start_new_session=True,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        answer = _first_answer(port, process, log)
        assert answer.status_code == 200
        assert answer.json()["policy"] == "cartpole"
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_rlserve_serve_runs_a_config_file(cartpole_artifact: Path, tmp_path: Path) -> None:
    path, port = _example_config(cartpole_artifact, tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    log = tmp_path / "rlserve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "rlserve", "serve", "--config", str(path)],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        answer = _first_answer(port, process, log)
        assert answer.status_code == 200, answer.text
        assert answer.json()["policy"] == "cartpole"
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=90)
    assert code == 0, _tail(log)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("applications: []", "expected a Serve config"),
        ("{not: [yaml", "not YAML"),
        (
            "http_options: {host: 0.0.0.0}\napplications: [{import_path: serving.app:build_app}]",
            "needs args.token",
        ),
    ],
)
def test_rlserve_serve_refuses_a_bad_config_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "serve.yaml"
    path.write_text(text)
    out = subprocess.run(
        [sys.executable, "-m", "rlserve", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
