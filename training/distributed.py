"""Data-parallel learning: one learner's place among N, and the collectives that keep N in step.

A learner that is one of ``N`` (see :mod:`training.learner_group`) trains on its slice of every
minibatch and, after each backward pass, all-reduces its gradients with the others
(:func:`all_reduce_gradients`), so every learner applies the same averaged gradient and the
weights stay identical without being sent around. Metrics that steer the training (PPO's
adaptive KL coefficient reads the mean KL) are all-reduced too (:func:`all_reduce_metrics`),
so every learner takes the same decision.

Slices may differ in size by a row (a minibatch of 129 rows over two learners): each learner
weights its gradient by its share of the rows before the sum, so the result is the mean
gradient of the whole minibatch, as one learner would compute it.

With one learner (the default, and the local learner in the driver) every function here is a
no-op: no process group exists, and nothing is copied.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import torch
import torch.distributed as dist

__all__ = [
    "LOCAL",
    "Shard",
    "all_reduce_gradients",
    "all_reduce_metrics",
    "backend_for",
    "init_process_group",
]


class Shard(NamedTuple):
    """Where a learner stands among the data-parallel learners.

    Attributes:
        rank: This learner's index, ``0 .. world_size - 1``.
        world_size: How many learners train together.
        seed: Seeds the minibatch order, identical on every learner (each takes its own slice of
            the same permutation); ``None`` for a lone learner, which uses torch's global RNG.
    """

    rank: int = 0
    world_size: int = 1
    seed: int | None = None

    def slice(self, rows: torch.Tensor) -> torch.Tensor:
        """This learner's part of a minibatch's row indices (near-equal, contiguous parts)."""
        if self.world_size == 1:
            return rows
        return torch.tensor_split(rows, self.world_size)[self.rank]

    def generator(self, device: torch.device) -> torch.Generator | None:
        """A generator for the minibatch order, the same on every learner (``None``: global)."""
        if self.seed is None:
            return None
        gen = torch.Generator(device=device)
        gen.manual_seed(self.seed)
        return gen


LOCAL = Shard()
"""The lone learner: all of every minibatch, no collectives."""


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def backend_for(device: torch.device) -> str:
    """``"nccl"`` for CUDA learners, ``"gloo"`` on the CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


def init_process_group(
    backend: str, address: str, port: int, rank: int, world_size: int, timeout_s: float
) -> None:
    """Join the learners' process group (every rank calls this; it returns once all have)."""
    from datetime import timedelta

    dist.init_process_group(
        backend,
        init_method=f"tcp://{address}:{port}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=timeout_s),
    )


def all_reduce_gradients(params: Iterable[torch.nn.Parameter], weight: float = 1.0) -> None:
    """Replace every gradient by the row-weighted sum over the learners (the mean gradient).

    Args:
        params: The parameters whose ``.grad`` a backward pass just filled.
        weight: This learner's share of the minibatch's rows (``1 / N`` for equal slices).

    One flat buffer and one collective per call: with small RL networks (tens of tensors of a
    few thousand values) the per-collective latency, not the bytes, is what costs.
    """
    if not _distributed():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads]).mul_(weight)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for grad in grads:
        count = grad.numel()
        grad.copy_(flat[offset : offset + count].view_as(grad))
        offset += count


def all_reduce_metrics(
    metrics: dict[str, float], weight: float, device: torch.device
) -> dict[str, float]:
    """The weighted sum of each metric over the learners (keys must match on every one).

    Args:
        metrics: This learner's metrics.
        weight: This learner's share (``1 / N`` gives the mean over the learners).
        device: The learner's device (NCCL reduces CUDA tensors only).
    """
    if not _distributed() or not metrics:
        return metrics
    keys = sorted(metrics)
    values = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=device)
    values *= weight
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return dict(zip(keys, values.tolist(), strict=True))
