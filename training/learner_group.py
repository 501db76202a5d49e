"""``LearnerGroup``: N data-parallel learner actors that train one module together.

``.learners(num_learners=N)`` (RLlib's name) moves the update out of the driver into ``N`` Ray
actors, each with its own copy of the module and optimizer, joined in a ``torch.distributed``
process group (gloo on the CPU, NCCL on CUDA). For every update the driver puts the update's
input (a PPO train batch, DQN's replayed batches) into the object store once, and every learner
runs the same update method on it: each trains on its own slice of every minibatch
(:class:`~training.distributed.Shard`) and all-reduces its gradients after each backward pass,
so all apply the same mean gradient and their weights stay identical (tested bit for bit). The
driver then takes learner 0's weights for the EnvRunners and for checkpoints.

What it costs: each learner reads the whole batch (PPO also computes GAE over all of it, one
forward pass beside the epochs of forward and backward passes it splits), one all-reduce per
minibatch step, and one weight transfer to the driver per update. What it buys: the minibatch
work divided by ``N``, across the CPUs or GPUs of a cluster's nodes, with the same update a
single learner computes (the same global minibatch, the same order, the same mean gradient).

``num_learners=0`` (the default) keeps the learner in the driver, without any of this.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import gymnasium as gym
import numpy as np
import ray
import torch

from training.distributed import Shard, backend_for, init_process_group
from training.placement import missing_resources

if TYPE_CHECKING:
    from training.config import AlgorithmConfig

__all__ = ["LearnerActor", "LearnerGroup", "LearnerGroupError"]

logger = logging.getLogger(__name__)
T = TypeVar("T")
JOIN_TIMEOUT_S = 120.0
"""How long the learners wait for each other to join the process group."""


class LearnerGroupError(RuntimeError):
    """The learners cannot start: resources the cluster does not have, or a failed join."""


def _tensors(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    # A copy: arrays from the object store are read-only views torch must not write through.
    return {k: torch.tensor(np.asarray(v)) for k, v in arrays.items()}


class LearnerActor:
    """One data-parallel learner: a module, its algorithm's learner, and a process-group rank.

    Args:
        algorithm: The registered algorithm name (``"PPO"``, ``"DQN"``).
        config: The algorithm config as a dict (as checkpoints store it).
        observation_space: The module's observation space.
        action_space: The module's action space.
        shard: This learner's rank, the group's size and the shared minibatch seed.
        weights: The driver module's state, loaded before the learner is built: what the
            learner copies at its start (target networks) must be the same on every learner.
    """

    def __init__(
        self,
        algorithm: str,
        config: dict[str, Any],
        observation_space: gym.Space[Any],
        action_space: gym.Space[Any],
        shard: Shard,
        weights: dict[str, np.ndarray],
    ) -> None:
        from training.algorithms import algorithm_class

        algo_cls = algorithm_class(algorithm)
        cfg: AlgorithmConfig = algo_cls.config_class.from_dict(config)
        self.shard = shard
        self.device = torch.device("cuda" if cfg.num_gpus_per_learner > 0 else "cpu")
        # Small RL networks run fastest on few threads; take what the actor reserved.
        torch.set_num_threads(max(1, int(cfg.num_cpus_per_learner)))
        self.module = algo_cls.build_module(cfg, observation_space, action_space)
        self.module.load_state_dict(_tensors(weights))
        self.module.to(self.device)
        self.learner = algo_cls.build_learner(cfg, self.module, self.device, shard)

    def rendezvous(self) -> tuple[str, int]:
        """Rank 0's address and a free port for the process group's store."""
        address = str(ray.util.get_node_ip_address())  # type: ignore[no-untyped-call]
        with socket.socket() as sock:
            sock.bind((address, 0))
            port = int(sock.getsockname()[1])
        return address, port

    def join(self, address: str, port: int, timeout_s: float) -> str:
        """Join the process group; returns this actor's Ray node id (for placement checks)."""
        if address in ("127.0.0.1", "localhost"):
            # Gloo listens on the interface its host name resolves to unless told otherwise;
            # learners of a loopback-only Ray need nothing beyond this machine.
            os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        init_process_group(
            backend_for(self.device),
            address,
            port,
            self.shard.rank,
            self.shard.world_size,
            timeout_s,
        )
        return str(ray.get_runtime_context().get_node_id())

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Load module state (parameters and buffers)."""
        self.module.load_state_dict(_tensors(weights))

    def get_weights(self) -> dict[str, np.ndarray]:
        """Module state as numpy arrays."""
        return {k: v.detach().cpu().numpy() for k, v in self.module.state_dict().items()}

    def call(
        self, method: str, state: dict[str, np.ndarray] | None, *args: Any
    ) -> tuple[Any, dict[str, np.ndarray] | None]:
        """``learner.<method>(*args)``, after loading ``state`` (part of the module's) if any.

        Returns:
            The method's result, and rank 0's new weights (``None`` from the others): one
            round trip for both.
        """
        if state:
            self.module.load_state_dict(_tensors(state), strict=False)
        result = getattr(self.learner, method)(*args)
        return result, self.get_weights() if self.shard.rank == 0 else None

    def apply(self, fn: Callable[[Any], T]) -> T:
        """``fn(learner)``."""
        return fn(self.learner)

    def stop(self) -> None:
        """Leave the process group."""
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


class LearnerGroup:
    """``num_learners`` :class:`LearnerActor` s, started, joined and fed identical inputs.

    Args:
        algorithm: The registered algorithm name.
        config: The validated algorithm config.
        observation_space: The module's observation space.
        action_space: The module's action space.
        weights: The driver module's initial state, loaded into every learner.
    """

    def __init__(
        self,
        algorithm: str,
        config: AlgorithmConfig,
        observation_space: gym.Space[Any],
        action_space: gym.Space[Any],
        weights: dict[str, np.ndarray],
    ) -> None:
        n = int(config.num_learners)
        if not ray.is_initialized():  # as the EnvRunnerGroup does for its actors
            ray.init(include_dashboard=False, configure_logging=False)
        self._check_resources(config)
        seed = config.seed
        if seed is None:  # still one seed for all: every learner walks the same minibatches
            seed = int(np.random.SeedSequence().entropy % 2**31)  # type: ignore[operator]
        remote: Any = ray.remote(
            num_cpus=config.num_cpus_per_learner, num_gpus=config.num_gpus_per_learner
        )(LearnerActor)
        as_dict, initial = config.to_dict(), ray.put(weights)  # one copy for all learners
        self._actors: list[Any] = [
            remote.options(max_restarts=0).remote(
                algorithm, as_dict, observation_space, action_space, Shard(rank, n, seed), initial
            )
            for rank in range(n)
        ]
        try:
            address, port = ray.get(self._actors[0].rendezvous.remote())
            self.node_ids: list[str] = ray.get(
                [a.join.remote(address, port, JOIN_TIMEOUT_S) for a in self._actors]
            )
        except ray.exceptions.RayError as err:
            self.stop()
            raise LearnerGroupError(f"the {n} learners could not start: {err}") from None

    @staticmethod
    def _check_resources(config: AlgorithmConfig) -> None:
        """Refuse at once what the cluster can never place (Ray would wait forever)."""
        missing = missing_resources(
            "learners",
            "num_learners",
            int(config.num_learners),
            {
                "CPU": ("num_cpus_per_learner", config.num_cpus_per_learner),
                "GPU": ("num_gpus_per_learner", config.num_gpus_per_learner),
            },
        )
        if missing:
            raise LearnerGroupError(missing)

    def __len__(self) -> int:
        return len(self._actors)

    def update(
        self, method: str, state: dict[str, np.ndarray] | None, *args: Any
    ) -> tuple[Any, dict[str, np.ndarray]]:
        """Run ``learner.<method>(*args)`` on every learner (the inputs put once).

        Args:
            method: The learner method.
            state: Module state to load first (the driver's filter statistics), or ``None``.
            *args: The method's arguments, the same for every learner.

        Returns:
            Learner 0's result (the others', all-reduced, are the same) and its new weights.
        """
        refs = [ray.put(arg) for arg in (state, *args)]  # one copy each, not one per learner
        (result, weights), *_ = ray.get([a.call.remote(method, *refs) for a in self._actors])
        return result, weights

    def foreach_learner(self, fn: Callable[[Any], T]) -> list[T]:
        """``fn(learner)`` on every learner, in rank order."""
        return ray.get([a.apply.remote(fn) for a in self._actors])

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Load module state into every learner."""
        ref = ray.put(weights)
        ray.get([a.set_weights.remote(ref) for a in self._actors])

    def get_weights(self) -> list[dict[str, np.ndarray]]:
        """Every learner's module state, in rank order."""
        return ray.get([a.get_weights.remote() for a in self._actors])

    def stop(self) -> None:
        """Leave the process group and end the actors."""
        for actor in self._actors:
            with contextlib.suppress(ray.exceptions.RayError):
                ray.get(actor.stop.remote(), timeout=10)
            ray.kill(actor)
        self._actors = []
