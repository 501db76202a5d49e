"""DQN's learner: TD targets from a target network (double-Q optional), Huber or MSE loss."""

from __future__ import annotations

import copy
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias

from training.algorithms.dqn.config import DQNTrainingSection
from training.algorithms.dqn.module import DQNModule
from training.distributed import LOCAL, Shard, all_reduce_gradients, all_reduce_metrics
from training.optim import clip_gradients, make_adam
from training.replay_buffers import ReplayBatch

__all__ = ["DQNLearner", "TorchReplayBatch"]


class TorchReplayBatch(NamedTuple):
    """A :class:`ReplayBatch` as tensors on the learner's device, ready for the loss.

    Attributes:
        obs: Observation leaves, each ``(B, ...)``.
        next_obs: Observation leaves ``k`` steps later, each ``(B, ...)``.
        actions: ``(B,)`` action indices counted from 0 (the space's ``start`` removed).
        rewards: ``(B,)`` discounted n-step rewards.
        not_terminated: ``(B,)`` 0.0 where the transition ended its episode, else 1.0.
        discounts: ``(B,)`` ``gamma ** k`` for the ``k`` steps each transition spans.
    """

    obs: list[torch.Tensor]
    next_obs: list[torch.Tensor]
    actions: torch.Tensor
    rewards: torch.Tensor
    not_terminated: torch.Tensor
    discounts: torch.Tensor


class DQNLearner:
    """Updates a :class:`DQNModule` from replayed n-step transitions.

    Args:
        module: The online network (on ``device``).
        config: DQN's hyper-parameters.
        device: Where the update runs.
        shard: This learner's place among data-parallel learners (default: the only one);
            each learns from its slice of every replayed batch.
    """

    def __init__(
        self,
        module: DQNModule,
        config: DQNTrainingSection,
        device: torch.device,
        shard: Shard = LOCAL,
    ) -> None:
        self.module = module
        self.config = config
        self.device = device
        self.shard = shard
        self.target = copy.deepcopy(module)
        self.target.requires_grad_(False)
        self.optimizer = make_adam(module.parameters(), lr=config.lr)

    def sync_target(self) -> None:
        """``target <- tau * online + (1 - tau) * target`` (a copy when ``tau == 1``)."""
        tau = float(self.config.tau)
        with torch.no_grad():
            for target, online in zip(
                self.target.state_dict().values(), self.module.state_dict().values(), strict=True
            ):
                if target.dtype.is_floating_point and tau < 1.0:
                    target.mul_(1.0 - tau).add_(online, alpha=tau)
                else:
                    target.copy_(online)

    def _tensors(self, batch: ReplayBatch) -> TorchReplayBatch:
        world = self.shard.world_size
        rows = self.shard.slice(torch.arange(len(batch.actions))).numpy() if world > 1 else None

        def to(array: Any) -> torch.Tensor:
            picked = np.asarray(array) if rows is None else np.asarray(array)[rows]
            return torch.as_tensor(
                picked.copy() if not picked.flags.writeable else picked, device=self.device
            )

        return TorchReplayBatch(
            obs=[to(x) for x in batch.obs],
            next_obs=[to(x) for x in batch.next_obs],
            actions=to(batch.actions).long() - self.module.start,
            rewards=to(batch.rewards),
            not_terminated=1.0 - to(batch.terminated).float(),
            discounts=to(batch.discounts),
        )

    def update_many(self, batches: list[ReplayBatch], sync_target: bool) -> list[dict[str, float]]:
        """A gradient step on each batch, then the target update if asked.

        One call per sampling round, so that learner actors cost one round trip per round.
        """
        results = [self.update(batch) for batch in batches]
        if sync_target:
            self.sync_target()
        return results

    def update(self, batch: ReplayBatch) -> dict[str, float]:
        """One gradient step on a replayed batch (this learner's slice); returns the metrics."""
        cfg = self.config
        b = self._tensors(batch)
        share = len(b.actions) / len(batch.actions)

        # TD target: r + gamma^k * (1 - terminated) * Q_target(s', a*).
        with torch.no_grad():
            next_q_target = self.target.compute_q_values(b.next_obs)
            if cfg.double_q:  # a* chosen by the online network (double DQN)
                best = self.module.compute_q_values(b.next_obs).argmax(dim=1, keepdim=True)
            else:
                best = next_q_target.argmax(dim=1, keepdim=True)
            next_q = next_q_target.gather(1, best).squeeze(1)
            target = b.rewards + b.discounts * b.not_terminated * next_q

        q_values = self.module.compute_q_values(b.obs)
        q_taken = q_values.gather(1, b.actions.unsqueeze(1)).squeeze(1)
        td_error = q_taken - target
        if cfg.td_error_loss_fn == "huber":
            loss = F.smooth_l1_loss(q_taken, target)
        else:
            loss = F.mse_loss(q_taken, target)

        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        all_reduce_gradients(self.module.parameters(), share)  # the batch's mean gradient
        grad_norm = clip_gradients(self.module.parameters(), cfg.grad_clip)
        self.optimizer.step()
        metrics = {
            "qf_loss": loss.item(),
            "qf_mean": q_taken.mean().item(),
            "qf_max": q_values.max().item(),
            "td_error_mean": td_error.abs().mean().item(),
            "gradients_global_norm": grad_norm,
        }
        return all_reduce_metrics(metrics, share, self.device)
