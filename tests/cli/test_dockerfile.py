"""The Dockerfile, docker/install.sh and .dockerignore, checked without a Docker engine.

No Docker engine runs here, so these tests parse the Dockerfile for its invariants and run the
pieces that can run outside an image: the install script (with a stand-in python, compared
with what `make -n` says the README's set-up runs), the HEALTHCHECK command (against a local
HTTP server), and the entry point module.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from rlserve import container

ROOT = Path(__file__).resolve().parents[2]
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"


@dataclass
class Instruction:
    keyword: str
    args: str
    stage: int


def _instructions(text: str) -> list[Instruction]:
    """Dockerfile instructions with continuation lines joined and comments dropped."""
    out: list[Instruction] = []
    pending = ""
    stage = -1
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        if keyword.upper() == "FROM":
            stage += 1
        out.append(Instruction(keyword.upper(), args.strip(), stage))
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


DOCKERFILE = _instructions((ROOT / "Dockerfile").read_text())
LAST_STAGE = max(i.stage for i in DOCKERFILE)
RUNTIME = [i for i in DOCKERFILE if i.stage == LAST_STAGE]
BUILD = [i for i in DOCKERFILE if i.stage == 0]


def _one(keyword: str, stage: list[Instruction] = RUNTIME) -> Instruction:
    found = [i for i in stage if i.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword} in the stage, found {len(found)}"
    return found[0]


def _args(stage: list[Instruction]) -> dict[str, str]:
    """ARG defaults of a stage (and the global ARGs before the first FROM)."""
    values: dict[str, str] = {}
    for inst in [i for i in DOCKERFILE if i.stage == -1] + stage:
        if inst.keyword == "ARG":
            name, _, value = inst.args.partition("=")
            values[name] = value[1:-1] if value[:1] == value[-1:] == '"' else value
    return values


def _env(stage: list[Instruction]) -> dict[str, str]:
    values: dict[str, str] = {}
    for inst in stage:
        if inst.keyword == "ENV":
            for item in shlex.split(inst.args):
                name, _, value = item.partition("=")
                values[name] = value
    return values


def _makefile_variable(name: str) -> str:
    match = re.search(rf"^{name}\s*\??=\s*(\S+)\s*$", (ROOT / "Makefile").read_text(), re.M)
    assert match, f"no {name} in the Makefile"
    return match.group(1)


# ------------------------------------------------------------------------ the Dockerfile


def test_the_parser_reads_stages_and_continuations() -> None:
    parsed = _instructions(
        "# c\nARG A=1\nFROM x AS b\nRUN a \\\n    # inner\n    && b\nFROM y\nUSER 1\n"
    )
    assert [(i.keyword, i.args, i.stage) for i in parsed] == [
        ("ARG", "A=1", -1),
        ("FROM", "x AS b", 0),
        ("RUN", "a && b", 0),
        ("FROM", "y", 1),
        ("USER", "1", 1),
    ]


def test_the_image_runs_as_a_non_root_user_from_before_the_entry_point() -> None:
    keywords = [i.keyword for i in RUNTIME]
    user = _one("USER")
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")
    assert "RUN" not in keywords[keywords.index("USER") :], "a RUN after USER runs unprivileged"
    name, _, group = user.args.partition(":")
    assert name not in ("root", "0", "") and group not in ("root", "0")
    assert re.search(rf"useradd\b.*--uid {name}\b", " ".join(i.args for i in RUNTIME))


def test_the_entry_point_serves_on_all_interfaces_through_the_token_check() -> None:
    assert json.loads(_one("ENTRYPOINT").args) == [
        "tini",
        "--",
        "python",
        "-m",
        "rlserve.container",
    ]
    args = container.serve_arguments([], {"RLSERVE_TOKEN": "s3cret", "RLSERVE_PORT": "8000"})
    assert args[:7] == ["serve", "--host", "0.0.0.0", "--port", "8000", "--token", "s3cret"]
    assert _one("EXPOSE").args == _env(RUNTIME)["RLSERVE_PORT"] == "8000"
    assert _one("STOPSIGNAL").args == "SIGINT"  # rlserve serve stops cleanly on Ctrl-C


def test_the_runtime_environment_keeps_ray_quiet_and_writable() -> None:
    env = _env(RUNTIME)
    assert env["RAY_USAGE_STATS_ENABLED"] == "0"
    assert env["RAY_TMPDIR"] == "/tmp"
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert any(
        i.keyword == "COPY" and i.args.split()[:2] == ["--from=build", "/opt/venv"] for i in RUNTIME
    )


def test_the_python_version_is_one_the_project_supports() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    match = re.search(r'^requires-python = ">=(\d+)\.(\d+)"', pyproject, re.M)
    assert match
    major, minor = (int(p) for p in _args(BUILD)["PYTHON_VERSION"].split("."))
    assert (major, minor) >= (int(match.group(1)), int(match.group(2)))
    assert all(
        i.args.startswith("python:${PYTHON_VERSION}-") for i in DOCKERFILE if i.keyword == "FROM"
    )


def test_the_torch_pin_is_the_makefiles() -> None:
    assert _args(BUILD)["TORCH_SPEC"] == _makefile_variable("TORCH_SPEC")
    assert _args(BUILD)["VARIANT"] == _args(RUNTIME)["VARIANT"] == "cpu"


def test_onnxruntime_gpu_takes_the_onnxruntime_range_of_pyproject() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    match = re.search(r'^\s*"onnxruntime([<>=!~][^"]*)",', pyproject, re.M)
    assert match
    spec = _args(BUILD)["ONNXRUNTIME_GPU_SPEC"]
    assert re.fullmatch(r"onnxruntime-gpu(\[[a-z,]+\])?" + re.escape(match.group(1)), spec)


def _copied_sources(stage: list[Instruction]) -> set[str]:
    return {
        source
        for i in stage
        if i.keyword == "COPY" and not i.args.startswith("--from")
        for source in i.args.split()[:-1]
    }


def test_every_package_is_copied_into_the_build() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"^packages = \[(.*?)\]", pyproject, re.S | re.M)
    assert block
    top_levels = {name.split(".")[0] for name in re.findall(r'"([^"]+)"', block.group(1))}
    assert top_levels | {"pyproject.toml", "README.md", "docker/install.sh"} == _copied_sources(
        BUILD
    )
    assert any(i.keyword == "RUN" and "docker/install.sh" in i.args for i in BUILD)


# ------------------------------------------------------------------------ docker/install.sh

FAKE_PYTHON = """#!/bin/sh
# Stands in for the virtualenv's python: logs each call, reads a here-document if given one.
printf '%s\\037' "$@" >> "$FAKE_LOG"
printf '\\n' >> "$FAKE_LOG"
if [ "${1:-}" = "-" ]; then cat > /dev/null; fi
"""


def _install_commands(tmp_path: Path, **overrides: str) -> tuple[int, str, list[list[str]]]:
    """Run docker/install.sh with the Dockerfile's ARG defaults and a stand-in python."""
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    log = tmp_path / "calls.log"
    log.write_text("")
    env = {
        "PATH": os.environ["PATH"],
        **{k: _args(BUILD)[k] for k in ("VARIANT", "TORCH_SPEC", "TORCH_INDEX_URL")},
        "ONNXRUNTIME_GPU_SPEC": _args(BUILD)["ONNXRUNTIME_GPU_SPEC"],
        "PYTHON": str(fake),
        "FAKE_LOG": str(log),
        **overrides,
    }
    out = subprocess.run(
        ["sh", str(ROOT / "docker" / "install.sh")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    calls = [line.split("\x1f")[:-1] for line in log.read_text().splitlines()]
    return out.returncode, out.stderr, calls


def _pip_steps(
    calls: list[list[str]], dropped: tuple[str, ...] = ("--quiet",)
) -> tuple[list[list[str]], list[str | None]]:
    """The pip commands (``dropped`` flags left out) and the index each one names."""
    steps: list[list[str]] = []
    indexes: list[str | None] = []
    for call in calls:
        if call[:2] != ["-m", "pip"]:
            continue
        args = [a for a in call[2:] if a not in dropped]
        index = None
        if "--index-url" in args:
            at = args.index("--index-url")
            index = args[at + 1]
            del args[at : at + 2]
        steps.append(args)
        indexes.append(index)
    return steps, indexes


def _makefile_steps(tmp_path: Path) -> list[list[str]]:
    """The pip commands of the README's set-up, as `make -n` prints them."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    venv = tmp_path / "venv"
    out = subprocess.run(
        ["make", "-n", f"VENV={venv}", f"{venv}/.installed"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    calls = [
        shlex.split(line)[1:]
        for line in out.stdout.splitlines()
        if line.startswith(f"{venv}/bin/python -m pip ")
    ]
    steps, _ = _pip_steps(calls, dropped=("--quiet", "-e"))  # the image needs no source tree
    # The workstation installs the `bench` extra (aiohttp, the load generator's client); a
    # serving image installs the core only, so a replica never carries it.
    assert ["install", ".[bench]"] in steps
    return [["install", "."] if step == ["install", ".[bench]"] else step for step in steps]


def test_the_default_install_mirrors_the_makefile_with_cpu_torch(tmp_path: Path) -> None:
    make_steps = _makefile_steps(tmp_path)
    assert make_steps == [
        ["install", "--upgrade", "pip"],
        ["install", _makefile_variable("TORCH_SPEC")],
        ["install", "."],
    ]
    code, stderr, calls = _install_commands(tmp_path)
    assert code == 0, stderr
    steps, indexes = _pip_steps(calls)
    assert steps == make_steps
    assert indexes == [None, CPU_TORCH_INDEX, None]  # CPU-only torch wheels, the rest as usual
    assert calls[-1] == ["-", "cpu"]  # the build-time check that the builds are the right ones


def test_the_cuda_install_swaps_in_onnxruntime_gpu(tmp_path: Path) -> None:
    code, stderr, calls = _install_commands(tmp_path, VARIANT="cuda")
    assert code == 0, stderr
    steps, indexes = _pip_steps(calls)
    assert steps == [
        *_makefile_steps(tmp_path),
        ["uninstall", "--yes", "onnxruntime"],
        ["install", _args(BUILD)["ONNXRUNTIME_GPU_SPEC"]],
    ]
    assert indexes == [None] * 5  # the ordinary index: its Linux torch wheels are CUDA builds
    assert calls[-1] == ["-", "cuda"]


def test_a_torch_index_can_be_chosen_and_a_wrong_variant_is_refused(tmp_path: Path) -> None:
    code, _, calls = _install_commands(tmp_path, TORCH_INDEX_URL="https://mirror.example/simple")
    assert code == 0
    assert _pip_steps(calls)[1][1] == "https://mirror.example/simple"
    code, stderr, calls = _install_commands(tmp_path, VARIANT="gpu")
    assert code == 2
    assert "VARIANT must be cpu or cuda" in stderr
    assert calls == []


@pytest.mark.integration
def test_the_build_time_check_passes_on_this_cpu_set_up() -> None:
    """The install script's closing check, run with this virtualenv's (CPU) torch."""
    script = (ROOT / "docker" / "install.sh").read_text()
    check = script.split("<<'PY'\n", 1)[1].split("\nPY\n", 1)[0]
    for variant, ok in (("cpu", True), ("cuda", False)):
        out = subprocess.run(
            [sys.executable, "-", variant],
            input=check,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert (out.returncode == 0) is ok, out.stderr


# ------------------------------------------------------------------------ HEALTHCHECK


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture()
def health_server() -> Iterator[tuple[int, type[_Health]]]:
    class Handler(_Health):
        status = 200

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], Handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _healthcheck(port: int) -> int:
    inst = _one("HEALTHCHECK")
    assert "--start-period=" in inst.args
    command = json.loads(inst.args.split(" CMD ", 1)[1])
    assert command[0] == "python"
    env = {**os.environ, "RLSERVE_PORT": str(port)}
    out = subprocess.run(
        [sys.executable, *command[1:]], capture_output=True, env=env, timeout=30, check=False
    )
    return out.returncode


def test_the_healthcheck_asks_healthz_and_fails_on_errors(
    health_server: tuple[int, type[_Health]],
) -> None:
    port, handler = health_server
    assert "/healthz" in _one("HEALTHCHECK").args
    assert _healthcheck(port) == 0
    handler.status = 503
    assert _healthcheck(port) != 0


def test_the_healthcheck_fails_when_nothing_listens() -> None:
    from rlserve.jobs.service import free_port

    assert _healthcheck(free_port()) != 0


# ------------------------------------------------------------------------ the entry point


def test_the_entry_point_needs_a_token() -> None:
    for environ in ({}, {"RLSERVE_TOKEN": "  "}):
        with pytest.raises(ValueError, match="RLSERVE_TOKEN is not set"):
            container.serve_arguments(["/a"], environ)
    with pytest.raises(ValueError, match="RLSERVE_PORT"):
        container.serve_arguments(["/a"], {"RLSERVE_TOKEN": "t", "RLSERVE_PORT": "http"})


def test_the_entry_point_serves_the_default_mount_unless_given_artifacts() -> None:
    env = {"RLSERVE_TOKEN": "t"}
    tail = ["--port", "8000", "--token", "t"]
    assert container.serve_arguments([], env)[3:] == [*tail, "/artifacts/policy"]
    assert container.serve_arguments(["--num-gpus", "1"], env)[3:] == [
        *tail,
        "/artifacts/policy",
        "--num-gpus",
        "1",
    ]
    assert container.serve_arguments(["/a", "/b", "--name", "x"], env)[3:] == [
        *tail,
        "/a",
        "/b",
        "--name",
        "x",
    ]


def test_main_hands_the_token_to_the_cli_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    import rlserve.cli

    seen: list[list[str]] = []

    def fake_app(*, args: list[str], prog_name: str) -> None:
        seen.append(args)
        raise SystemExit(0)

    monkeypatch.setattr(rlserve.cli, "app", fake_app)
    monkeypatch.setenv("RLSERVE_TOKEN", "s3cret")
    monkeypatch.setenv("RLSERVE_PORT", "9001")
    assert container.main(["/m"]) == 0
    assert seen == [
        ["serve", "--host", "0.0.0.0", "--port", "9001", "--token", "s3cret", "/m"],
    ]


@pytest.mark.integration
def test_the_entry_point_module_refuses_to_start_without_a_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RLSERVE_TOKEN"}
    out = subprocess.run(
        [sys.executable, "-m", "rlserve.container"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert out.stderr.startswith("error: RLSERVE_TOKEN is not set")


@pytest.mark.integration
def test_the_entry_point_module_reaches_rlserve_serve(tmp_path: Path) -> None:
    """With a token, the real CLI runs: here it refuses a missing artifact, naming it."""
    out = subprocess.run(
        [sys.executable, "-m", "rlserve.container", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        env={**os.environ, "RLSERVE_TOKEN": "s3cret", "RLSERVE_PORT": "8000"},
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert out.stderr.startswith("error: ")
    assert "missing" in out.stderr
    assert "Traceback" not in out.stderr


# ------------------------------------------------------------------------ .dockerignore


def _dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """(exclude?, regex) per rule, with Docker's glob syntax (``**`` spans directories)."""
    rules = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                regex, i = regex + pattern[i : end + 1], end + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((not negated, re.compile(regex)))
    return rules


def _excluded(path: str) -> bool:
    """Docker's rule: the last rule matching the path or one of its parent directories wins."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    verdict = False
    for exclude, regex in _dockerignore_rules():
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            verdict = exclude
    return verdict


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".venv-bench/bin/python",
        ".git/HEAD",
        "runs/demo/checkpoint_final/metadata.json",
        "artifacts/policy/model.onnx",
        "bench/results/serve_load.json",
        "tests/cli/test_app.py",
        "rlserve.egg-info/PKG-INFO",
        "training/__pycache__/algorithm.cpython-311.pyc",
        "serving/.mypy_cache/x.json",
        ".mypy_cache/3.11/x.json",
        ".env",
        "docker/notes.txt",
    ],
)
def test_dockerignore_keeps_out(path: str) -> None:
    assert _excluded(path)


def test_dockerignore_lets_in_every_copied_file() -> None:
    for source in _copied_sources(BUILD):
        target = ROOT / source
        files = [target] if target.is_file() else list(target.rglob("*"))
        assert files, f"COPY {source}: nothing there"
        for file in files:
            relative = file.relative_to(ROOT).as_posix()
            if file.is_file() and "__pycache__" not in file.parts:
                assert not _excluded(relative), f"{relative} is copied but ignored"
