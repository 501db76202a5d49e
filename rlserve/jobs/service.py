"""Starting and stopping the policy service for ``rlserve serve`` and ``rlserve demo``.

Loopback by default for every listener: Ray's own ports are bound to 127.0.0.1 (see
:mod:`rlserve.jobs.local_ray`), its dashboard is off, HAProxy's stats and metrics listeners are
moved to 127.0.0.1 (see :mod:`serving.ingress`); binding the HTTP API to another address requires a
bearer token.

When this process starts Ray itself, it also picks the ingress: HAProxy straight to the
replicas (default, ~10x Serve's Python proxy) or Serve's proxy actor, runs the replicas at
normal priority (Ray's default for workers is nice 15), and collects Ray's metrics only when a
metrics port is asked for. A Ray cluster reached with ``address`` keeps the settings its
operator chose.

Stopping: inside :class:`~rlserve.jobs.stop_signals.StopSignals` (as ``rlserve serve`` runs it),
SIGINT or SIGTERM at any moment of :func:`start_service` interrupts it, and
:func:`stop_service` then ends everything it had started: a Ray interrupted before it served
is shut down without Serve's graceful drain (nobody was served yet), and any process still
carrying the service's runtime directory afterwards (an orphaned HAProxy, Ray's agents) is
ended, SIGKILL after 2 s. Leftovers of a service that was SIGKILLed are removed by the next
start (:func:`~rlserve.jobs.runtime_dirs.clean_leftovers`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
import socket
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from formats.errors import RlserveError
from rlserve.jobs.local_ray import RayClusterError, init_ray
from rlserve.jobs.runtime_dirs import (
    clean_leftovers,
    make_runtime_dir,
    record_ray_session,
    remove_runtime_dirs,
    runtime_dirs,
)
from rlserve.jobs.stop_signals import StopSignals

__all__ = [
    "ServiceError",
    "ServiceOptions",
    "free_port",
    "is_loopback",
    "prepare_ingress",
    "serve_until_interrupted",
    "start_service",
    "stop_service",
]


logger = logging.getLogger(__name__)


class ServiceError(RlserveError, ValueError):
    """The service cannot start as asked (port in use, unsafe bind address, bad artifact)."""


if TYPE_CHECKING:
    from serving.ingress import IngressLimits
    from serving.runtime import Backend


@dataclass
class ServiceOptions:
    """How to serve a set of artifacts."""

    artifacts: dict[str, str]
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    replicas: int = 1
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    backend: str = "onnx"
    allow_torchscript: bool = False
    max_batch_size: int = 64
    batch_wait_ms: float = 2.0
    request_timeout_s: float | None = None
    max_ongoing_requests: int = 256
    max_queued_requests: int | None = None
    """Requests queued per replica before 503; ``None``: the app's default, ``-1``: unbounded."""
    max_sessions: int = 256
    session_idle_timeout_s: float = 30.0
    ingress: str = "haproxy"
    address: str | None = None
    proxy_location: str = "EveryNode"
    """Serve's HTTP proxies: one on ``EveryNode`` (behind a load balancer) or ``HeadOnly``."""
    metrics_port: int | None = None
    dashboard: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


PROXY_LOCATIONS = ("EveryNode", "HeadOnly")

_progress = {"deployed": False}
"""How far :func:`start_service` got: what :func:`stop_service` has to undo."""


def _checkpoint() -> None:
    """A step of the start-up: stop here if a stop signal came (and its exception was lost)."""
    guard = StopSignals.active()
    if guard is not None:
        guard.check()


def is_loopback(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback address (this machine only)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            raise ServiceError(f"cannot listen on {host}:{port}: {err.strerror}") from None


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free on ``host`` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def start_service(options: ServiceOptions) -> str:
    """Start Ray (if needed) and Serve, deploy the artifacts, and return the base URL.

    Raises:
        ServiceError: For a non-loopback host without a token or a port already in use.
        exporters.ArtifactError: For an artifact that fails verification.
    """
    _check_options(options)
    _check_port(options.host, options.port)
    if options.metrics_port is not None:
        _check_port("127.0.0.1", options.metrics_port)
    logger.info("checking the artifacts")
    from serving import build_app

    # Before Ray starts: build_app verifies every artifact and that it has the backend's format.
    app_args = _app_args(options)
    application = build_app(app_args)
    _checkpoint()
    import ray
    from ray import serve

    if not ray.is_initialized():
        if options.address is None:
            # HAProxy enforces the replicas' limits itself: beyond them it answers 503 at once.
            prepare_ingress(options.ingress, app_args.ingress_limits())
            os.environ.update(_serving_ray_environment(options))
        _checkpoint()
        logger.info("starting Ray" if options.address is None else "connecting to Ray")
        guard = StopSignals.active()
        try:
            with guard.ray_leaves_sigterm_alone() if guard else contextlib.nullcontext():
                init_ray(
                    options.address,
                    dashboard=options.dashboard,
                    log_to_driver=False,
                    _metrics_export_port=options.metrics_port if options.address is None else None,
                )
        except RayClusterError as err:  # an unreachable --address
            raise ServiceError(str(err)) from None
        if options.address is None:  # a cluster given by --address may autoscale
            record_ray_session()  # for the next start's clean-up, should this one be SIGKILLed
            _check_resources(options, ray.cluster_resources())  # type: ignore[no-untyped-call]
    if options.address is not None:
        # Replicas may start on nodes that cannot see this disk (and again elsewhere when a
        # node dies): they get the artifacts through Ray and verify them there.
        from serving.shipping import ship_artifacts

        shipped = ship_artifacts(app_args.policy_paths())
        application = build_app(
            app_args.model_copy(update={"artifact": None, "artifacts": shipped})
        )
    http_options: dict[str, Any] = {"host": options.host, "port": options.port}
    if options.request_timeout_s is not None:  # Serve answers 408 past it
        http_options["request_timeout_s"] = options.request_timeout_s
    _checkpoint()
    logger.info("deploying")
    serve.start(http_options=http_options, proxy_location=options.proxy_location)
    try:
        serve.run(application, name="rlserve", route_prefix="/")
    except RuntimeError as err:  # a replica failed to start: Serve's message says why
        raise ServiceError(f"the policies could not be deployed: {_deploy_failure(err)}") from None
    _progress["deployed"] = True
    _checkpoint()
    shown = "127.0.0.1" if options.host in ("0.0.0.0", "::") else options.host
    return f"http://{shown}:{options.port}"


def _check_options(options: ServiceOptions) -> None:
    """Refuse what cannot be served as asked, before anything starts."""
    if not is_loopback(options.host) and not options.token:
        raise ServiceError(
            f"--host {options.host} exposes the API beyond this machine: a --token is required"
        )
    if options.ingress not in ("haproxy", "proxy"):
        raise ServiceError(f"--ingress: expected haproxy or proxy, got {options.ingress!r}")
    if options.proxy_location not in PROXY_LOCATIONS:
        raise ServiceError(
            f"--proxy-location: expected {' or '.join(PROXY_LOCATIONS)}, "
            f"got {options.proxy_location!r}"
        )
    from serving.runtime import BACKENDS

    if options.backend not in BACKENDS:
        choices = f"{', '.join(BACKENDS[:-1])} or {BACKENDS[-1]}"
        raise ServiceError(f"--backend: expected {choices}, got {options.backend!r}")
    if options.backend == "torchscript" and not options.allow_torchscript:
        raise ServiceError(
            "--backend torchscript loads a pickle-based archive: add --allow-torchscript for "
            "artifacts you built yourself, or use --backend torch_export or onnx"
        )


def _app_args(options: ServiceOptions) -> Any:
    """The application's arguments; a bad value is one line naming its command-line option."""
    from pydantic import ValidationError

    from serving import AppArgs

    # None: the app's own default (sized from max_ongoing_requests); left out rather than
    # passed so that an AppArgs whose field takes no None still gets its default.
    queued: dict[str, Any] = {}
    if options.max_queued_requests is not None:
        queued["max_queued_requests"] = options.max_queued_requests
    try:
        return AppArgs(
            artifacts=dict(options.artifacts),
            token=options.token,
            num_replicas=options.replicas,
            num_cpus=options.num_cpus,
            num_gpus=options.num_gpus,
            backend=cast("Backend", options.backend),  # checked above
            allow_torchscript=options.allow_torchscript,
            max_batch_size=options.max_batch_size,
            max_ongoing_requests=options.max_ongoing_requests,
            **queued,
            max_sessions=options.max_sessions,
            session_idle_timeout_s=options.session_idle_timeout_s,
            # Serve's request timeout cannot apply to a session (it would end it): sessions
            # time each message against it instead.
            message_timeout_s=options.request_timeout_s,
            batch_wait_timeout_s=options.batch_wait_ms / 1000.0,
            **options.extra,
        )
    except ValidationError as err:
        first = err.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "arguments"
        flag = {
            "num_replicas": "replicas",
            "batch_wait_timeout_s": "batch-wait-ms",
            "message_timeout_s": "request-timeout-s",
        }.get(field, field)
        raise ServiceError(f"--{flag.replace('_', '-')}: {first['msg']}") from None


def _check_resources(options: ServiceOptions, available: dict[str, float]) -> None:
    """Refuse replica sizes this Ray instance can never place (Serve would wait forever)."""
    for flag, need, resource in (
        ("--num-cpus", options.num_cpus, "CPU"),
        ("--num-gpus", options.num_gpus, "GPU"),
    ):
        have = available.get(resource, 0.0)
        if need > have:
            raise ServiceError(
                f"{flag} {need:g}: a replica needs more than this machine's Ray has "
                f"({have:g} {resource}s)"
            )


def _deploy_failure(err: RuntimeError) -> str:
    """Why Serve could not deploy: the replica's own error, from the deployment's status."""
    from ray import serve

    try:
        app = serve.status().applications.get("rlserve")
        messages = [d.message for d in app.deployments.values() if d.message] if app else []
    except Exception:  # the status is extra detail; Serve's own error still stands
        messages = []
    lines = [line.strip() for text in [*messages, str(err)] for line in text.splitlines()]
    # A replica's traceback ends with "package.module.SomeError: what went wrong".
    raised = [line for line in lines if re.match(r"^[\w.]+(Error|Exception): ", line)]
    if raised:
        return raised[-1].split(": ", 1)[1][:400]  # the innermost error comes last
    return next((line for line in lines if line), type(err).__name__)[:400]


def _serving_ray_environment(options: ServiceOptions) -> dict[str, str]:
    """Settings for a Ray started here to serve ``options`` (besides the ingress)."""
    from serving.app import METRICS_SWITCH

    return {
        # Ray runs its workers at nice 15 so that batch jobs cannot starve Ray's own processes;
        # here the workers are the replicas, the service itself, so they run at normal
        # priority (at 15, any busy process on the machine takes the CPU from them first).
        "RAY_worker_niceness": "0",
        # Without a metrics port nobody could read Ray's metrics, and collecting them costs
        # tail latency (see serving.app.METRICS_SWITCH).
        METRICS_SWITCH: "0" if options.metrics_port is None else "1",
    }


def prepare_ingress(ingress: str, limits: IngressLimits | None = None) -> None:
    """Put the ingress settings into the environment of the Ray about to start here.

    Args:
        ingress: ``haproxy`` or ``proxy``.
        limits: Per-replica limits for HAProxy (``None``: its defaults, as for a config file).
    """
    from serving.ingress import apply_environment, ingress_environment

    removed = clean_leftovers()  # of services that were SIGKILLed; live ones are left alone
    if removed:
        logger.info("removed leftovers of stopped services: %s", ", ".join(map(str, removed)))
    workdir = make_runtime_dir()
    try:
        apply_environment(
            ingress_environment(
                "haproxy" if ingress == "haproxy" else "proxy", workdir, limits=limits
            )
        )
    except FileNotFoundError as err:
        raise ServiceError(str(err)) from None


def stop_service() -> None:
    """Shut Serve and the Ray instance started here down, however far the start-up got.

    Inside :class:`~rlserve.jobs.stop_signals.StopSignals`, stop signals during it are noted only.
    """
    guard = StopSignals.active()
    with guard.stopping() if guard else contextlib.nullcontext():
        if "ray" in sys.modules:  # not before: an import cut short by a signal is undone
            import ray
            from ray import serve

            # Serve's graceful shutdown drains replicas that served; one that never served
            # on a Ray started here ends with that Ray. A cluster given by --address keeps
            # running, so what was deployed there is removed through Serve.
            if ray.is_initialized() and (_progress["deployed"] or not runtime_dirs()):
                serve.shutdown()  # type: ignore[no-untyped-call]
            try:
                ray.shutdown()  # also after an interrupted ray.init: it ends what it started
            except Exception:  # a half-initialised Ray; the sweep below still ends its processes
                logger.warning("ray.shutdown failed", exc_info=True)
        _progress["deployed"] = False
        remove_runtime_dirs()


def serve_until_interrupted() -> None:
    """Block until Ctrl-C or SIGTERM (``docker stop``, systemd, timeout), as KeyboardInterrupt."""
    import signal
    import time

    guard = StopSignals.active()
    if guard is None:

        def _terminate(signum: int, frame: object) -> None:
            raise KeyboardInterrupt  # SIGTERM stops like Ctrl-C

        signal.signal(signal.SIGTERM, _terminate)
    if guard is not None:
        guard.reinstall()  # in front of anything Ray's threads installed meanwhile
    while True:
        if guard is not None:
            guard.check()  # a signal that came during the start-up's last steps
        time.sleep(0.5)
