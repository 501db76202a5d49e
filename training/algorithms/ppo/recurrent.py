"""PPO's update for a recurrent (LSTM) module: GAE along fragments, epochs over sequences.

The same objective as :mod:`training.algorithms.ppo.learner` (clipped surrogate, value loss,
entropy bonus, adaptive KL), computed along sequences of ``max_seq_len`` steps
(:mod:`training.algorithms.ppo.sequences`), every loss a mean over the minibatch's valid rows.
The values for GAE come from one pass along each whole fragment from its first row's recorded
state, so the value of the observation after the last row, and of an episode's final
observation where it was truncated, is read with the state the policy had there.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
from torch import Tensor

from training import columns as cols
from training.algorithms.ppo.config import PPOTrainingSection
from training.algorithms.ppo.gae import compute_gae
from training.algorithms.ppo.module import PPOModule
from training.algorithms.ppo.sequences import cut_sequences, episode_starts
from training.distributed import Shard, all_reduce_gradients, all_reduce_metrics
from training.distributions import ActionDistribution
from training.env_runner import Fragment
from training.optim import clip_gradients

__all__ = ["SequenceBatch", "build_sequence_batch", "sgd_step_sequences"]


class LearnerParts(Protocol):
    """What these steps use of :class:`~training.algorithms.ppo.learner.PPOLearner`."""

    config: PPOTrainingSection
    module: PPOModule
    device: torch.device
    shard: Shard
    kl_coeff: float

    @property
    def optimizer(self) -> torch.optim.Optimizer: ...

    def _tensor(self, array: np.ndarray) -> Tensor: ...


class SequenceBatch(NamedTuple):
    """``S`` training sequences of ``L`` steps, sequence-major ``(S, L, ...)``."""

    obs: list[Tensor]
    actions: Tensor
    logp_old: Tensor
    advantages: Tensor
    value_targets: Tensor
    vf_preds: Tensor
    state: dict[str, Tensor]
    starts: Tensor
    mask: Tensor
    previous: dict[str, Tensor]
    """The previous action and reward of every step, when the LSTM reads them."""


@torch.no_grad()
def _fragment_values(learner: LearnerParts, frag: Fragment) -> np.ndarray:
    """``V`` of every row and of the observation after the last, ``(T + 1, N)``."""
    stacked = [
        learner._tensor(np.concatenate([o, nxt[None]], axis=0))
        for o, nxt in zip(frag.obs, frag.next_obs, strict=True)
    ]
    valid = np.concatenate([frag.valid, np.ones((1, frag.valid.shape[1]), bool)])
    starts = learner._tensor(episode_starts(valid))
    state = {
        cols.STATE_IN_H: learner._tensor(frag.extras[cols.STATE_IN_H][0]),
        cols.STATE_IN_C: learner._tensor(frag.extras[cols.STATE_IN_C][0]),
    }
    previous = previous_columns(learner.module, frag)
    after = learner.module.next_previous(frag.actions[-1], frag.rewards[-1], frag.valid[-1])
    joined = {
        key: learner._tensor(np.concatenate([value, after[key][None]], axis=0))
        for key, value in previous.items()
    }
    out = learner.module.forward_train_sequences(stacked, state, starts, joined)
    values: np.ndarray = out[cols.VF_PREDS].cpu().numpy()
    return values


def previous_columns(module: PPOModule, frag: Fragment) -> dict[str, np.ndarray]:
    """The previous action and reward the runner fed each row, ``(T, N, ...)`` (if read)."""
    return {key: frag.extras[key] for key in module.initial_previous(1)}


def build_sequence_batch(learner: LearnerParts, fragments: list[Fragment]) -> SequenceBatch:
    """GAE per fragment, then every fragment cut into sequences of ``max_seq_len``."""
    cfg = learner.config
    length = learner.module.model_config.max_seq_len
    parts: list[Any] = []
    for frag in fragments:
        all_values = _fragment_values(learner, frag)
        values, next_values = all_values[:-1], all_values[1:]
        adv = compute_gae(
            frag.rewards,
            values,
            next_values,
            frag.terminated,
            frag.truncated,
            cfg.gamma,
            cfg.lambda_,
        )
        columns = [
            *frag.obs,
            frag.actions,
            frag.extras[cols.ACTION_LOGP],
            adv,
            adv + values,
            values,
            *previous_columns(learner.module, frag).values(),
        ]
        state = [frag.extras[cols.STATE_IN_H], frag.extras[cols.STATE_IN_C]]
        parts.append(cut_sequences(columns, state, frag.valid, length))
    leaves = len(fragments[0].obs)
    joined = [np.concatenate(c) for c in zip(*(p.columns for p in parts), strict=True)]
    tensor = learner._tensor
    return SequenceBatch(
        obs=[tensor(x) for x in joined[:leaves]],
        actions=tensor(joined[leaves]),
        logp_old=tensor(joined[leaves + 1]).float(),
        advantages=tensor(joined[leaves + 2]).float(),
        value_targets=tensor(joined[leaves + 3]).float(),
        vf_preds=tensor(joined[leaves + 4]).float(),
        state={
            cols.STATE_IN_H: tensor(np.concatenate([p.state[0] for p in parts])),
            cols.STATE_IN_C: tensor(np.concatenate([p.state[1] for p in parts])),
        },
        starts=tensor(np.concatenate([p.starts for p in parts])),
        mask=tensor(np.concatenate([p.mask for p in parts])),
        previous={
            key: tensor(joined[leaves + 5 + k])
            for k, key in enumerate(learner.module.initial_previous(1))
        },
    )


def sgd_step_sequences(
    learner: LearnerParts, batch: SequenceBatch, minibatch: Tensor
) -> dict[str, float]:
    """One gradient step on a minibatch of sequences (this learner's slice of them)."""
    cfg = learner.config
    mask = batch.mask[minibatch]
    count = mask.sum().clamp(min=1.0)
    advantages = batch.advantages[minibatch]
    if cfg.normalize_advantages and mask.sum() > 1:  # over the whole minibatch's valid rows
        valid_adv = advantages[mask]
        advantages = (advantages - valid_adv.mean()) / (valid_adv.std() + 1e-8)
    part = learner.shard.slice(torch.arange(minibatch.numel(), device=learner.device))
    idx = minibatch[part]
    mask, advantages = mask[part], advantages[part]
    weights = mask.float() / count  # each loss: a sum over my rows / the minibatch's rows

    def t_major(x: Tensor) -> Tensor:
        return x[idx].transpose(0, 1)

    out = learner.module.forward_train_sequences(
        [t_major(leaf) for leaf in batch.obs],
        {key: value[idx] for key, value in batch.state.items()},
        t_major(batch.starts),
        {key: t_major(value) for key, value in batch.previous.items()},
    )
    dist_inputs = out[cols.ACTION_DIST_INPUTS].transpose(0, 1)  # (b, L, D)
    rows = dist_inputs.shape[0] * dist_inputs.shape[1]
    dist = ActionDistribution(learner.module.action_space, dist_inputs.reshape(rows, -1))
    actions = batch.actions[idx]
    logp = dist.log_prob(actions.reshape(rows, *actions.shape[2:])).reshape(mask.shape)
    log_ratio = (logp - batch.logp_old[idx]) * mask
    ratio = log_ratio.exp()

    surrogate = torch.min(
        advantages * ratio,
        advantages * torch.clamp(ratio, 1.0 - cfg.clip_param, 1.0 + cfg.clip_param),
    )
    policy_loss = -(surrogate * weights).sum()

    values = out[cols.VF_PREDS].transpose(0, 1)
    targets, vf_old = batch.value_targets[idx], batch.vf_preds[idx]
    vf_loss_rows = (values - targets) ** 2
    if cfg.vf_clip_param is not None:
        clipped = vf_old + torch.clamp(values - vf_old, -cfg.vf_clip_param, cfg.vf_clip_param)
        vf_loss_rows = torch.max(vf_loss_rows, (clipped - targets) ** 2)
    vf_loss = 0.5 * (vf_loss_rows * weights).sum()

    entropy = (dist.entropy().reshape(mask.shape) * weights).sum()
    approx_kl = (((ratio - 1.0) - log_ratio) * weights).sum()
    total = policy_loss + cfg.vf_loss_coeff * vf_loss - cfg.entropy_coeff * entropy
    if learner.kl_coeff > 0:
        total = total + learner.kl_coeff * approx_kl

    learner.optimizer.zero_grad(set_to_none=True)
    total.backward()  # type: ignore[no-untyped-call]
    all_reduce_gradients(learner.module.parameters(), 1.0)  # parts of the minibatch's mean
    grad_norm = clip_gradients(learner.module.parameters(), cfg.grad_clip)
    learner.optimizer.step()

    with torch.no_grad():
        clipped_rows = ((ratio - 1.0).abs() > cfg.clip_param).float()
        clip_fraction = (clipped_rows * weights).sum()
    parts = {
        "policy_loss": policy_loss.item(),
        "vf_loss": vf_loss.item(),
        "total_loss": total.item(),
        "entropy": entropy.item(),
        "mean_kl_loss": approx_kl.item(),
        "clip_fraction": clip_fraction.item(),
    }
    # Each learner holds a part of every figure: the sum is the minibatch's.
    metrics = all_reduce_metrics(parts, 1.0, learner.device)
    metrics["gradients_global_norm"] = grad_norm
    return metrics
