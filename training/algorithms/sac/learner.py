"""SAC's learner: soft Q-learning for the critics, the reparameterised actor, tuned alpha.

One :meth:`SACLearner.update` is one gradient step of Algorithm 1 in Haarnoja et al. (2018,
"Soft Actor-Critic Algorithms and Applications"), in the paper's order: the critics, the
policy, the temperature, then the Polyak update of the target critics.
"""

from __future__ import annotations

import copy
import math
from typing import Any, NamedTuple

import numpy as np
import torch

from training.algorithms.sac.config import SACTrainingSection
from training.algorithms.sac.module import SACModule
from training.distributed import LOCAL, Shard, all_reduce_gradients, all_reduce_metrics
from training.optim import clip_gradients, make_adam
from training.preprocessing import PreprocessedObs
from training.replay_buffers import ReplayBatch

__all__ = ["SACBatch", "SACLearner", "UpdateResult"]


class SACBatch(NamedTuple):
    """A replayed batch as tensors on the learner's device, ready for the losses.

    Attributes:
        obs: Observation leaves, each ``(B, ...)``.
        actions: ``(B, action_dim)`` actions taken, normalised to ``[-1, 1]``.
        rewards: ``(B,)`` discounted n-step rewards.
        next_obs: Observation leaves ``k`` steps later, each ``(B, ...)``.
        not_terminated: ``(B,)`` 0.0 where the transition ended its episode, else 1.0 (a
            truncation keeps 1.0: the target bootstraps).
        discounts: ``(B,)`` ``gamma ** k`` for the ``k`` steps each transition spans.
        weights: ``(B,)`` importance-sampling weights (ones for uniform replay).
    """

    obs: list[torch.Tensor]
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: list[torch.Tensor]
    not_terminated: torch.Tensor
    discounts: torch.Tensor
    weights: torch.Tensor


class UpdateResult(NamedTuple):
    """What one update gives back: the metrics, and the TD errors for prioritized replay."""

    metrics: dict[str, float]
    td_errors: np.ndarray


class SACLearner:
    """Updates a :class:`SACModule` from replayed transitions.

    Args:
        module: Actor and critics (on ``device``).
        config: SAC's hyper-parameters.
        device: Where the update runs.
        shard: This learner's place among data-parallel learners (default: the only one):
            each trains on its slice of every replayed batch and all-reduces its gradients,
            so that all take the batch's mean gradient and stay identical.
    """

    def __init__(
        self,
        module: SACModule,
        config: SACTrainingSection,
        device: torch.device,
        shard: Shard = LOCAL,
    ) -> None:
        self.module = module
        self.config = config
        self.device = device
        self.shard = shard
        self.target_q_networks = copy.deepcopy(module.q_networks)
        self.target_q_networks.requires_grad_(False)
        self.critic_params: list[torch.Tensor] = list(module.q_networks.parameters())
        self.actor_params = [*module.pi_encoder.parameters(), *module.pi_head.parameters()]
        self.log_alpha = torch.nn.Parameter(
            torch.tensor(math.log(config.initial_alpha), device=device)
        )
        if config.target_entropy == "auto":
            self.target_entropy = -float(module.action_dim)
        else:
            self.target_entropy = float(config.target_entropy)
        self.critic_optimizer = make_adam(module.q_networks.parameters(), lr=config.critic_lr)
        self.actor_optimizer = make_adam(self.actor_params, lr=config.actor_lr)
        self.alpha_optimizer = make_adam([self.log_alpha], lr=config.alpha_lr)

    @property
    def alpha(self) -> float:
        """The entropy coefficient now."""
        return float(self.log_alpha.detach().exp())

    def _tensors(self, batch: ReplayBatch) -> SACBatch:
        world = self.shard.world_size
        rows = self.shard.slice(torch.arange(len(batch.actions))).numpy() if world > 1 else None

        def to(array: Any) -> torch.Tensor:
            return torch.as_tensor(
                array if rows is None else np.asarray(array)[rows], device=self.device
            )

        module = self.module
        weights = batch.weights
        if weights is None:
            weights = np.ones(len(batch.actions), np.float32)
        actions = to(batch.actions)
        actions = actions.reshape(len(actions), -1).float()
        return SACBatch(
            obs=[to(x) for x in batch.obs],
            actions=(actions - module.action_low) / ((module.action_high - module.action_low) / 2)
            - 1.0,
            rewards=to(batch.rewards),
            next_obs=[to(x) for x in batch.next_obs],
            not_terminated=1.0 - to(batch.terminated).float(),
            discounts=to(batch.discounts),
            weights=to(weights),
        )

    def _step(
        self, optimizer: torch.optim.Optimizer, loss: torch.Tensor, params: list[Any], share: float
    ) -> float | None:
        """Backward, the learners' mean gradient, and step.

        Returns the gradient norm only when clipping (it costs ~0.2 ms a call).
        """
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        all_reduce_gradients(params, share)
        limit = self.config.grad_clip
        norm = None if limit is None else clip_gradients(params, limit)
        optimizer.step()
        return norm

    def update_many(self, batches: list[ReplayBatch]) -> list[UpdateResult]:
        """:meth:`update` on each batch (one call per sampling round for learner actors)."""
        return [self.update(batch) for batch in batches]

    def update(self, batch: ReplayBatch) -> UpdateResult:
        """One gradient step on each loss, then the target update.

        With data-parallel learners the TD errors are this learner's rows only.
        """
        module, b = self.module, self._tensors(batch)
        alpha = self.log_alpha.detach().exp()
        rows = len(b.rewards)
        share = rows / len(batch.actions)
        # s and s' go through the preprocessing and the actor as one batch: the actor is not
        # updated until step 2, so pi(.|s') for the target and pi(.|s) for the actor loss
        # come from the same weights either way, at the cost of one forward pass, not two.
        both = module.encode_inputs(
            [torch.cat(pair) for pair in zip(b.obs, b.next_obs, strict=True)]
        )
        obs = PreprocessedObs(both.flat[:rows], [image[:rows] for image in both.images])
        next_obs = PreprocessedObs(both.flat[rows:], [image[rows:] for image in both.images])
        new_actions, new_logp = module.distribution(module.dist_inputs(both)).rsample_normalized()
        actions, logp = new_actions[:rows], new_logp[:rows]

        # 1. Critics: J_Q = E[1/2 (Q_i(s, a) - y)^2] with the soft target
        #    y = r + gamma^k (1 - terminated) (min_i Q_targ_i(s', a') - alpha log pi(a'|s')),
        #    a' ~ pi(.|s') drawn fresh (not the replayed next action).
        with torch.no_grad():
            next_actions, next_logp = new_actions[rows:].detach(), new_logp[rows:].detach()
            next_q = self.target_q_networks(next_obs, next_actions).min(dim=1).values
            target = b.rewards + b.discounts * b.not_terminated * (next_q - alpha * next_logp)
        q_taken = module.q_values(obs, b.actions)  # (B, num_q)
        td_errors = q_taken - target.unsqueeze(1)
        critic_loss = 0.5 * (b.weights.unsqueeze(1) * td_errors.pow(2)).mean(dim=0).sum()
        critic_norm = self._step(self.critic_optimizer, critic_loss, self.critic_params, share)

        # 2. Actor: J_pi = E[alpha log pi(a~|s) - min_i Q_i(s, a~)], a~ reparameterised,
        #    against the critics just updated. They are frozen here so the backward pass
        #    skips their weight gradients.
        module.q_networks.requires_grad_(False)
        try:
            q_new = module.q_values(obs, actions).min(dim=1).values
            actor_loss = (b.weights * (alpha * logp - q_new)).mean()
            actor_norm = self._step(self.actor_optimizer, actor_loss, self.actor_params, share)
        finally:
            module.q_networks.requires_grad_(True)

        # 3. Temperature: J(alpha) = E[-alpha (log pi(a~|s) + target entropy)], on log(alpha).
        alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        self.alpha_optimizer.zero_grad(set_to_none=True)
        alpha_loss.backward()  # type: ignore[no-untyped-call]
        all_reduce_gradients([self.log_alpha], share)
        self.alpha_optimizer.step()

        # 4. Targets: theta_targ <- tau theta + (1 - tau) theta_targ.
        self.update_targets(self.config.tau)

        metrics = {
            "critic_loss": critic_loss.item(),
            "actor_loss": actor_loss.item(),
            "alpha_loss": alpha_loss.item(),
            "alpha_value": float(alpha),
            "log_alpha_value": self.log_alpha.item(),
            "target_entropy": self.target_entropy,
            "entropy": -logp.detach().mean().item(),
            "mean_q": q_taken.detach().mean().item(),
            "max_q": q_taken.detach().max().item(),
            "min_q": q_taken.detach().min().item(),
            "td_error_mean": td_errors.detach().abs().mean().item(),
        }
        if critic_norm is not None and actor_norm is not None:
            metrics["critic_gradients_global_norm"] = critic_norm
            metrics["actor_gradients_global_norm"] = actor_norm
        metrics = all_reduce_metrics(metrics, share, self.device)
        # The first critic's errors drive prioritized replay (as RLlib does).
        return UpdateResult(metrics, td_errors.detach()[:, 0].cpu().numpy())

    @torch.no_grad()
    def update_targets(self, tau: float) -> None:
        """Polyak-average the target critics towards the critics (one fused op per list)."""
        targets: list[torch.Tensor] = list(self.target_q_networks.parameters())
        torch._foreach_lerp_(targets, self.critic_params, tau)
        for target, online in zip(
            self.target_q_networks.buffers(), self.module.q_networks.buffers(), strict=True
        ):
            target.copy_(online)
