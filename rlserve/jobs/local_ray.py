"""A Ray instance that ``rlserve`` starts on this machine: on loopback, stoppable, and cleaned up.

**Loopback.** Ray binds its GCS, raylet, object manager and every worker's gRPC server to the
node IP, and on Linux it picks the machine's network address for that even when ``ray.init`` is
asked for ``_node_ip_address="127.0.0.1"`` (Ray swaps loopback for a "reachable" address). A Ray
started by ``rlserve`` serves no other machine, so none of those ports belongs on the network.
Ray's switch for single-machine, loopback-only operation is the environment variable
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (named for the platforms where it is the default). Ray
reads it when ``ray`` is first imported, so :func:`keep_ray_on_loopback` must run before that;
the ``rlserve`` CLI calls it first thing. Library users who start a local Ray themselves can
call it before importing ``ray`` (or export the variable). A variable already set is respected.

**Stop signals.** :class:`StopSignals` turns SIGINT and SIGTERM into ``KeyboardInterrupt`` at any
moment of a service's life, start-up included, and keeps Ray's drivers from replacing that
handler (``ray.init`` installs ``sys.exit`` on SIGTERM, and its node object a drain-then-exit(1)
handler, which left a start-up half done).

**Leftovers.** Each service gets a private runtime directory ``/tmp/rlserve-*`` (HAProxy's
config and Unix sockets) with an ``owner`` file naming the process that made it and a
``ray-session`` file naming the Ray session directory started for it. A process belongs to the
service when its command line points into either directory (HAProxy's ``-f``, the raylet's
``--session_dir``), when it holds a file open in the session (every Ray worker and agent keeps
its logs open there), or when its environment carries :data:`SERVICE_DIR_VARIABLE` (Ray's
processes rewrite their environment block for their ``ray::`` titles, hence the other two).
After a SIGKILL nothing runs the clean-up, so :func:`clean_leftovers` (called by the next start)
removes the directories whose owner is gone and ends the processes still belonging to them (an
orphaned HAProxy, Ray's agents). Directories of live services are never touched. Processes are
found through ``/proc`` (Linux); elsewhere the leftovers are left alone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import stat
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = [
    "LOOPBACK_ENVIRONMENT",
    "RUNTIME_DIR_PREFIX",
    "SERVICE_DIR_VARIABLE",
    "StopSignals",
    "clean_leftovers",
    "end_processes",
    "keep_ray_on_loopback",
    "make_runtime_dir",
    "processes_of",
    "record_ray_session",
    "remove_runtime_dirs",
    "runtime_dirs",
]

logger = logging.getLogger(__name__)

LOOPBACK_ENVIRONMENT: dict[str, str] = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # node IP = 127.0.0.1 for every Ray listener
    "RAY_USAGE_STATS_ENABLED": "0",  # no usage-stats upload attempts from a local instance
}
RUNTIME_DIR_PREFIX = "rlserve-"
SERVICE_DIR_VARIABLE = "RLSERVE_SERVICE_DIR"
"""Set to the runtime directory in the environment of every process Ray starts for a service."""
_OWNER_FILE = "owner"
_SESSION_FILE = "ray-session"
_LEGACY_AGE_S = 600.0
"""A directory without an owner file (made by an older rlserve) is left alone this long."""
_made: list[Path] = []
"""The runtime directories made by this process that are still there."""


def keep_ray_on_loopback() -> bool:
    """Set :data:`LOOPBACK_ENVIRONMENT` (where unset) for a Ray started by this process.

    Returns:
        Whether it can still take effect: ``False`` when ``ray`` was imported already (Ray has
        read its settings; a Ray started now may listen on the network address).
    """
    for key, value in LOOPBACK_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    return "ray" not in sys.modules


class StopSignals:
    """SIGINT and SIGTERM raise ``KeyboardInterrupt`` in the main thread, from start-up to stop.

    Use it as a context manager around start, serve and stop, installed before anything starts.
    A signal raises at once wherever the main thread is; in case code it interrupts swallows
    the exception, :meth:`check` raises again at the next step of the start-up. Once
    :meth:`stopping` is entered, further signals are only noted, so that the clean-up itself is
    not interrupted (it is bounded; see :func:`end_processes`).
    """

    _active: StopSignals | None = None

    def __init__(self) -> None:
        self.received: int | None = None
        """The first stop signal's number, or ``None``."""
        self._stopping = False
        self._previous: dict[int, object] = {}

    @classmethod
    def active(cls) -> StopSignals | None:
        """The guard installed in this process, if any."""
        return cls._active

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
        if not self._stopping:
            raise KeyboardInterrupt

    def check(self) -> None:
        """Raise ``KeyboardInterrupt`` if a stop signal came and the stop has not begun."""
        if self.received is not None and not self._stopping:
            raise KeyboardInterrupt

    def reinstall(self) -> None:
        """Take SIGINT and SIGTERM back from code that replaced the handler.

        Also below Python: Ray's core worker puts absl's failure-signal handler in front of
        Python's at the C level (still reporting ours to ``signal.getsignal``). That one prints
        a stack dump for a plain SIGTERM and made the process end with SIGABRT after a clean
        stop; ``signal.signal`` puts Python's own handler back in its place.
        """
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._handle)

    @contextlib.contextmanager
    def stopping(self) -> Iterator[None]:
        """While inside, signals are noted but raise nothing (the clean-up runs to its end)."""
        self._stopping = True
        yield

    @contextlib.contextmanager
    def ray_leaves_sigterm_alone(self) -> Iterator[None]:
        """Keep ``ray.init`` from installing its own SIGTERM handlers while it runs.

        Ray installs them through ``ray._private.utils.set_sigterm_handler`` (a private
        function: if a Ray version renames it, :meth:`reinstall` after ``ray.init`` still
        takes the handler back, and only a signal inside ``ray.init`` goes to Ray's handler).
        """
        try:
            import ray._private.utils as ray_utils
        except ImportError:  # pragma: no cover - another Ray layout
            yield
            return
        original = getattr(ray_utils, "set_sigterm_handler", None)
        if original is not None:
            ray_utils.set_sigterm_handler = lambda handler: None
        try:
            yield
        finally:
            if original is not None:
                ray_utils.set_sigterm_handler = original
            self.reinstall()

    def __enter__(self) -> StopSignals:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        StopSignals._active = self
        return self

    def __exit__(self, *exc: object) -> None:
        StopSignals._active = None
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)  # type: ignore[arg-type]


def _start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), or ``None`` when there is no such process."""
    try:
        line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    fields = line.rsplit(")", 1)[-1].split()
    return int(fields[19])  # field 22 of the whole line


def make_runtime_dir() -> Path:
    """A private runtime directory for a service, marked with this process as its owner.

    The directory's path is also put in :data:`SERVICE_DIR_VARIABLE`, so every process started
    from here on (Ray's and HAProxy) carries it and can be found after a SIGKILL.
    """
    # Short path: it holds HAProxy's Unix sockets (107 bytes at most).
    path = Path(tempfile.mkdtemp(prefix=RUNTIME_DIR_PREFIX, dir="/tmp"))
    owner = {"pid": os.getpid(), "started": _start_time(os.getpid())}
    partial = path / f".{_OWNER_FILE}"
    partial.write_text(json.dumps(owner))
    partial.replace(path / _OWNER_FILE)  # a reader sees the whole file or none
    _made.append(path)
    os.environ[SERVICE_DIR_VARIABLE] = str(path)
    return path


def runtime_dirs() -> list[Path]:
    """The runtime directories this process made and has not removed yet."""
    return list(_made)


def remove_runtime_dirs() -> None:
    """End the processes still carrying this process's runtime directories; remove them.

    Bounded: about three seconds per directory at most (see :func:`end_processes`).
    """
    while _made:
        path = _made.pop()
        end_processes(processes_of(path, mine=True))
        shutil.rmtree(path, ignore_errors=True)
    os.environ.pop(SERVICE_DIR_VARIABLE, None)


def _owner_alive(directory: Path) -> bool | None:
    """Whether the process that made ``directory`` still runs; ``None`` without an owner file."""
    try:
        owner = json.loads((directory / _OWNER_FILE).read_text())
        pid, started = int(owner["pid"]), owner.get("started")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return True  # unreadable: treat as someone else's, live
    now = _start_time(pid)
    # The same pid with another start time is a new process that reused the number.
    return now is not None and (started is None or now == started)


def record_ray_session() -> None:
    """Note the session directory of the Ray just started here in the newest runtime directory.

    Read from Ray's node object (``ray._private.worker._global_node``, private: without it only
    the processes that name the runtime directory are found after a SIGKILL).
    """
    try:
        from ray._private import worker

        node: Any = worker._global_node
        session = str(node.get_session_dir_path())
    except Exception:  # another Ray layout, or no node started here
        return
    if _made:
        (_made[-1] / _SESSION_FILE).write_text(session)


def _sessions(directory: Path, mine: bool) -> list[str]:
    """The Ray session directories of ``directory``'s service."""
    sessions = []
    with contextlib.suppress(OSError):
        sessions.append((directory / _SESSION_FILE).read_text().strip())
    if mine:  # a ray.init cut short has not recorded it: Ray names the session after our pid
        root = Path(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()) / "ray"
        with contextlib.suppress(OSError):
            made = directory.stat().st_mtime - 1.0
            sessions += [
                str(path)
                for path in root.glob(f"session_*_{os.getpid()}")
                if not path.is_symlink() and path.stat().st_mtime >= made
            ]
    return sorted({session for session in sessions if session})


def processes_of(directory: Path, mine: bool = False) -> list[int]:
    """Other processes that belong to the service of runtime directory ``directory``.

    Args:
        directory: The runtime directory.
        mine: Whether this process owns it (then a session Ray has not recorded yet counts).
    """
    marker = f"{SERVICE_DIR_VARIABLE}={directory}".encode()
    places = [str(directory) + "/", *(session + "/" for session in _sessions(directory, mine))]
    needles = [place.encode() for place in places]
    found = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone, or another user's
            continue
        named = any(needle in cmdline for needle in needles) or marker in environ.split(b"\0")
        if named or (len(places) > 1 and _holds_open(entry, places[1:])):
            found.append(int(entry.name))
    return found


def _holds_open(process: Path, places: list[str]) -> bool:
    """Whether ``process`` has a file open under one of ``places``."""
    try:
        for fd in (process / "fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd).startswith(tuple(places)):
                    return True
    except OSError:
        pass
    return False


def end_processes(pids: list[int], grace_s: float = 2.0) -> list[int]:
    """SIGTERM ``pids``, SIGKILL those still running after ``grace_s``; return the killed ones.

    Bounded: at most ``grace_s`` plus a second for SIGKILL to take effect.
    """
    alive: dict[int, int | None] = {pid: _start_time(pid) for pid in pids}

    def _running(pid: int) -> bool:
        started = _start_time(pid)
        if started is None or started != alive[pid]:
            return False
        with contextlib.suppress(OSError):  # a zombie has exited: only its parent can reap it
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
            return state != "Z"
        return False

    def _send(pid: int, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)

    for pid in pids:
        _send(pid, signal.SIGTERM)
    killed: list[int] = []
    for grace, signum in ((grace_s, signal.SIGKILL), (1.0, None)):
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_running(pid) for pid in alive):
            time.sleep(0.05)
        if signum is not None:
            for pid in [pid for pid in alive if _running(pid)]:
                _send(pid, signum)
                killed.append(pid)
    return killed


def clean_leftovers(tmp: Path = Path("/tmp")) -> list[Path]:
    """Remove the runtime directories of services that died without cleaning up (SIGKILL).

    A directory whose owner still runs is left alone. For a dead owner, the processes still
    pointing into its directory are ended first (SIGTERM, then SIGKILL after 2 s). A directory
    without an owner file (an older rlserve) goes only once nothing points into it and it is
    older than ten minutes.

    Returns:
        The directories removed.
    """
    removed = []
    for directory in sorted(tmp.glob(f"{RUNTIME_DIR_PREFIX}*")):
        try:
            info = directory.lstat()
        except OSError:
            continue
        # Only real directories of this user: never follow a link someone else planted.
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            continue
        age_s = time.time() - info.st_mtime
        alive = _owner_alive(directory)
        if alive:
            continue
        pids = processes_of(directory)
        if alive is None and (pids or age_s < _LEGACY_AGE_S):
            continue
        if pids:
            killed = end_processes(pids)
            logger.info(
                "ended %d leftover processes of %s (%d killed)", len(pids), directory, len(killed)
            )
        shutil.rmtree(directory, ignore_errors=True)
        removed.append(directory)
    return removed
