"""Optimizer and gradient-clipping helpers shared by the learners (fast paths for small nets)."""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["clip_gradients", "make_adam"]


def make_adam(
    params: Iterable[torch.nn.Parameter], lr: float, eps: float = 1e-8
) -> torch.optim.Adam:
    """Adam with the fused kernel (one kernel for all parameters) where the device supports it.

    Small RL networks spend more time in per-tensor Python overhead than in arithmetic, so
    the fused (or multi-tensor ``foreach``) implementation is several times faster.
    """
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, eps=eps, fused=True)
    except (RuntimeError, ValueError):  # device without a fused kernel
        return torch.optim.Adam(params, lr=lr, eps=eps, foreach=True)


def clip_gradients(params: Iterable[torch.nn.Parameter], max_norm: float | None) -> float:
    """Clip the global gradient norm (``None``: no clipping) and return the norm before it."""
    limit = float("inf") if max_norm is None else max_norm
    norm = torch.nn.utils.clip_grad_norm_(list(params), limit, foreach=True)
    return float(norm)
