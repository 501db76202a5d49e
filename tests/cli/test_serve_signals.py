"""Stop signals at every moment of ``rlserve serve``'s start-up, and the leftovers of a SIGKILL.

Each case starts a real ``rlserve serve`` (``--log-level INFO`` prints each start-up step),
sends SIGTERM or SIGINT at one moment, and checks that it exits 0 within :data:`STOP_BOUND_S`,
prints no traceback, and leaves nothing behind: no process of its tree, no listener on its
port, no runtime directory. The SIGKILL case kills a started service and checks that the next
start removes its runtime directory and ends its orphaned processes (HAProxy and Ray's, when
they outlived the kill, and a stand-in that surely did), while a live service's directory stays.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from rlserve.jobs.runtime_dirs import clean_leftovers, processes_of
from rlserve.jobs.service import free_port
from rlserve.jobs.stop_signals import StopSignals

STOP_BOUND_S = 20.0
"""How long after the signal the command may take to exit, everything it started included."""
LOGS = ("--log-level", "INFO")  # a line per start-up step: "checking the artifacts", ...


@dataclass
class Served:
    """A running ``rlserve serve`` and what it has printed so far."""

    proc: subprocess.Popen[str]
    port: int
    lines: list[str] = field(default_factory=list)
    tree: set[psutil.Process] = field(default_factory=set)
    reader: threading.Thread | None = None

    def wait_for(self, text: str, timeout: float = 120.0) -> None:
        """Until a printed line contains ``text``; the tree seen meanwhile is kept."""
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert self.proc.poll() is None, "".join(self.lines)[-3000:]
            assert time.monotonic() < deadline, f"no {text!r} in {''.join(self.lines)[-3000:]}"
            self.snapshot()
            time.sleep(0.02)
        self.snapshot()

    def snapshot(self) -> None:
        """Remember every process now in the service's tree."""
        with contextlib.suppress(psutil.NoSuchProcess):
            self.tree.update(psutil.Process(self.proc.pid).children(recursive=True))

    def output(self) -> str:
        """Everything printed so far (all of it once the process has exited)."""
        if self.proc.poll() is not None and self.reader is not None:
            self.reader.join(timeout=10)
        return "".join(self.lines)


def _owner_file(path: Path, pid: int) -> None:
    started = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    (path / "owner").write_text(json.dumps({"pid": pid, "started": int(started)}))


def _sleeper(runtime_dir: Path) -> subprocess.Popen[bytes]:
    """A process whose command line points into ``runtime_dir``, as HAProxy's ``-f`` does."""
    code = "import time; time.sleep(300)"
    return subprocess.Popen([sys.executable, "-c", code, f"{runtime_dir}/haproxy.cfg"])


def _spawn(artifact: Path, cwd: Path) -> Served:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlserve", "serve", str(artifact), "--port", str(port), *LOGS],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=clean,
        cwd=cwd,
    )
    served = Served(proc, port)

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            served.lines.append(line)

        proc.stdout.close()

    served.reader = threading.Thread(target=read, daemon=True)
    served.reader.start()
    return served


def _runtime_dirs_of(pid: int) -> list[Path]:
    found = []
    for path in Path("/tmp").glob("rlserve-*"):
        try:
            if json.loads((path / "owner").read_text())["pid"] == pid:
                found.append(path)
        except (OSError, ValueError, KeyError):
            continue
    return found


def _stop(served: Served, signum: int) -> float:
    """Send ``signum``; wait for the exit (watching the tree meanwhile); return the seconds."""
    served.snapshot()
    dirs = _runtime_dirs_of(served.proc.pid)
    served.proc.send_signal(signum)
    sent = time.monotonic()
    while served.proc.poll() is None and time.monotonic() - sent < STOP_BOUND_S + 30:
        served.snapshot()
        time.sleep(0.05)
    took = time.monotonic() - sent
    if served.proc.poll() is None:
        served.proc.kill()
        pytest.fail(f"still running {took:.0f} s after the signal: {served.output()[-3000:]}")
    _, alive = psutil.wait_procs(list(served.tree), timeout=5)
    assert not alive, [(p.pid, p.name()) for p in alive]
    assert not [d for d in dirs if d.exists()], dirs
    assert not any(processes_of(d) for d in dirs)
    with socket.socket() as sock:  # the HTTP port is free again
        sock.bind(("127.0.0.1", served.port))
    return took


@pytest.fixture()
def stop_figures() -> Iterator[list[str]]:
    figures: list[str] = []
    yield figures
    print("\n".join(figures))


MOMENTS = [
    pytest.param(None, 0.0, signal.SIGTERM, id="right-after-spawn"),
    pytest.param("checking the artifacts", 0.0, signal.SIGTERM, id="before-ray"),
    pytest.param("starting Ray", 0.0, signal.SIGTERM, id="as-ray-starts"),
    pytest.param("starting Ray", 3.0, signal.SIGTERM, id="during-ray-init"),
    pytest.param("deploying", 1.0, signal.SIGTERM, id="during-deploy"),
]


@pytest.mark.integration
@pytest.mark.reliability
@pytest.mark.parametrize(("after", "delay_s", "signum"), MOMENTS)
def test_a_stop_signal_during_start_up_stops_everything_it_started(
    cartpole_artifact: Path,
    tmp_path: Path,
    after: str | None,
    delay_s: float,
    signum: int,
    stop_figures: list[str],
) -> None:
    served = _spawn(cartpole_artifact, tmp_path)
    if after is not None:
        served.wait_for(after)
    time.sleep(delay_s)
    took = _stop(served, signum)
    out = served.output()
    stop_figures.append(f"{after} +{delay_s} s, signal {signum}: exit {served.proc.returncode}")
    stop_figures.append(f"  stopped in {took:.2f} s, {len(served.tree)} processes ended")
    assert took < STOP_BOUND_S, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    assert "serving " not in out  # it never came up after the signal
    if after is None:  # before the command has taken the signals: Python's own ending
        assert served.proc.returncode in (0, -signum), out[-3000:]
    else:
        assert served.proc.returncode == 0, out[-3000:]
        assert "stopping" in out


@pytest.mark.integration
@pytest.mark.reliability
def test_the_next_start_removes_what_a_killed_service_left_and_spares_a_live_one(
    cartpole_artifact: Path, tmp_path: Path
) -> None:
    # A live service's directory (owned by this test process) with a process pointing into it.
    live = Path(f"/tmp/rlserve-livetest-{os.getpid()}")
    live.mkdir()
    _owner_file(live, os.getpid())
    live_helper = _sleeper(live)
    stand_in_proc: subprocess.Popen[bytes] | None = None
    try:
        killed = _spawn(cartpole_artifact, tmp_path)
        killed.wait_for("serving ")
        (left,) = _runtime_dirs_of(killed.proc.pid)
        tree = [p for p in killed.tree if p.is_running()]
        haproxy = [p for p in tree if p.name() == "haproxy"]
        assert haproxy, [p.name() for p in tree]
        # A stand-in orphan that surely outlives the kill: whether HAProxy and Ray's agents do
        # is a race (Ray's workers end their children when they notice the raylet is gone).
        stand_in_proc = _sleeper(left)
        stand_in = psutil.Process(stand_in_proc.pid)
        killed.proc.kill()
        killed.proc.wait(timeout=10)
        killed.output()  # its output pipe read to the end and closed
        time.sleep(1.0)
        orphans = [p for p in [*tree, stand_in] if p.is_running()]
        assert stand_in in orphans  # nothing cleans up after a SIGKILL...

        after = _spawn(cartpole_artifact, tmp_path)
        after.wait_for("starting Ray")  # ...until the next start, which cleans up first
        assert not left.exists()
        _, alive = psutil.wait_procs(orphans, timeout=5)
        assert not alive, [(p.pid, p.name()) for p in alive]
        assert f"removed leftovers of stopped services: {left}" in after.output()
        assert live.is_dir() and live_helper.poll() is None  # the live service is untouched
        took = _stop(after, signal.SIGINT)  # one more start-up moment: right after clean-up
        assert took < STOP_BOUND_S and after.proc.returncode == 0, after.output()[-3000:]
        survivors = sum(p in orphans for p in haproxy)
        print(f"\nSIGKILL leftovers: {left}, {len(orphans)} processes, {survivors} HAProxy")
    finally:
        for helper in (live_helper, stand_in_proc):
            if helper is not None:
                helper.kill()
                helper.wait()
        (live / "owner").unlink()
        live.rmdir()


def test_clean_leftovers_ends_dead_services_only(tmp_path: Path) -> None:
    """Dead owner: its process is ended, its directory removed; live and young ones stay."""
    dead, live, young = (tmp_path / f"rlserve-{name}" for name in ("dead", "live", "young"))
    gone = subprocess.Popen(["true"])
    gone_stat = Path(f"/proc/{gone.pid}/stat")
    started = int(gone_stat.read_text().rsplit(")", 1)[1].split()[19]) if gone_stat.exists() else 0
    gone.wait()
    for path in (dead, live, young):
        path.mkdir()
    (dead / "owner").write_text(json.dumps({"pid": gone.pid, "started": started}))
    _owner_file(live, os.getpid())
    orphan = _sleeper(dead)
    spared = _sleeper(live)
    try:
        assert processes_of(dead) == [orphan.pid]
        assert clean_leftovers(tmp_path) == [dead]
        assert orphan.wait(timeout=5) == -signal.SIGTERM
        assert live.is_dir() and young.is_dir() and spared.poll() is None
    finally:
        for proc in (orphan, spared):
            proc.kill()
            proc.wait()


def test_stop_signals_raise_once_until_the_stop_begins() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with StopSignals() as guard:
        assert StopSignals.active() is guard
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1.0)  # the handler runs here
        assert guard.received == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            guard.check()  # a swallowed interrupt comes back at the next step
        with guard.stopping():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)  # noted, not raised: the clean-up runs to its end
            guard.check()
    assert StopSignals.active() is None
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_stop_raised_where_python_cannot_propagate_it_prints_no_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reported: list[BaseException] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda args: reported.append(args.exc_value))
    hook = sys.unraisablehook

    def unraisable(error: BaseException) -> None:  # as Python reports a finaliser's error
        sys.unraisablehook(SimpleNamespace(exc_value=error))

    with StopSignals() as guard:
        unraisable(KeyboardInterrupt())  # no stop signal yet: reported as usual
        guard.received = signal.SIGTERM
        unraisable(KeyboardInterrupt())  # the stop is pending (check() raises it): silent
        unraisable(ValueError("a real problem"))  # anything else is still reported
        with pytest.raises(KeyboardInterrupt):
            guard.check()
    assert [type(e) for e in reported] == [KeyboardInterrupt, ValueError]
    assert sys.unraisablehook is hook


def test_the_cli_takes_back_stop_signals_its_parent_ignored_or_blocked() -> None:
    def ignore_and_block() -> None:  # as a shell's background job, or a thread that blocks them
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})

    code = (
        "import os, signal, time\n"
        "from rlserve.jobs.stop_signals import take_stop_signals_back\n"
        "assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN\n"
        "take_stop_signals_back()\n"
        "try:\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(5)\n"
        "except KeyboardInterrupt:\n"
        "    print('stopped')\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        preexec_fn=ignore_and_block,  # single-threaded enough for a test
        check=False,
    )
    assert run.stdout.strip() == "stopped", run.stderr


@pytest.mark.integration
def test_a_stop_signal_in_ray_inits_last_steps_meets_pythons_handler_not_abseils() -> None:
    """Once the driver's core worker is up (ray.init's last steps), a SIGTERM still stops cleanly.

    The signal is sent inside ``ray_leaves_sigterm_alone``, after ``ray.init`` but before the
    handlers are taken back: the state a signal meets in ``ray.init``'s tail. With absl's
    failure-signal handler in place it printed a stack dump and the process ended with SIGABRT.
    """
    code = (
        "import os, signal, time\n"
        "import ray\n"
        "from rlserve.jobs.stop_signals import StopSignals\n"
        "with StopSignals() as guard:\n"
        "    try:\n"
        "        with guard.ray_leaves_sigterm_alone():\n"
        "            ray.init(address='local', num_cpus=1, include_dashboard=False)\n"
        "            os.kill(os.getpid(), signal.SIGTERM)\n"
        "            time.sleep(2)\n"
        "    except KeyboardInterrupt:\n"
        "        print('stopped', flush=True)\n"
        "    with guard.stopping():\n"
        "        ray.shutdown()\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    run = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean,
        check=False,
    )
    assert "SIGTERM received" not in run.stderr, run.stderr[-3000:]
    assert run.returncode == 0 and run.stdout.strip() == "stopped", run.stderr[-3000:]
