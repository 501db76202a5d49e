"""``EnvRunnerGroup``: the local EnvRunner plus ``num_env_runners`` Ray actors, fault tolerant.

Failure handling follows RLlib's settings:

* ``restart_failed_env_runners`` (default): a runner whose env raises, whose process dies, or
  that does not answer within ``sample_timeout_s`` is replaced by a fresh actor with the same
  index, given the current weights, and training goes on;
* ``ignore_env_runner_failures``: the runner is dropped and the others go on;
* neither: :class:`EnvRunnerFailedError` is raised at once.

Synchronous algorithms (PPO, DQN, SAC) call :meth:`EnvRunnerGroup.sample`: one fragment from
every runner, then wait. Asynchronous ones (IMPALA) call :meth:`EnvRunnerGroup.fetch_ready`:
every runner keeps ``max_requests_in_flight_per_env_runner`` sample requests queued, and the
driver takes whatever has arrived, so runners never wait for the learner; weights published with
:meth:`EnvRunnerGroup.broadcast_weights` ride along with each runner's next sample request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from formats.errors import RlserveError
from training.env_runner import EnvRunner, Fragment
from training.placement import missing_resources

__all__ = ["EnvRunnerFailedError", "EnvRunnerGroup"]

logger = logging.getLogger(__name__)


class EnvRunnerFailedError(RlserveError, RuntimeError):
    """A remote EnvRunner failed and the fault-tolerance settings do not allow going on."""


class EnvRunnerGroup:
    """The local runner and the remote runner actors of one algorithm.

    Args:
        config: The algorithm config.
        local_env_runner: The runner living in the driver process.
    """

    def __init__(self, config: Any, local_env_runner: Any) -> None:
        self.config = config
        self.local_env_runner = local_env_runner
        self._actors: dict[int, Any] = {}
        self._weights: tuple[Any, int, int | None] | None = None
        self.num_restarts = 0
        # Asynchronous sampling: request -> (runner index, when it was sent).
        self._in_flight: dict[Any, tuple[int, float]] = {}
        self._in_flight_per_runner: dict[int, int] = {}
        self._weights_sent: dict[int, int | None] = {}  # runner -> version it was sent last
        self._local_weights: tuple[dict[str, Any], int, int] | None = None
        self.num_sample_requests_dropped = 0
        if config.num_env_runners > 0:
            if not ray.is_initialized():
                ray.init(include_dashboard=False, configure_logging=False)
            missing = missing_resources(
                "env_runners",
                "num_env_runners",
                int(config.num_env_runners),
                {
                    "CPU": ("num_cpus_per_env_runner", config.num_cpus_per_env_runner),
                    "GPU": ("num_gpus_per_env_runner", config.num_gpus_per_env_runner),
                },
            )
            if missing:  # Ray would wait for them forever
                raise EnvRunnerFailedError(missing)
            # The local runner's class: an EnvRunner, or a multi-agent runner.
            self._remote_cls = ray.remote(
                num_cpus=config.num_cpus_per_env_runner, num_gpus=config.num_gpus_per_env_runner
            )(type(local_env_runner))
            self._actors = {i: self._new_actor(i) for i in range(1, config.num_env_runners + 1)}
            # Fail early (and clearly) if an actor cannot even start its env.
            self._wait_ready()

    def _new_actor(self, index: int) -> Any:
        return self._remote_cls.options(name=None, max_restarts=0).remote(self.config, index)

    def _wait_ready(self) -> None:
        refs = {actor.ping.remote(): index for index, actor in self._actors.items()}
        for ref, index in refs.items():
            try:
                ray.get(ref, timeout=max(60.0, self.config.sample_timeout_s))
            except (RayActorError, RayTaskError, GetTimeoutError) as error:
                raise EnvRunnerFailedError(
                    f"env runner {index} failed to start: {_short(error)}"
                ) from None

    # ----------------------------------------------------------------- introspection
    @property
    def num_remote_env_runners(self) -> int:
        """Remote runners configured."""
        return int(self.config.num_env_runners)

    @property
    def num_healthy_remote_env_runners(self) -> int:
        """Remote runners alive now."""
        return len(self._actors)

    def healthy_env_runner_ids(self) -> list[int]:
        """Indices of the remote runners alive now."""
        return sorted(self._actors)

    # ----------------------------------------------------------------- calls on runners
    def foreach_worker(
        self, func: Callable[[EnvRunner], Any], *, local_env_runner: bool = True
    ) -> list[Any]:
        """Call ``func(runner)`` on the local runner and every healthy remote one.

        Returns:
            The results, local runner first, then remote runners by index.
        """
        results = [func(self.local_env_runner)] if local_env_runner else []
        refs = [self._actors[i].apply.remote(func) for i in sorted(self._actors)]
        return results + ray.get(refs)

    def foreach_worker_with_index(
        self, func: Callable[[int, EnvRunner], Any], *, local_env_runner: bool = True
    ) -> list[Any]:
        """Call ``func(index, runner)``; the local runner has index 0."""
        results = [func(0, self.local_env_runner)] if local_env_runner else []
        refs = [self._actors[i].apply.remote(_with_index, func, i) for i in sorted(self._actors)]
        return results + ray.get(refs)

    def sync_weights(
        self, weights: dict[str, Any], global_timestep: int, weights_version: int | None = None
    ) -> None:
        """Broadcast module state (weights and filter statistics) to every runner, and wait."""
        self.local_env_runner.set_weights(weights, global_timestep, weights_version)
        if self._actors:
            ref = ray.put(weights)
            self._weights = (ref, global_timestep, weights_version)
            refs = {
                a.set_weights.remote(ref, global_timestep, weights_version): i
                for i, a in self._actors.items()
            }
            self._weights_sent = dict.fromkeys(self._actors, weights_version)
            self._collect(refs)

    # ----------------------------------------------------------------- asynchronous sampling
    @property
    def num_in_flight_requests(self) -> int:
        """Asynchronous sample requests sent and not yet taken."""
        return len(self._in_flight)

    def broadcast_weights(
        self, weights: dict[str, Any], global_timestep: int, weights_version: int
    ) -> None:
        """Make module state the runners' next weights, without a call to any of them.

        The local runner (idle while remote ones sample) gets them at :meth:`push_weights`.

        The weights go into the object store once; each runner gets the reference with its
        next sample request (:meth:`fetch_ready`), which Ray resolves in the runner before the
        sampling starts. That request queues behind the ones in flight, where a separate
        ``set_weights`` call would queue too, so the lag is the same, sampling never stops,
        and a broadcast costs one ``ray.put`` however many runners there are.
        """
        self._local_weights = (weights, global_timestep, weights_version)
        if self._actors:
            self._weights = (ray.put(weights), global_timestep, weights_version)

    def push_weights(self) -> None:
        """Send the published weights to every runner not given them yet, without waiting.

        For the end of an iteration: a runner's queued calls then end on the newest weights
        even before its next sample request (one call per runner, once per iteration). The
        local runner, which does not sample meanwhile, is brought up to date here too.
        """
        if self._local_weights is not None:
            self.local_env_runner.set_weights(*self._local_weights)
            self._local_weights = None
        if self._weights is None:
            return
        ref, timestep, version = self._weights
        for index, actor in self._actors.items():
            if self._weights_sent.get(index) != version:
                # Fire and forget: a runner that died surfaces through its sample requests.
                actor.set_weights.remote(ref, timestep, version)
                self._weights_sent[index] = version

    def fetch_ready(
        self, max_in_flight: int, timeout_s: float
    ) -> list[tuple[Fragment, dict[str, Any] | None]]:
        """Keep every runner at ``max_in_flight`` requests; take those that have finished.

        Waits up to ``timeout_s`` for the first one, then takes every finished request at
        once (one ``ray.wait`` and one ``ray.get`` per call, whatever the number of runners,
        so the driver's cost per fragment stays flat as runners are added). A runner whose
        request fails, or is older than ``sample_timeout_s``, is handled as in
        :meth:`sample`; that request and its other ones are dropped and counted in
        :attr:`num_sample_requests_dropped`.

        Returns:
            ``(fragment, filter delta or None)`` per finished request, in no set order.
        """
        self._top_up(max_in_flight)
        if not self._in_flight:
            raise EnvRunnerFailedError("no healthy env runner to sample from")
        refs = list(self._in_flight)
        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout_s)
        if ready:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        results: list[tuple[Fragment, dict[str, Any] | None]] = []
        origins = [self._forget(ref) for ref in ready]
        try:
            results = ray.get(ready)
        except (RayActorError, RayTaskError):  # one failed: take the others one by one
            failed: set[int] = set()
            for ref, index in zip(ready, origins, strict=True):
                try:
                    results.append(ray.get(ref))
                except (RayActorError, RayTaskError) as error:
                    self.num_sample_requests_dropped += 1
                    if index in failed:  # a second request of a runner already replaced
                        continue
                    failed.add(index)
                    self._on_failure(index, error)
        timeout = self.config.sample_timeout_s
        for ref, (index, sent) in list(self._in_flight.items()):
            if ref in self._in_flight and time.monotonic() - sent > timeout:
                self._forget(ref)
                self.num_sample_requests_dropped += 1
                late = TimeoutError(f"no answer within sample_timeout_s={timeout}")
                self._on_failure(index, late)
        # Resend at once: the runners keep sampling while the driver feeds the learner (and
        # between training iterations).
        self._top_up(max_in_flight)
        return results

    def _top_up(self, max_in_flight: int) -> None:
        now = time.monotonic()
        version = None if self._weights is None else self._weights[2]
        for index, actor in list(self._actors.items()):
            for _ in range(max_in_flight - self._in_flight_per_runner.get(index, 0)):
                if self._weights is not None and self._weights_sent.get(index) != version:
                    ref = actor.sample_with_filter_delta.remote(*self._weights)
                    self._weights_sent[index] = version
                else:
                    ref = actor.sample_with_filter_delta.remote()
                self._in_flight[ref] = (index, now)
                self._in_flight_per_runner[index] = self._in_flight_per_runner.get(index, 0) + 1

    def _forget(self, ref: Any) -> int:
        index, _ = self._in_flight.pop(ref)
        self._in_flight_per_runner[index] -= 1
        return index

    def _drop_requests_of(self, index: int) -> None:
        for ref, (owner, _) in list(self._in_flight.items()):
            if owner == index:
                self._forget(ref)
                self.num_sample_requests_dropped += 1

    def sample(self) -> list[Fragment]:
        """One fragment from every healthy runner (the local one if there are no remotes)."""
        if self.config.num_env_runners == 0:
            return [self.local_env_runner.sample()]
        refs = {actor.sample.remote(): i for i, actor in self._actors.items()}
        fragments: list[Fragment] = self._collect(refs)
        if not fragments:
            raise EnvRunnerFailedError("no env runner returned samples this iteration")
        return fragments

    def get_filter_deltas(self) -> list[dict[str, Any]]:
        """Observation statistics each runner gathered since the last call."""
        if self.config.num_env_runners == 0:
            return [self.local_env_runner.get_filter_delta()]
        refs = {actor.get_filter_delta.remote(): i for i, actor in self._actors.items()}
        deltas: list[dict[str, Any]] = self._collect(refs)
        return deltas

    # ----------------------------------------------------------------- failures
    def _collect(self, refs: dict[Any, int]) -> list[Any]:
        ready, pending = ray.wait(
            list(refs), num_returns=len(refs), timeout=self.config.sample_timeout_s
        )
        results = []
        for ref in ready:
            try:
                results.append(ray.get(ref))
            except (RayActorError, RayTaskError) as error:
                self._on_failure(refs[ref], error)
        for ref in pending:
            self._on_failure(
                refs[ref],
                TimeoutError(f"no answer within sample_timeout_s={self.config.sample_timeout_s}"),
            )
        return results

    def _on_failure(self, index: int, error: BaseException) -> None:
        self._drop_requests_of(index)  # asynchronous requests still queued on the dead runner
        actor = self._actors.pop(index, None)
        if actor is not None:
            ray.kill(actor, no_restart=True)
        config = self.config
        if config.restart_failed_env_runners:
            if self.num_restarts >= config.max_num_env_runner_restarts:
                raise EnvRunnerFailedError(
                    f"env runner {index} failed ({_short(error)}) and the restart budget "
                    f"max_num_env_runner_restarts={config.max_num_env_runner_restarts} is spent"
                )
            logger.warning("env runner %d failed (%s); restarting it", index, _short(error))
            self.num_restarts += 1
            self._actors[index] = self._new_actor(index)
            if self._weights is not None:
                ref, timestep, version = self._weights
                ray.get(self._actors[index].set_weights.remote(ref, timestep, version))
                self._weights_sent[index] = version
        elif config.ignore_env_runner_failures:
            logger.warning("env runner %d failed (%s); going on without it", index, _short(error))
            if not self._actors:
                raise EnvRunnerFailedError(f"every env runner failed; the last: {_short(error)}")
        else:
            raise EnvRunnerFailedError(
                f"env runner {index} failed: {_short(error)}. Set "
                "fault_tolerance(restart_failed_env_runners=True) to replace failed runners, or "
                "ignore_env_runner_failures=True to go on without them"
            )

    def stop(self) -> None:
        """Kill the remote runners and close the local one."""
        for actor in self._actors.values():
            ray.kill(actor, no_restart=True)
        self._actors.clear()
        self._in_flight.clear()
        self._in_flight_per_runner.clear()
        self.local_env_runner.stop()


def _with_index(runner: EnvRunner, func: Callable[[int, EnvRunner], Any], index: int) -> Any:
    return func(index, runner)


def _short(error: BaseException) -> str:
    if isinstance(error, RayTaskError):
        cause = error.cause if hasattr(error, "cause") else None
        if cause is not None:
            return f"{type(cause).__name__}: {cause}"
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[-1] if text else ''}"
