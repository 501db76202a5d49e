"""V-trace (Espeholt et al., 2018, section 4.1): off-policy value targets and advantages.

A pure function of time-major ``(T, N)`` tensors. The runners sampled with a behaviour policy
``mu`` (slightly stale weights); the learner's target policy is ``pi``. With the truncated
importance weights ``rho_t = min(rho_bar, pi/mu)`` and ``c_t = min(c_bar, pi/mu)``:

    delta_t = rho_t * (r_t + gamma * V(x_{t+1}) - V(x_t))
    v_t - V(x_t) = delta_t + gamma * c_t * (v_{t+1} - V(x_{t+1}))

computed backwards, and the policy-gradient advantage is
``rho_pg_t * (r_t + gamma * v_{t+1} - V(x_t))``.

Episode ends follow gymnasium 1.x as PPO's GAE does: a ``terminated`` step has no successor
value (the target is ``r_t``); a ``truncated`` step bootstraps from ``V`` of the episode's
final observation (``next_values[t]``) and, like a terminated one, stops the recursion, so
nothing flows across episodes. With ``pi == mu`` and both clips at 1 (or ``vtrace=False``),
``v_t`` are the n-step returns bootstrapped at the fragment's end: GAE with ``lambda=1``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["VTraceReturns", "vtrace"]


class VTraceReturns(NamedTuple):
    """V-trace's outputs, each ``(T, N)``.

    Attributes:
        vs: Value targets ``v_t`` for the value loss.
        pg_advantages: ``rho_pg_t * (r_t + gamma * v_{t+1} - V(x_t))`` for the policy loss.
        rhos: The untruncated importance weights ``pi/mu`` (for statistics).
    """

    vs: Tensor
    pg_advantages: Tensor
    rhos: Tensor


@torch.no_grad()
def vtrace(
    behaviour_logp: Tensor,
    target_logp: Tensor,
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    *,
    gamma: float,
    clip_rho_threshold: float = 1.0,
    clip_pg_rho_threshold: float = 1.0,
    clip_c_threshold: float = 1.0,
) -> VTraceReturns:
    """V-trace targets for one time-major fragment.

    Args:
        behaviour_logp: ``log mu(a_t|x_t)``, recorded when the action was sampled.
        target_logp: ``log pi(a_t|x_t)`` under the learner's current weights.
        rewards: ``r_t``.
        values: ``V(x_t)``.
        next_values: ``V(x_{t+1})``: the next row's observation, ``V`` of the final
            observation after a truncated step, and ``V`` of the observation after the
            fragment for its last row.
        terminated: True end of an episode (no bootstrap).
        truncated: Time limit (bootstrap from ``next_values``).
        gamma: Discount factor.
        clip_rho_threshold: ``rho_bar`` (the fixed point's policy: 1 is ``pi``).
        clip_pg_rho_threshold: Truncation of the policy gradient's importance weight.
        clip_c_threshold: ``c_bar`` (how far the traces reach; 1 in the paper).

    Returns:
        The targets, advantages and importance weights, all ``(T, N)`` and float32.
    """
    values, next_values, rewards = values.float(), next_values.float(), rewards.float()
    rhos = torch.exp(target_logp.float() - behaviour_logp.float())
    clipped_rhos = torch.clamp(rhos, max=clip_rho_threshold)
    cs = torch.clamp(rhos, max=clip_c_threshold)
    not_terminated = (~terminated.bool()).float()
    not_done = (~(terminated.bool() | truncated.bool())).float()

    # delta_t: the TD error weighted by rho_t; a terminated step has no successor value.
    deltas = clipped_rhos * (rewards + gamma * not_terminated * next_values - values)
    vs_minus_v = torch.zeros_like(values)
    acc = torch.zeros_like(values[0])
    for t in reversed(range(values.shape[0])):
        acc = deltas[t] + gamma * cs[t] * not_done[t] * acc
        vs_minus_v[t] = acc
    vs = values + vs_minus_v

    # v_{t+1} for the policy gradient: the next row's target inside an episode; at an
    # episode's end (or the fragment's) the bootstrap value, zeroed below when terminated.
    vs_next = torch.cat([vs[1:], next_values[-1:]], dim=0)
    vs_next = torch.where(not_done.bool(), vs_next, next_values)
    clipped_pg_rhos = torch.clamp(rhos, max=clip_pg_rho_threshold)
    pg_advantages = clipped_pg_rhos * (rewards + gamma * not_terminated * vs_next - values)
    return VTraceReturns(vs=vs, pg_advantages=pg_advantages, rhos=rhos)
