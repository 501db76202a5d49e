"""Validated sections of an algorithm config (pydantic models, one per fluent method).

Each fluent method of :class:`training.config.AlgorithmConfig` (``environment``,
``env_runners``, ``training``, ...) validates its keywords against one of these models: an
unknown key, a wrong type or an out-of-range value fails at once with the field named.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "DebuggingSection",
    "EnvRunnersSection",
    "EnvironmentSection",
    "EvaluationSection",
    "FaultToleranceSection",
    "ModelConfig",
    "OfflineDataSection",
    "ResourcesSection",
    "Section",
    "TrainingSection",
]

LogLevel = Literal["DEBUG", "INFO", "WARN", "WARNING", "ERROR"]


class Section(BaseModel):
    """Base of every config section: strict types, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)


class ModelConfig(Section):
    """Network architecture shared by every algorithm.

    Attributes:
        fcnet_hiddens: Sizes of the fully connected hidden layers.
        fcnet_activation: Activation between hidden layers.
        conv_filters: CNN layers for image observations as ``[out_channels, kernel, stride]``;
            ``None`` picks a Nature-CNN-like default sized to the image.
        vf_share_layers: Whether PPO's value head shares the policy's hidden layers.
        free_log_std: Whether a Gaussian policy's log-std is a free parameter (not a network
            output). Only ``True`` is supported: it keeps the exported graph simple.
        use_lstm: Put an LSTM between the encoder and the heads (PPO): the policy then carries
            a state from step to step (``Policy.get_initial_state``).
        lstm_cell_size: The LSTM's hidden and cell size.
        max_seq_len: Steps per training sequence: fragments are cut into sequences of this
            length, each starting from the state the runner had there.
        lstm_use_prev_action: Also feed the LSTM the action taken at the step before (one-hot
            for Discrete actions; zeros at an episode's first step).
        lstm_use_prev_reward: Also feed the LSTM the reward received at the step before.
    """

    fcnet_hiddens: list[int] = Field(default_factory=lambda: [64, 64], min_length=1)
    fcnet_activation: Literal["tanh", "relu", "silu", "elu"] = "tanh"
    conv_filters: list[list[int]] | None = None
    vf_share_layers: bool = False
    free_log_std: Literal[True] = True
    use_lstm: bool = False
    lstm_cell_size: int = Field(default=256, ge=1, le=65536)
    max_seq_len: int = Field(default=20, ge=1, le=100_000)
    lstm_use_prev_action: bool = False
    lstm_use_prev_reward: bool = False

    @field_validator("fcnet_hiddens")
    @classmethod
    def _positive_sizes(cls, value: list[int]) -> list[int]:
        if any(size < 1 for size in value):
            raise ValueError(f"every hidden layer size must be >= 1, got {value}")
        return value

    @field_validator("conv_filters")
    @classmethod
    def _conv_triples(cls, value: list[list[int]] | None) -> list[list[int]] | None:
        if value is not None and any(len(f) != 3 or min(f) < 1 for f in value):
            raise ValueError(
                f"expected [[out_channels, kernel, stride], ...] of ints >= 1, got {value}"
            )
        return value


class EnvironmentSection(Section):
    """Which environment to train on.

    Attributes:
        env: A registered gymnasium id (``"CartPole-v1"``), a ``"module:Class"`` entry point,
            or a class/callable taking ``env_config`` and returning a gymnasium env.
        env_config: Keyword arguments for the env (passed to ``gym.make`` for ids, or as the
            single argument of a class/callable).
        clip_actions: Clip Box actions into the action space before stepping the env.
    """

    env: Any = None
    env_config: dict[str, Any] = Field(default_factory=dict)
    clip_actions: bool = True

    @field_validator("env")
    @classmethod
    def _env_kind(cls, value: Any) -> Any:
        if value is None or isinstance(value, str) or callable(value):
            if isinstance(value, str) and not value.strip():
                raise ValueError("expected a non-empty gymnasium id or 'module:Class'")
            return value
        raise ValueError(
            "expected a registered gymnasium id, a 'module:Class' entry point, or a "
            f"class/callable taking env_config; got {type(value).__name__}"
        )


class EnvRunnersSection(Section):
    """Sampling: how many EnvRunner actors, how many envs each, how long a fragment.

    Attributes:
        num_env_runners: Remote EnvRunner actors; 0 samples in the driver process.
        num_envs_per_env_runner: Copies of the env in each runner's gymnasium vector env.
        rollout_fragment_length: Steps per env per sample call, or ``"auto"`` to divide the
            train batch evenly over all envs.
        observation_filter: ``"MeanStdFilter"`` normalises observations with running
            statistics merged across runners; ``"NoFilter"`` leaves them as they are.
        sample_timeout_s: How long the driver waits for one runner's samples.
        num_cpus_per_env_runner: CPUs reserved for each runner actor.
        num_gpus_per_env_runner: GPUs reserved for each runner actor.
        explore: What ``explore=None`` means in ``compute_single_action`` / ``compute_actions``
            (sampled actions when True, deterministic ones when False).
        max_requests_in_flight_per_env_runner: Sample requests an asynchronous algorithm
            (IMPALA) keeps queued on each remote runner, so it samples while the driver
            learns; the synchronous ones (PPO, DQN, SAC) ask one at a time.
        gym_env_vectorize_mode: ``"SYNC"`` steps a runner's envs one after another in its
            process; ``"ASYNC"`` runs each in a subprocess of its own (gymnasium's
            ``AsyncVectorEnv``) and steps them in parallel.
        remote_worker_envs: Put each env of a runner in a Ray actor of its own and step
            whichever are ready (SEED-style), batching their inference.
        remote_env_batch_wait_ms: With remote envs, how long to wait for more envs to be
            ready once one is; 0 acts as soon as one is ready.
        num_cpus_per_env: CPUs each remote env actor reserves (fractional: six envs at the
            default fit beside a runner on 2 CPUs).
    """

    num_env_runners: int = Field(default=0, ge=0)
    num_envs_per_env_runner: int = Field(default=1, ge=1)
    rollout_fragment_length: int | Literal["auto"] = "auto"
    observation_filter: Literal["NoFilter", "MeanStdFilter"] = "NoFilter"
    sample_timeout_s: float = Field(default=60.0, gt=0)
    num_cpus_per_env_runner: float = Field(default=1.0, ge=0)
    num_gpus_per_env_runner: float = Field(default=0.0, ge=0)
    explore: bool = True
    max_requests_in_flight_per_env_runner: int = Field(default=2, ge=1)
    gym_env_vectorize_mode: Literal["SYNC", "ASYNC"] = "SYNC"
    remote_worker_envs: bool = False
    remote_env_batch_wait_ms: float = Field(default=0.0, ge=0.0)
    num_cpus_per_env: float = Field(default=0.1, ge=0.0)

    @model_validator(mode="after")
    def _one_way_to_parallel_envs(self) -> EnvRunnersSection:
        if self.remote_worker_envs and self.gym_env_vectorize_mode == "ASYNC":
            raise ValueError(
                "remote_worker_envs=True and gym_env_vectorize_mode='ASYNC' both run the envs "
                "in parallel: pick one"
            )
        return self

    @field_validator("rollout_fragment_length")
    @classmethod
    def _fragment(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError(f"expected an int >= 1 or 'auto', got {value}")
        return value


class TrainingSection(Section):
    """Hyper-parameters common to every algorithm (algorithms subclass this).

    Attributes:
        gamma: Discount factor.
        lr: Learning rate of the Adam optimizer.
        train_batch_size: Env steps collected per training iteration.
        grad_clip: Max global gradient norm; ``None`` disables clipping.
        model: Network architecture.
    """

    gamma: float = Field(default=0.99, gt=0.0, le=1.0)
    lr: float = Field(default=3e-4, gt=0.0)
    train_batch_size: int = Field(default=4000, ge=1)
    grad_clip: float | None = Field(default=None, gt=0.0)
    model: ModelConfig = Field(default_factory=ModelConfig)


class ResourcesSection(Section):
    """Learner resources.

    Attributes:
        num_gpus: GPUs for the learner (0 runs it on the CPU; asking for a GPU where none
            exists fails at ``build()``).
        num_cpus_for_main_process: CPUs reserved for the driver/learner under Tune; also the
            learner's torch thread count.
    """

    num_gpus: float = Field(default=0.0, ge=0)
    num_cpus_for_main_process: float = Field(default=1.0, ge=0)


class LearnersSection(Section):
    """Data-parallel learners (RLlib's ``.learners()``).

    Attributes:
        num_learners: Learner actors that train together, each on a slice of every minibatch
            with gradients all-reduced (see :mod:`training.learner_group`); 0 keeps one
            learner in the driver (``resources(num_gpus=...)`` places it).
        num_cpus_per_learner: CPUs reserved for each learner actor; also its torch threads.
        num_gpus_per_learner: GPUs for each learner actor (CUDA learners reduce with NCCL);
            with ``num_learners=0``, a value above 0 puts the driver's learner on CUDA.
    """

    num_learners: int = Field(default=0, ge=0)
    num_cpus_per_learner: float = Field(default=1.0, gt=0)
    num_gpus_per_learner: float = Field(default=0.0, ge=0)


class FaultToleranceSection(Section):
    """What happens when an EnvRunner fails.

    Attributes:
        restart_failed_env_runners: Replace a failed runner and go on training.
        ignore_env_runner_failures: Drop a failed runner and go on with the others.
        restart_failed_sub_environments: Re-create a sub-env that raised inside a runner
            instead of failing the runner.
        max_num_env_runner_restarts: Restarts allowed over the whole run.
    """

    restart_failed_env_runners: bool = True
    ignore_env_runner_failures: bool = False
    restart_failed_sub_environments: bool = False
    max_num_env_runner_restarts: int = Field(default=1000, ge=0)

    @model_validator(mode="after")
    def _exclusive(self) -> FaultToleranceSection:
        if self.restart_failed_env_runners and self.ignore_env_runner_failures:
            raise ValueError(
                "restart_failed_env_runners and ignore_env_runner_failures cannot both be True: "
                "pick restarting failed runners or dropping them"
            )
        return self


class DebuggingSection(Section):
    """Logging and seeding.

    Attributes:
        log_level: Level of the ``training`` logger in the driver and the runners.
        seed: Seeds torch, the envs (runner ``i``, sub-env ``j`` get distinct derived seeds)
            and exploration; ``None`` is not reproducible.
    """

    log_level: LogLevel = "WARN"
    seed: int | None = None


class EvaluationSection(Section):
    """Periodic deterministic evaluation in the driver.

    Attributes:
        evaluation_interval: Evaluate every N training iterations; ``None`` never.
        evaluation_duration: Episodes per evaluation.
        evaluation_explore: Whether evaluation samples (``False``: deterministic actions).
    """

    evaluation_interval: int | None = Field(default=None, ge=1)
    evaluation_duration: int = Field(default=10, ge=1)
    evaluation_explore: bool = False


class OfflineDataSection(Section):
    """Episode traces.

    Attributes:
        output: Directory for episode traces as JSON lines (one file per runner);
            ``None`` writes none.
        output_max_file_size: Roll over to a new trace file past this many bytes.
    """

    output: str | None = None
    output_max_file_size: int = Field(default=64 * 1024 * 1024, ge=1024)
