"""``EnvRunnerGroup``: the local EnvRunner plus ``num_env_runners`` Ray actors, fault tolerant.

Failure handling follows RLlib's settings:

* ``restart_failed_env_runners`` (default): a runner whose env raises, whose process dies, or
  that does not answer within ``sample_timeout_s`` is replaced by a fresh actor with the same
  index, given the current weights, and training goes on;
* ``ignore_env_runner_failures``: the runner is dropped and the others go on;
* neither: :class:`EnvRunnerFailedError` is raised at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from formats.errors import RlserveError
from training.env_runner import EnvRunner, Fragment

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

    def __init__(self, config: Any, local_env_runner: EnvRunner) -> None:
        self.config = config
        self.local_env_runner = local_env_runner
        self._actors: dict[int, Any] = {}
        self._weights: tuple[Any, int] | None = None
        self.num_restarts = 0
        if config.num_env_runners > 0:
            if not ray.is_initialized():
                ray.init(include_dashboard=False, configure_logging=False)
            self._remote_cls = ray.remote(
                num_cpus=config.num_cpus_per_env_runner, num_gpus=config.num_gpus_per_env_runner
            )(EnvRunner)
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

    def sync_weights(self, weights: dict[str, Any], global_timestep: int) -> None:
        """Broadcast module state (weights and filter statistics) to every runner."""
        self.local_env_runner.set_weights(weights, global_timestep)
        if self._actors:
            ref = ray.put(weights)
            self._weights = (ref, global_timestep)
            refs = {a.set_weights.remote(ref, global_timestep): i for i, a in self._actors.items()}
            self._collect(refs)

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
                ref, timestep = self._weights
                ray.get(self._actors[index].set_weights.remote(ref, timestep))
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
