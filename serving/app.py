"""The Ray Serve application: one FastAPI ingress deployment with dynamic batching.

``serve run serving.app:build_app artifact=PATH`` works (the builder's argument is a
pydantic model, so ``key=value`` arguments are validated), and so does a ``serve build`` YAML.

Concurrent requests are validated one by one at the edge, then combined by ``@serve.batch`` into
one inference call per policy (rows beyond the artifact's ``max_batch_size`` are split and the
results merged); WebSocket session messages by :class:`serving.batching.Coalescer`, without a
batch-wait timer. ``max_ongoing_requests`` is raised to at least ``max_batch_size`` automatically:
Serve never forms a batch larger than it (ray-project/ray#43288).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from ray import serve
from ray.serve import Application, metrics
from ray.serve.config import BackpressureConfig

from exporters import load_artifact
from serving.batching import Coalescer, Item, compute_batch
from serving.http_app import PolicyApi, ServingSettings, create_app
from serving.ingress import IngressLimits
from serving.registry import PolicyRegistry
from serving.runtime import ActionBatch, Backend, PolicyRuntime, Previous, State
from serving.sessions import SessionServer, SessionSettings
from serving.shipping import fetch_artifact, is_shipped

__all__ = ["AppArgs", "PolicyDeployment", "ReplicaSettings", "build_app"]

GRACEFUL_SHUTDOWN_TIMEOUT_S = 5.0
"""How long a stopping replica may take to finish its requests."""
METRICS_FLUSH_S = 1.0
"""How often a replica hands its summed request counts to Ray's metrics."""
METRICS_SWITCH = "RAY_enable_metrics_collection"
"""Ray's switch for its metrics; ``rlserve serve`` sets it to ``0`` without ``--metrics-port``.

Collecting is not free. Every 10 s Ray's metrics agent replays each histogram observation in
Python (``record_histogram_aggregated_batch``), and Serve makes two or more per request: at
2,000 req/s that is a full core for about half a second, which stalls the replicas of a small
machine for hundreds of milliseconds (the tail latency in ``bench/serve_load.py``).
"""


class ReplicaSettings(BaseModel):
    """What every replica needs besides the artifacts (which arrive by ``reconfigure``).

    Attributes:
        max_batch_size: Most requests combined into one inference call.
        batch_wait_timeout_s: How long the first request of a batch waits for company.
        max_rows: Most observations in one ``compute_actions`` request.
        max_body_bytes: Largest request body.
        body_timeout_s: Longest a request body may take to arrive (408 after it): a client
            sending its body slowly holds a replica slot meanwhile.
        token: Bearer token required on ``/v1`` routes.
        num_cpus: CPUs per replica (also the inference thread count).
        num_gpus: GPUs per replica (fractions allowed): onnxruntime's CUDA provider or torch's
            CUDA device.
        epsilon: Exploration rate for Q-value policies when ``explore=true``.
        backend: ``onnx`` (onnxruntime, default), ``torch_export`` or ``torchscript`` (torch).
        allow_torchscript: Required for ``backend=torchscript``: TorchScript archives are
            unpickled when loaded, so only serve ones you built yourself.
        max_sessions: WebSocket sessions a replica holds at once (:mod:`serving.sessions`);
            each holds one request slot for its whole life, so the replica's slots are
            ``max_ongoing_requests`` plus these. The next handshake is answered 503.
        session_window: Messages a session may send before reading their answers.
        session_idle_timeout_s: A session that sends nothing for this long is closed.
        message_timeout_s: Longest a session message's answer may take (408 on the socket);
            ``rlserve serve`` sets it to ``--request-timeout-s``.
    """

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(default=64, ge=1, le=4096)
    batch_wait_timeout_s: float = Field(default=0.002, ge=0.0, le=1.0)
    max_rows: int = Field(default=4096, ge=1)
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    body_timeout_s: float = Field(default=10.0, gt=0.0, le=3600.0)
    token: str | None = None
    num_cpus: float = Field(default=1.0, gt=0)
    num_gpus: float = Field(default=0.0, ge=0)
    epsilon: float = Field(default=0.05, ge=0.0, le=1.0)
    backend: Backend = "onnx"
    allow_torchscript: bool = False
    max_sessions: int = Field(default=256, ge=0, le=65536)
    session_window: int = Field(default=64, ge=1, le=4096)
    session_idle_timeout_s: float = Field(default=30.0, gt=0.0, le=86400.0)
    message_timeout_s: float | None = Field(default=None, gt=0.0, le=3600.0)

    @model_validator(mode="after")
    def _torchscript_allowed(self) -> ReplicaSettings:
        if self.backend == "torchscript" and not self.allow_torchscript:
            raise ValueError(
                "backend=torchscript loads a pickle-based archive: set allow_torchscript=true "
                "for artifacts you built yourself, or use backend=torch_export or onnx"
            )
        return self


class AppArgs(ReplicaSettings):
    """Arguments of the serving application (``serve run ... key=value`` or YAML).

    Attributes:
        artifact: One artifact directory, served under ``name``.
        name: Policy name for ``artifact``.
        artifacts: More policies: name -> artifact directory.
        num_replicas: Replicas (ignored when ``autoscaling`` is set).
        autoscaling: Ray Serve autoscaling config (``min_replicas``, ``max_replicas``, ...).
        max_queued_requests: Requests queued per replica before answering 503 with
            ``Retry-After``. ``None`` (default): as many as the replica works on at once (see
            :meth:`queued_requests`); ``-1``: unbounded (overload then shows as latency).
        max_ongoing_requests: Requests a replica works on at once; raised to at least
            ``max_batch_size`` automatically (Serve never batches beyond it).
        retry_after_s: ``Retry-After`` seconds on the 503 answered when the queue is full.
        access_log: Log every request in the replica (off by default: it costs ~5% of
            throughput; the request counter metric is always on). Off, the replica's Serve
            logger runs at WARNING.
    """

    artifact: str | None = None
    name: str = "policy"
    artifacts: dict[str, str] = Field(default_factory=dict)
    num_replicas: int = Field(default=1, ge=1)
    autoscaling: dict[str, Any] | None = None
    max_queued_requests: int | None = Field(default=None, ge=-1)
    max_ongoing_requests: int = Field(default=256, ge=1)
    retry_after_s: float = Field(default=1.0, ge=0.0)
    access_log: bool = False

    @model_validator(mode="after")
    def _some_policy(self) -> AppArgs:
        if not self.artifact and not self.artifacts:
            raise ValueError("give artifact=PATH (and name=...) or artifacts={name: PATH}")
        if self.artifact and self.name in self.artifacts:
            raise ValueError(f"policy name {self.name!r} is given twice")
        return self

    def policy_paths(self) -> dict[str, str]:
        """Every served policy's artifact directory by name."""
        paths = dict(self.artifacts)
        if self.artifact:
            paths[self.name] = self.artifact
        return paths

    def http_requests(self) -> int:
        """HTTP requests a replica works on at once: Serve never batches beyond them (ray#43288)."""
        return max(self.max_ongoing_requests, self.max_batch_size)

    def ongoing_requests(self) -> int:
        """Serve's request slots per replica: the HTTP requests plus the sessions (one each).

        Behind HAProxy the two never share: HTTP requests go to a backend limited to
        :meth:`http_requests` per replica, sessions to one of their own
        (:mod:`serving.haproxy_sessions`). Through Serve's proxy (``ingress="proxy"``) only
        this sum limits them, so HTTP may use slots no session holds.
        """
        return self.http_requests() + self.max_sessions

    def queued_requests(self) -> int:
        """The queue bound per replica that ``max_queued_requests`` stands for.

        By default the queue is as long as the HTTP work in progress: a queued request then
        waits about one more service round, so accepted requests stay within about twice the
        loaded latency, and a burst as large as the concurrency is absorbed without a 503.
        Past it, waiting longer would only turn a fast 503 the client can act on into a slow
        answer.
        """
        if self.max_queued_requests is None:
            return self.http_requests()
        return self.max_queued_requests

    def ingress_limits(self) -> IngressLimits:
        """What HAProxy enforces per replica for this application (``ingress_environment``)."""
        return IngressLimits(
            max_ongoing_requests=self.http_requests(),
            max_queued_requests=self.queued_requests(),
            retry_after_s=self.retry_after_s,
            max_sessions=self.max_sessions,
        )

    def replica_settings(self) -> dict[str, Any]:
        """The replica's constructor argument (artifacts travel in ``user_config``)."""
        return self.model_dump(include=set(ReplicaSettings.model_fields))


@serve.deployment
@serve.ingress()
class PolicyDeployment:
    """Loads verified artifacts and answers HTTP through the FastAPI app."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.args = ReplicaSettings.model_validate(settings)
        self.registry = PolicyRegistry()
        self._requests = metrics.Counter(
            "rlserve_requests",
            description="Policy requests answered, by policy, version and HTTP status.",
            tag_keys=("policy", "version", "status"),  # type: ignore[arg-type]  # Ray types it Tuple[str]
        )
        self._batch_rows = metrics.Histogram(
            "rlserve_batch_requests",
            description="Requests combined into one inference call.",
            boundaries=[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096],
            tag_keys=("policy",),
        )
        self._sessions_open = metrics.Gauge(
            "rlserve_sessions_open",
            description="WebSocket sessions open on the replica, by policy.",
            tag_keys=("policy",),
        )
        self._gauged: set[str] = set()
        """Policies whose session gauge was set (set back to 0 when their last one closes)."""
        self._latency = metrics.Histogram(
            "rlserve_inference_latency_ms",
            description="Wall time of one (batched) inference call.",
            boundaries=[0.1, 0.25, 0.5, 1, 2, 5, 10, 25, 50, 100, 250, 1000],
            tag_keys=("policy",),
        )
        # A Ray started without metrics (rlserve serve without --metrics-port) drops every
        # observation in C++; skip the Python half of the work too.
        self._collecting = os.environ.get(METRICS_SWITCH, "1").lower() not in ("0", "false")
        # Per-request counts are summed here and handed to Ray's metrics once a second: one
        # Counter.inc per request costs more than the inference it counts.
        self._counts: Counter[tuple[str, str, str]] = Counter()
        self._flusher: asyncio.Task[None] | None = None
        self._api: PolicyApi | None = None
        self._sessions: SessionServer | None = None
        # serve.batch's tuning hooks are attached at run time (untyped upstream).
        self._batched_infer.set_max_batch_size(self.args.max_batch_size)  # type: ignore[attr-defined]
        self._batched_infer.set_batch_wait_timeout_s(self.args.batch_wait_timeout_s)  # type: ignore[attr-defined]

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Load or hot-swap artifacts: ``user_config = {"artifacts": {name: path}}``.

        Ray Serve calls this when a replica starts and, for config-file deploys, whenever only
        ``user_config`` changed (in place, no restart). See :meth:`PolicyRegistry.reload`: a
        new artifact replaces the old only once verified and loaded; a failed reload keeps the
        old one serving and is reported; a failed first load raises (nothing to fall back to).
        """
        paths = {
            name: fetch_artifact(path) if is_shipped(path) else path
            for name, path in dict(user_config.get("artifacts") or {}).items()
        }
        self.registry.reload(
            paths,
            backend=self.args.backend,
            device="cuda" if self.args.num_gpus > 0 else "cpu",
            intra_op_num_threads=max(1, int(self.args.num_cpus)),
            epsilon=self.args.epsilon,
            allow_torchscript=self.args.allow_torchscript,
        )

    def __serve_build_asgi_app__(self) -> Any:
        settings = ServingSettings(
            max_rows=self.args.max_rows,
            max_body_bytes=self.args.max_body_bytes,
            token=self.args.token,
            body_timeout_s=self.args.body_timeout_s,
        )
        sessions = SessionSettings(
            max_sessions=self.args.max_sessions,
            window=self.args.session_window,
            idle_timeout_s=self.args.session_idle_timeout_s,
            message_timeout_s=self.args.message_timeout_s,
        )
        app = create_app(
            self.registry,
            settings,
            infer=self._infer,
            observer=self._observe,
            sessions=sessions,
            session_infer=Coalescer(self.args.max_batch_size, self._record_call),
        )
        self._api = app.state.api
        self._sessions = app.state.sessions
        self._sessions.on_open = self._start_flusher  # the flush sets the open-sessions gauge
        return app

    def _observe(self, policy: str, version: str, status: int) -> None:
        self._counts[(policy, version, str(status))] += 1
        if self._flusher is None:
            self._start_flusher()

    def _start_flusher(self) -> None:
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_forever())

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(METRICS_FLUSH_S)
            self.flush_metrics()

    def flush_metrics(self) -> None:
        """Hand the request counts summed since the last flush to Ray's metrics."""
        counts, self._counts = self._counts, Counter()
        for (policy, version, status), count in counts.items():
            self._requests.inc(count, tags={"policy": policy, "version": version, "status": status})
        if self._sessions is not None:
            open_now = dict(self._sessions.open)
            for policy in self._gauged | set(open_now):
                self._sessions_open.set(open_now.get(policy, 0), tags={"policy": policy})
            self._gauged = set(open_now)

    async def _infer(
        self,
        runtime: PolicyRuntime,
        leaves: list[np.ndarray],
        explore: bool,
        seed: int | None,
        state: State | None = None,
        previous: Previous | None = None,
    ) -> ActionBatch:
        if self._api is not None and self._api.active <= 1:
            # Alone in the replica: nobody to batch with, so waiting for company would only
            # add latency. Batches form as soon as requests overlap.
            start = time.perf_counter()
            alone = runtime.compute(
                leaves, explore=explore, seed=seed, state=state, previous=previous
            )
            self._record_call(runtime, start, 1)
            return alone
        item = Item(runtime, leaves, explore, seed, state, previous)
        result: ActionBatch = await self._batched_infer(item)
        return result

    def _record_call(self, runtime: PolicyRuntime, start: float, requests: int) -> None:
        if not self._collecting:
            return
        tags = {"policy": runtime.name}
        self._latency.observe((time.perf_counter() - start) * 1000.0, tags=tags)
        self._batch_rows.observe(requests, tags=tags)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.002)
    async def _batched_infer(self, items: list[Item]) -> list[ActionBatch]:
        """One graph call per policy for all queued requests, then per-request sampling."""
        return compute_batch(items, self._record_call)


def build_app(args: AppArgs | dict[str, Any]) -> Application:
    """The Serve application for ``args`` (``serve run serving.app:build_app ...``).

    Raises:
        exporters.ArtifactError: If an artifact fails verification (nothing is deployed).
    """
    # `serve run ... key=value` hands over a dict of strings; validate it into AppArgs.
    if not isinstance(args, AppArgs):
        args = AppArgs.model_validate(args)
    # Verify every artifact here, before Serve replaces any replica: a corrupt or tampered
    # artifact fails the deploy while the running version keeps serving.
    # (A shipped artifact was verified when it was shipped, and is again on each node.)
    for path in args.policy_paths().values():
        if not is_shipped(path):
            load_artifact(path).file(args.backend)  # and it holds the backend's format
    settings = args.replica_settings()
    options: dict[str, Any] = {
        "user_config": {"artifacts": args.policy_paths()},
        "max_ongoing_requests": args.ongoing_requests(),
        # Behind HAProxy the queue is HAProxy's (serving.ingress); this bound still holds for
        # requests that reach the replica another way (Serve's proxy, its direct port).
        "max_queued_requests": args.queued_requests(),
        "backpressure_config": BackpressureConfig(
            status_code=503, retry_after_s=args.retry_after_s
        ),
        "ray_actor_options": {"num_cpus": args.num_cpus, "num_gpus": args.num_gpus},
        # Requests take milliseconds: seconds are enough for a stopping replica to finish
        # them (Serve's default is 20 s, which every stop and failed start waited out).
        "graceful_shutdown_timeout_s": GRACEFUL_SHUTDOWN_TIMEOUT_S,
        # Serve builds an access-log record for every request even when the access log is
        # off; at WARNING that call returns at once (Serve's own lifecycle INFO lines go too).
        "logging_config": {
            "enable_access_log": args.access_log,
            "log_level": "INFO" if args.access_log else "WARNING",
        },
    }
    if args.autoscaling:
        options["autoscaling_config"] = args.autoscaling
    else:
        options["num_replicas"] = args.num_replicas
    deployment: Any = PolicyDeployment  # serve.deployment makes it a Deployment (untyped)
    application: Application = deployment.options(**options).bind(settings)
    return application
