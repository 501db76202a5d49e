"""``rlserve serve``: serve exported policies over HTTP until Ctrl-C.

SIGINT and SIGTERM stop it at any moment, start-up included, with exit status 0 (a stop that
was asked for): the handler is installed before anything starts, and everything started so far
(Ray, HAProxy, the replicas) is ended before the command returns. A signal that arrives while
Python is still importing the command (the first fraction of a second) ends the process the
usual way; nothing has been started then.
"""

from __future__ import annotations

from typing import Annotated

import typer

from rlserve.commands import Dashboard, LogLevel, RayAddress, console, fail, guarded

__all__ = ["command"]


@guarded
def command(
    artifact_dirs: Annotated[
        list[str] | None, typer.Argument(help="Artifact directories to serve.")
    ] = None,
    name: Annotated[
        list[str] | None,
        typer.Option("--name", help="Policy name per artifact (default: the manifest's)."),
    ] = None,
    host: Annotated[
        str, typer.Option(help="Bind address; anything but loopback needs --token.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8000,
    token: Annotated[str | None, typer.Option(help="Bearer token required on /v1 routes.")] = None,
    replicas: Annotated[int, typer.Option(help="Replicas of the deployment.")] = 1,
    num_cpus: Annotated[float, typer.Option(help="CPUs per replica (inference threads).")] = 1.0,
    num_gpus: Annotated[
        float, typer.Option(help="GPUs per replica (fractions allowed); > 0 infers on CUDA.")
    ] = 0.0,
    backend: Annotated[
        str,
        typer.Option(
            help="onnx (onnxruntime), torch_export (torch, pickle-free) or torchscript "
            "(legacy torch; needs --allow-torchscript)."
        ),
    ] = "onnx",
    allow_torchscript: Annotated[
        bool,
        typer.Option(
            help="Allow --backend torchscript: its archives are unpickled when loaded, so use "
            "it only for artifacts you built yourself."
        ),
    ] = False,
    max_batch_size: Annotated[int, typer.Option(help="Requests combined per inference.")] = 64,
    batch_wait_ms: Annotated[
        float, typer.Option(help="How long a batch waits for more requests.")
    ] = 2.0,
    request_timeout_s: Annotated[
        float | None,
        typer.Option(help="Answer 408 to requests (and session messages) not done in this time."),
    ] = None,
    max_ongoing_requests: Annotated[
        int,
        typer.Option(
            help="Requests a replica works on at once (raised to --max-batch-size at least)."
        ),
    ] = 256,
    max_queued_requests: Annotated[
        int | None,
        typer.Option(
            help="Requests waiting per replica beyond those; more are answered 503 with "
            "Retry-After (default: sized from --max-ongoing-requests; -1: unbounded)."
        ),
    ] = None,
    max_sessions: Annotated[
        int,
        typer.Option(
            help="WebSocket sessions a replica holds at once (/v1/policies/NAME/session); each "
            "holds a request slot for its life, on top of --max-ongoing-requests. Beyond it a "
            "handshake is answered 503 with Retry-After."
        ),
    ] = 256,
    session_idle_timeout_s: Annotated[
        float, typer.Option(help="Close a session that sends nothing for this long.")
    ] = 30.0,
    ingress: Annotated[
        str,
        typer.Option(
            help="haproxy: HAProxy forwards straight to the replicas (fast; bundled with "
            "ray[serve]); proxy: Ray Serve's Python proxy. Applies when rlserve starts Ray."
        ),
    ] = "haproxy",
    proxy_location: Annotated[
        str,
        typer.Option(
            help="On a Ray cluster (--address): EveryNode runs Serve's HTTP proxy on each node "
            "(put a load balancer in front), HeadOnly on the head alone (one HTTP address)."
        ),
    ] = "EveryNode",
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Serve Prometheus metrics (rlserve_requests, rlserve_batch_requests, "
            "rlserve_inference_latency_ms and Ray's own) at http://127.0.0.1:PORT/metrics. "
            "Without it, a Ray started here collects no metrics: Ray's metrics agent costs "
            "tail latency on small machines."
        ),
    ] = None,
    config_file: Annotated[
        str | None,
        typer.Option(
            "--config",
            help="A Ray Serve config file (see examples/serve_config.yaml) to run instead of "
            "artifact directories; its http_options set host and port.",
        ),
    ] = None,
    address: RayAddress = None,
    dashboard: Dashboard = False,
    log_level: LogLevel = None,
) -> None:
    """Serve exported policies over HTTP (and WebSocket sessions) until Ctrl-C."""
    from rlserve.jobs.config_file import run_config_file
    from rlserve.jobs.service import (
        ServiceOptions,
        serve_until_interrupted,
        start_service,
        stop_service,
    )
    from rlserve.jobs.stop_signals import StopSignals

    if config_file is not None:  # Serve's runner in a child process: it forwards the signals
        if artifact_dirs:
            raise fail("give artifact directories or --config, not both")
        raise typer.Exit(run_config_file(config_file, ingress))
    if not artifact_dirs:
        raise fail("give at least one artifact directory (or --config FILE)")
    # Taken before anything starts; a stop signal at any later moment ends here in "stopping".
    with StopSignals():
        try:
            from exporters import load_artifact

            names = list(name or [])
            if names and len(names) != len(artifact_dirs):
                raise fail("give one --name per artifact directory, or none")
            paths = {
                names[i] if names else load_artifact(path).manifest.policy_name: path
                for i, path in enumerate(artifact_dirs)
            }
            options = ServiceOptions(
                paths,
                host=host,
                port=port,
                token=token,
                replicas=replicas,
                num_cpus=num_cpus,
                num_gpus=num_gpus,
                backend=backend,
                allow_torchscript=allow_torchscript,
                max_batch_size=max_batch_size,
                batch_wait_ms=batch_wait_ms,
                request_timeout_s=request_timeout_s,
                max_ongoing_requests=max_ongoing_requests,
                max_queued_requests=max_queued_requests,
                max_sessions=max_sessions,
                session_idle_timeout_s=session_idle_timeout_s,
                ingress=ingress,
                address=address,
                proxy_location=proxy_location,
                dashboard=dashboard,
                metrics_port=metrics_port,
            )
            url = start_service(options)
            console.print(
                f"serving {', '.join(sorted(paths))} at {url}  (docs: {url}/docs; Ctrl-C stops)"
            )
            serve_until_interrupted()
        except KeyboardInterrupt:
            console.print("stopping")
        finally:
            stop_service()
