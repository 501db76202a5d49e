"""A HAProxy backend of its own for WebSocket sessions, so that they never take HTTP's slots.

HAProxy counts an upgraded WebSocket against its server's ``maxconn`` for as long as the
session lasts. With one backend, sessions and HTTP requests would share each replica's limit:
idle-looking session slots would let HTTP past ``--max-ongoing-requests`` (and its queue), and
open sessions would starve HTTP. So for every application backend Ray writes
(``backend NAME``), this adds ``backend NAME-sessions``: the same servers, their health
``track``-ed from the primary (no second health check), ``maxconn`` sized for the sessions;
and the frontend sends a WebSocket handshake on a ``.../session`` path there.

Ray regenerates HAProxy's configuration on every change (a replica added, moved or gone) and
reloads HAProxy through rlserve's wrapper (:mod:`serving.ingress`), which pipes each version
through ``python -m serving.haproxy_sessions MAXCONN``: the session backends follow the
replicas. Standard library only: this runs as HAProxy (re)starts.
"""

from __future__ import annotations

import re
import sys

__all__ = ["SESSION_BACKEND_SUFFIX", "add_session_backends"]

SESSION_BACKEND_SUFFIX = "-sessions"
_BACKEND = re.compile(r"^backend (\S+)\s*$")
_SERVER = re.compile(r"^\s+server (\S+) (\S+) check\b(.*)$")
_USE = re.compile(r"^(\s+)use_backend (\S+) if (is_\S+)\s*$")
_SKIP = ("default_backend",)
_SESSION_ACL = "{ path_end /session } { req.hdr(upgrade) -i websocket }"


def add_session_backends(config: str, maxconn: int) -> str:
    """``config`` with a session backend per application backend (see the module docstring).

    Args:
        config: HAProxy's configuration as Ray wrote it (after rlserve's other rewrites).
        maxconn: Sessions each server takes at once (beyond them HAProxy would queue the
            handshake; the replica refuses those over its own limit with a 503 first).
    """
    servers: dict[str, list[tuple[str, str, str]]] = {}
    current: str | None = None
    for line in config.splitlines():
        header = _BACKEND.match(line)
        if header:
            name = header.group(1)
            primary = name not in _SKIP and not name.endswith(
                ("-via-ingress-request-router", SESSION_BACKEND_SUFFIX)
            )
            current = name if primary else None
            if current is not None:
                servers.setdefault(current, [])
            continue
        server = _SERVER.match(line)
        if server and current is not None:
            # A backup server (Ray's fallback: Serve's proxy actor) stays a backup here.
            backup = " backup" if re.search(r"\bbackup\b", server.group(3)) else ""
            servers[current].append((server.group(1), server.group(2), backup))
    lines = []
    for line in config.splitlines():
        use = _USE.match(line)
        if use and use.group(2) in servers:
            indent, name, acl = use.groups()
            lines.append(
                f"{indent}use_backend {name}{SESSION_BACKEND_SUFFIX} if {acl} {_SESSION_ACL}"
            )
        lines.append(line)
    for name, members in servers.items():
        lines += [
            f"backend {name}{SESSION_BACKEND_SUFFIX}",
            "    log global",
            *(
                f"    server {server} {address} track {name}/{server} maxconn {maxconn}{backup}"
                for server, address, backup in members
            ),
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    """``python -m serving.haproxy_sessions MAXCONN < config > config'``."""
    sys.stdout.write(add_session_backends(sys.stdin.read(), int(sys.argv[1])))


if __name__ == "__main__":
    main()
