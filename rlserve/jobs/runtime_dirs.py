"""The runtime directories of the services ``rlserve`` starts, and the clean-up of their leftovers.

Each service gets a private runtime directory ``/tmp/rlserve-*`` (HAProxy's config and Unix
sockets) with an ``owner`` file naming the process that made it and a ``ray-session`` file naming
the Ray session directory started for it. A process belongs to the service when its command line
points into either directory (HAProxy's ``-f``, the raylet's ``--session_dir``), when it holds a
file open in the session (every Ray worker and agent keeps its logs open there), or when its
environment carries :data:`SERVICE_DIR_VARIABLE` (Ray's processes rewrite their environment
block for their ``ray::`` titles, hence the other two). After a SIGKILL nothing runs the
clean-up, so :func:`clean_leftovers` (called by the next start) removes the directories whose
owner is gone and ends the processes still belonging to them (an orphaned HAProxy, Ray's
agents). Directories of live services are never touched. Processes are found through ``/proc``
(Linux); elsewhere the leftovers are left alone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import stat
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = [
    "RUNTIME_DIR_PREFIX",
    "SERVICE_DIR_VARIABLE",
    "clean_leftovers",
    "end_processes",
    "make_runtime_dir",
    "processes_of",
    "record_ray_session",
    "remove_runtime_dirs",
    "runtime_dirs",
]

logger = logging.getLogger(__name__)

RUNTIME_DIR_PREFIX = "rlserve-"
SERVICE_DIR_VARIABLE = "RLSERVE_SERVICE_DIR"
"""Set to the runtime directory in the environment of every process Ray starts for a service."""
_OWNER_FILE = "owner"
_SESSION_FILE = "ray-session"
_LEGACY_AGE_S = 600.0
"""A directory without an owner file (made by an older rlserve) is left alone this long."""
_made: list[Path] = []
"""The runtime directories made by this process that are still there."""


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

    Bounded: about three seconds per sweep (see :func:`end_processes`), at most three sweeps
    per directory. One sweep is not always enough: a Ray node stopped in the middle of its
    start-up may still be spawning its agents while the first sweep runs (seen as two agents
    outliving a SIGINT sent right after ``ray.init`` began), and the next sweep finds them.
    """
    while _made:
        path = _made.pop()
        for _ in range(3):
            found = processes_of(path, mine=True)
            if not found:
                break
            end_processes(found)
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
