"""Tiny, seeded configs the training tests build (one place for their hyper-parameters).

Each helper starts from the smallest layout the tests rely on; ``settings`` are flat settings
(as in ``AlgorithmConfig.to_dict()``) applied on top, so a test states only what it changes.
"""

from __future__ import annotations

from typing import Any

from training import DQNConfig, IMPALAConfig, PPOConfig, SACConfig

__all__ = ["tiny_dqn", "tiny_impala", "tiny_multi_agent_ppo", "tiny_ppo", "tiny_sac"]


def tiny_ppo(
    env: Any = "CartPole-v1", *, env_config: dict[str, Any] | None = None, **settings: Any
) -> PPOConfig:
    """PPO, 2 envs in the driver, 32-step fragments, 64-step batches, one epoch, seed 0."""
    config = (
        PPOConfig()
        .environment(env, env_config=env_config or {})
        .env_runners(num_envs_per_env_runner=2, rollout_fragment_length=32)
        .training(train_batch_size=64, minibatch_size=32, num_epochs=1)
        .debugging(seed=0)
    )
    if settings:
        config.update_from_dict(settings)
    return config


def tiny_dqn(env: Any = "CartPole-v1", **settings: Any) -> DQNConfig:
    """DQN, 2 envs in the driver, 8-step fragments, learning after 32 steps, 3-step returns."""
    config = (
        DQNConfig()
        .environment(env)
        .env_runners(num_envs_per_env_runner=2, rollout_fragment_length=8)
        .training(
            train_batch_size=16,
            num_steps_sampled_before_learning_starts=32,
            min_sample_timesteps_per_iteration=64,
            target_network_update_freq=32,
            n_step=3,
        )
        .debugging(seed=0)
    )
    if settings:
        config.update_from_dict(settings)
    return config


def tiny_sac(
    env: Any = "Pendulum-v1", *, env_config: dict[str, Any] | None = None, **settings: Any
) -> SACConfig:
    """SAC, 2 envs in the driver, 16-16 networks, batches of 32, learning after 64 steps."""
    small = {"fcnet_hiddens": [16, 16], "fcnet_activation": "relu"}
    config = (
        SACConfig()
        .environment(env, env_config=env_config or {})
        .env_runners(num_envs_per_env_runner=2)
        .training(
            train_batch_size=32,
            num_steps_sampled_before_learning_starts=64,
            min_sample_timesteps_per_iteration=128,
            replay_buffer_config={"capacity": 1000},
            model=small,
            q_model=small,
        )
        .debugging(seed=0)
    )
    if settings:
        config.update_from_dict(settings)
    return config


def tiny_impala(
    env: Any = "CartPole-v1", *, env_config: dict[str, Any] | None = None, **settings: Any
) -> IMPALAConfig:
    """IMPALA, 2 envs in the driver, 16-step fragments, 64-row batches, 128 steps a call."""
    config = (
        IMPALAConfig()
        .environment(env, env_config=env_config or {})
        .env_runners(num_envs_per_env_runner=2, rollout_fragment_length=16)
        .training(train_batch_size=64, min_sample_timesteps_per_iteration=128)
        .debugging(seed=0)
    )
    if settings:
        config.update_from_dict(settings)
    return config


def tiny_multi_agent_ppo(**settings: Any) -> PPOConfig:
    """PPO on two-agent CartPole, a policy per agent (``p0``, ``p1``), 256-step batches."""
    from training.example_envs import policy_per_agent

    config = (
        PPOConfig()
        .environment("make_multi_agent:CartPole-v1", env_config={"num_agents": 2})
        .env_runners(num_envs_per_env_runner=2)
        .training(train_batch_size=256, minibatch_size=64, num_epochs=2)
        .multi_agent(policies={"p0", "p1"}, policy_mapping_fn=policy_per_agent)
        .debugging(seed=0)
    )
    if settings:
        config.update_from_dict(settings)
    return config
