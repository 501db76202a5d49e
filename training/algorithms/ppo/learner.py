"""PPO's learner: GAE, then minibatch epochs of the clipped surrogate objective.

Reads top to bottom like the papers: advantages by GAE (Schulman et al., 2016) with
terminated/truncated kept apart, then for each epoch and minibatch the clipped surrogate,
the (optionally clipped) value loss, the entropy bonus and an optional adaptive KL penalty
(Schulman et al., 2017).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from training import columns as cols
from training.algorithms.ppo.config import PPOTrainingSection
from training.algorithms.ppo.gae import compute_gae
from training.algorithms.ppo.module import PPOModule
from training.algorithms.ppo.recurrent import build_sequence_batch, sgd_step_sequences
from training.distributed import LOCAL, Shard, all_reduce_gradients, all_reduce_metrics
from training.distributions import ActionDistribution
from training.env_runner import Fragment
from training.optim import clip_gradients, make_adam

__all__ = ["PPOBatch", "PPOLearner", "compute_gae"]


class PPOBatch(NamedTuple):
    """Flat rows of valid transitions, ready for minibatching."""

    obs: list[Tensor]
    actions: Tensor
    logp_old: Tensor
    advantages: Tensor
    value_targets: Tensor
    vf_preds: Tensor


class PPOLearner:
    """Updates a :class:`PPOModule` from fragments.

    Args:
        module: The learner's module (on ``device``).
        config: PPO's hyper-parameters.
        device: Where the update runs.
        shard: This learner's place among data-parallel learners (default: the only one).
            Every learner builds the whole batch and walks the same minibatch order; each
            trains on its slice of every minibatch.
    """

    def __init__(
        self,
        module: PPOModule,
        config: PPOTrainingSection,
        device: torch.device,
        shard: Shard = LOCAL,
    ) -> None:
        self.module = module
        self.config = config
        self.device = device
        self.shard = shard
        self._generator = shard.generator(device)
        self.optimizer = make_adam(module.parameters(), lr=config.lr, eps=1e-5)
        self.kl_coeff = float(config.kl_coeff)

    def _tensor(self, array: np.ndarray) -> Tensor:
        return torch.as_tensor(array, device=self.device)

    @torch.no_grad()
    def _values(self, leaves: list[np.ndarray]) -> np.ndarray:
        batch = [self._tensor(x.reshape(-1, *x.shape[2:])) for x in leaves]
        return self.module.compute_values(batch).cpu().numpy()

    def build_batch(self, fragments: list[Fragment]) -> PPOBatch:
        """GAE per fragment, then the valid rows of all fragments concatenated."""
        gamma, lambda_ = self.config.gamma, self.config.lambda_
        parts: dict[str, list[Any]] = {k: [] for k in ("act", "logp", "adv", "ret", "vf")}
        obs_parts: list[list[np.ndarray]] = []
        for frag in fragments:
            steps, n = frag.rewards.shape
            # One forward pass for V of every row plus the observation after the last row.
            stacked = [
                np.concatenate([o, nxt[None]], axis=0)
                for o, nxt in zip(frag.obs, frag.next_obs, strict=True)
            ]
            all_values = self._values(stacked).reshape(steps + 1, n)
            values, next_values = all_values[:-1], all_values[1:]
            adv = compute_gae(
                frag.rewards, values, next_values, frag.terminated, frag.truncated, gamma, lambda_
            )
            mask = frag.valid
            obs_parts.append([o[mask] for o in frag.obs])
            parts["act"].append(frag.actions[mask])
            parts["logp"].append(frag.extras[cols.ACTION_LOGP][mask])
            parts["adv"].append(adv[mask])
            parts["ret"].append((adv + values)[mask])
            parts["vf"].append(values[mask])
        cat = {k: np.concatenate(v) for k, v in parts.items()}
        return PPOBatch(
            obs=[self._tensor(np.concatenate(leaf)) for leaf in zip(*obs_parts, strict=True)],
            actions=self._tensor(cat["act"]),
            logp_old=self._tensor(cat["logp"]).float(),
            advantages=self._tensor(cat["adv"]).float(),
            value_targets=self._tensor(cat["ret"]).float(),
            vf_preds=self._tensor(cat["vf"]).float(),
        )

    def update(self, fragments: list[Fragment], lr: float) -> dict[str, float]:
        """One PPO update over the fragments; returns the learner metrics.

        A recurrent module trains on sequences (:mod:`training.algorithms.ppo.recurrent`):
        ``minibatch_size`` then counts rows, in whole sequences of ``max_seq_len``.
        """
        cfg = self.config
        batch: Any
        if self.module.is_recurrent:
            batch = build_sequence_batch(self, fragments)
            step: Any = sgd_step_sequences
            length = self.module.model_config.max_seq_len
            units = batch.actions.shape[0]  # sequences
            minibatch = min(max(1, cfg.minibatch_size // length), units)
        else:
            batch = self.build_batch(fragments)
            step = PPOLearner._sgd_step
            length, units = 1, batch.actions.shape[0]  # rows
            minibatch = min(cfg.minibatch_size, units)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        sums: dict[str, float] = {}
        count = 0
        for _ in range(cfg.num_epochs):
            order = torch.randperm(units, device=self.device, generator=self._generator)
            for start in range(0, units - minibatch + 1, minibatch):
                idx = order[start : start + minibatch]
                stats = step(self, batch, idx)
                for key, value in stats.items():
                    sums[key] = sums.get(key, 0.0) + value
                count += 1
        metrics = {key: value / max(count, 1) for key, value in sums.items()}
        # The same mean KL on every learner, so that all adapt kl_coeff alike.
        metrics = all_reduce_metrics(metrics, 1.0 / self.shard.world_size, self.device)
        if self.kl_coeff > 0:  # adaptive KL penalty (PPO paper, section 4)
            if metrics["mean_kl_loss"] > 2.0 * cfg.kl_target:
                self.kl_coeff *= 1.5
            elif metrics["mean_kl_loss"] < 0.5 * cfg.kl_target:
                self.kl_coeff *= 0.5
        rows = batch.mask.cpu().numpy() if self.module.is_recurrent else slice(None)
        targets = batch.value_targets.cpu().numpy()[rows]
        variance = float(np.var(targets))
        residual = float(np.var(targets - batch.vf_preds.cpu().numpy()[rows]))
        metrics["vf_explained_var"] = 1.0 - residual / variance if variance > 0 else float("nan")
        metrics["curr_kl_coeff"] = self.kl_coeff
        metrics["lr"] = lr
        metrics["num_module_steps_trained"] = float(count * minibatch * length)
        return metrics

    def _sgd_step(self, batch: PPOBatch, minibatch: Tensor) -> dict[str, float]:
        cfg = self.config
        advantages = batch.advantages[minibatch]
        if cfg.normalize_advantages and advantages.numel() > 1:  # over the whole minibatch
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        # This learner's rows of the minibatch (all of them for a lone learner).
        part = self.shard.slice(torch.arange(minibatch.numel(), device=self.device))
        share = part.numel() / minibatch.numel()
        idx = minibatch[part]
        advantages = advantages[part]
        obs = [leaf[idx] for leaf in batch.obs]
        actions, logp_old = batch.actions[idx], batch.logp_old[idx]
        targets, vf_old = batch.value_targets[idx], batch.vf_preds[idx]

        out = self.module.forward_train(obs)
        dist = ActionDistribution(self.module.action_space, out[cols.ACTION_DIST_INPUTS])
        logp = dist.log_prob(actions)
        log_ratio = logp - logp_old
        ratio = log_ratio.exp()

        # Clipped surrogate objective (maximised, so the loss is its negative).
        surrogate = torch.min(
            advantages * ratio,
            advantages * torch.clamp(ratio, 1.0 - cfg.clip_param, 1.0 + cfg.clip_param),
        )
        policy_loss = -surrogate.mean()

        # Value loss, optionally clipped around the value predicted at sampling time.
        values = out[cols.VF_PREDS]
        vf_loss_unclipped = (values - targets) ** 2
        if cfg.vf_clip_param is not None:
            clipped = vf_old + torch.clamp(values - vf_old, -cfg.vf_clip_param, cfg.vf_clip_param)
            vf_loss = 0.5 * torch.max(vf_loss_unclipped, (clipped - targets) ** 2).mean()
        else:
            vf_loss = 0.5 * vf_loss_unclipped.mean()

        entropy = dist.entropy().mean()
        approx_kl = ((ratio - 1.0) - log_ratio).mean()  # unbiased, low-variance KL estimate
        total = policy_loss + cfg.vf_loss_coeff * vf_loss - cfg.entropy_coeff * entropy
        if self.kl_coeff > 0:
            total = total + self.kl_coeff * approx_kl

        self.optimizer.zero_grad(set_to_none=True)
        total.backward()  # type: ignore[no-untyped-call]
        all_reduce_gradients(self.module.parameters(), share)  # the minibatch's mean gradient
        grad_norm = clip_gradients(self.module.parameters(), cfg.grad_clip)
        self.optimizer.step()

        with torch.no_grad():
            clip_fraction = ((ratio - 1.0).abs() > cfg.clip_param).float().mean()
        return {
            "policy_loss": policy_loss.item(),
            "vf_loss": vf_loss.item(),
            "total_loss": total.item(),
            "entropy": entropy.item(),
            "mean_kl_loss": approx_kl.item(),
            "clip_fraction": clip_fraction.item(),
            "gradients_global_norm": grad_norm,
        }
