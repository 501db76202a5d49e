"""``AlgorithmConfig``: the fluent, eagerly validated config every algorithm is built from.

Usage follows RLlib's "Getting Started" guide::

    config = (PPOConfig()
              .environment("CartPole-v1")
              .env_runners(num_env_runners=1)
              .training(lr=1e-3))
    algo = config.build()

Every fluent method validates its keywords at once (see :mod:`training.config_sections`) and
raises :class:`ConfigError` naming the field and what is allowed. Ray Tune search spaces
(``tune.grid_search([...])``, ``tune.uniform(...)``) are accepted anywhere a value is and are
validated after Tune resolves them.
"""

from __future__ import annotations

import copy
import difflib
import importlib
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pydantic import ValidationError
from ray.tune.tune import _Config

from training.config_sections import (
    DebuggingSection,
    EnvironmentSection,
    EnvRunnersSection,
    EvaluationSection,
    FaultToleranceSection,
    LearnersSection,
    OfflineDataSection,
    ResourcesSection,
    Section,
    TrainingSection,
)
from training.config_validation import ConfigError, describe_validation_error, is_search_space
from training.multi_agent.spec import MultiAgentSection, policies_to_json

if TYPE_CHECKING:
    from training.algorithm import Algorithm

__all__ = ["AlgorithmConfig", "ConfigError", "NotProvided"]

Self = TypeVar("Self", bound="AlgorithmConfig")


class _NotProvided:
    def __repr__(self) -> str:
        return "NotProvided"


NotProvided: Any = _NotProvided()
"""Default of every fluent keyword: the value is left as it is."""


class AlgorithmConfig(_Config):
    """Base config: environment, sampling, training, resources, fault tolerance, debugging.

    Subclasses (``PPOConfig``, ``DQNConfig``) set ``training_section`` to a model with their
    own hyper-parameters and ``algo_class_path`` to the algorithm they build.
    """

    training_section: ClassVar[type[TrainingSection]] = TrainingSection
    algo_class_path: ClassVar[str] = ""

    def __init__(self) -> None:
        sections: dict[str, type[Section]] = {
            "environment": EnvironmentSection,
            "env_runners": EnvRunnersSection,
            "training": self.training_section,
            "resources": ResourcesSection,
            "learners": LearnersSection,
            "fault_tolerance": FaultToleranceSection,
            "debugging": DebuggingSection,
            "evaluation": EvaluationSection,
            "offline_data": OfflineDataSection,
            "multi_agent": MultiAgentSection,
        }
        object.__setattr__(self, "_models", sections)
        object.__setattr__(self, "_values", {name: m() for name, m in sections.items()})
        object.__setattr__(self, "_search", {})

    # ----------------------------------------------------------------- attribute access
    def _section_of(self, key: str) -> str | None:
        for name, model in self._models.items():
            if key in model.model_fields:
                return str(name)
        return None

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        section = self._section_of(key)
        if section is None:
            raise AttributeError(f"{type(self).__name__} has no setting {key!r}")
        if key in self._search:
            return self._search[key]
        return getattr(self._values[section], key)

    def __setattr__(self, key: str, value: Any) -> None:
        section = self._section_of(key)
        if section is None:
            raise ConfigError(f"{type(self).__name__} has no setting {key!r}")
        self._update(section, {key: value})

    def _update(self: Self, section: str, updates: dict[str, Any]) -> Self:
        updates = {k: v for k, v in updates.items() if v is not NotProvided}
        model = self._models[section]
        current = self._values[section].model_dump()
        plain: dict[str, Any] = {}
        search = dict(self._search)  # committed only once the section validates
        for key, value in updates.items():
            if is_search_space(value) and key in model.model_fields:
                search[key] = value
            else:
                search.pop(key, None)
                plain[key] = value
        merged = {**current, **plain}
        for key in search:
            if key in model.model_fields:
                merged.pop(key, None)
        try:
            validated = model.model_validate(merged)
        except ValidationError as err:
            details = describe_validation_error(err, model)
            raise ConfigError(f"{type(self).__name__}.{section}(): {details}") from None
        self._values[section] = validated
        object.__setattr__(self, "_search", search)
        return self

    # ----------------------------------------------------------------- fluent sections
    def environment(
        self: Self,
        env: Any = NotProvided,
        *,
        env_config: Any = NotProvided,
        clip_actions: Any = NotProvided,
        **unknown: Any,
    ) -> Self:
        """Set the env (gymnasium id, ``"module:Class"``, or class/callable) and its config."""
        return self._update(
            "environment",
            {"env": env, "env_config": env_config, "clip_actions": clip_actions, **unknown},
        )

    def env_runners(
        self: Self,
        *,
        num_env_runners: Any = NotProvided,
        num_envs_per_env_runner: Any = NotProvided,
        rollout_fragment_length: Any = NotProvided,
        observation_filter: Any = NotProvided,
        sample_timeout_s: Any = NotProvided,
        num_cpus_per_env_runner: Any = NotProvided,
        num_gpus_per_env_runner: Any = NotProvided,
        explore: Any = NotProvided,
        max_requests_in_flight_per_env_runner: Any = NotProvided,
        gym_env_vectorize_mode: Any = NotProvided,
        remote_worker_envs: Any = NotProvided,
        remote_env_batch_wait_ms: Any = NotProvided,
        num_cpus_per_env: Any = NotProvided,
        **unknown: Any,
    ) -> Self:
        """Set the sampling layout (see :class:`~training.config_sections.EnvRunnersSection`)."""
        return self._update("env_runners", _provided(locals()))

    def training(self: Self, **kwargs: Any) -> Self:
        """Set algorithm hyper-parameters; the allowed keys depend on the algorithm."""
        return self._update("training", kwargs)

    def resources(
        self: Self,
        *,
        num_gpus: Any = NotProvided,
        num_cpus_for_main_process: Any = NotProvided,
        **unknown: Any,
    ) -> Self:
        """Set the learner's resources (``num_gpus=1`` trains on CUDA)."""
        return self._update("resources", _provided(locals()))

    def learners(
        self: Self,
        *,
        num_learners: Any = NotProvided,
        num_cpus_per_learner: Any = NotProvided,
        num_gpus_per_learner: Any = NotProvided,
        **unknown: Any,
    ) -> Self:
        """Set the data-parallel learners (see :class:`~.config_sections.LearnersSection`)."""
        return self._update("learners", _provided(locals()))

    def fault_tolerance(
        self: Self,
        *,
        restart_failed_env_runners: Any = NotProvided,
        ignore_env_runner_failures: Any = NotProvided,
        restart_failed_sub_environments: Any = NotProvided,
        max_num_env_runner_restarts: Any = NotProvided,
        **unknown: Any,
    ) -> Self:
        """Set what happens when an EnvRunner fails."""
        return self._update("fault_tolerance", _provided(locals()))

    def debugging(
        self: Self, *, log_level: Any = NotProvided, seed: Any = NotProvided, **unknown: Any
    ) -> Self:
        """Set the log level and the seed."""
        return self._update("debugging", _provided(locals()))

    def evaluation(
        self: Self,
        *,
        evaluation_interval: Any = NotProvided,
        evaluation_duration: Any = NotProvided,
        evaluation_explore: Any = NotProvided,
        **unknown: Any,
    ) -> Self:
        """Set periodic evaluation (deterministic unless ``evaluation_explore=True``)."""
        return self._update("evaluation", _provided(locals()))

    def offline_data(
        self: Self,
        *,
        output: Any = NotProvided,
        output_max_file_size: Any = NotProvided,
        **unknown: Any,
    ) -> Self:
        """Write episode traces as JSON lines into ``output``."""
        return self._update("offline_data", _provided(locals()))

    def multi_agent(
        self: Self,
        *,
        policies: Any = NotProvided,
        policy_mapping_fn: Any = NotProvided,
        policies_to_train: Any = NotProvided,
        **unknown: Any,
    ) -> Self:
        """Train several policies (see :class:`~training.multi_agent.spec.MultiAgentSection`).

        Args:
            policies: Policy ids (a set: spaces from the env) or ``{id: PolicySpec(...)}``.
            policy_mapping_fn: ``fn(agent_id, episode, **kwargs) -> policy_id`` or its
                ``"module:function"`` name (recorded in checkpoints by name only).
            policies_to_train: ``None`` (all), a list of ids, or ``fn(policy_id, batch)``.
            **unknown: Refused, naming the key.
        """
        return self._update("multi_agent", _provided(locals()))

    @property
    def is_multi_agent(self) -> bool:
        """Whether ``multi_agent(policies=...)`` was set."""
        return bool(self._values["multi_agent"].policies)

    @property
    def multi_agent_settings(self) -> MultiAgentSection:
        """The ``multi_agent()`` settings as one validated section."""
        section: MultiAgentSection = self._values["multi_agent"]
        return section

    def framework(self: Self, framework: str = "torch") -> Self:
        """Accepted for RLlib compatibility: torch is the only framework."""
        if framework != "torch":
            raise ConfigError(f"framework: only 'torch' is supported, got {framework!r}")
        return self

    # ----------------------------------------------------------------- dict / JSON forms
    def to_dict(self) -> dict[str, Any]:
        """All settings as one flat dict (search spaces included, as Tune expects)."""
        flat: dict[str, Any] = {}
        for values in self._values.values():
            flat.update(values.model_dump())
        flat.update(copy.deepcopy(self._search))
        return flat

    def to_json_dict(self) -> dict[str, Any]:
        """Like :meth:`to_dict`, with the env as a JSON value (id or ``"module:Qualname"``).

        Raises:
            ConfigError: If a search space is unresolved.
        """
        if self._search:
            raise ConfigError(f"unresolved Tune search spaces in {sorted(self._search)}")
        flat = self.to_dict()
        flat["env"] = env_to_json(flat["env"])
        flat.update(policies_to_json(self._values["multi_agent"]))
        return flat

    def update_from_dict(self: Self, config: dict[str, Any]) -> Self:
        """Apply a flat (or RLlib-style) dict of settings, validating every key."""
        by_section: dict[str, dict[str, Any]] = {}
        unknown = []
        for key, value in config.items():
            section = self._section_of(key)
            if section is None:
                unknown.append(key)
            else:
                by_section.setdefault(section, {})[key] = value
        if unknown:
            known = sorted(k for m in self._models.values() for k in m.model_fields)
            hints = [
                f"{k!r}"
                + (
                    f" (did you mean {c[0]!r}?)"
                    if (c := difflib.get_close_matches(k, known, 1))
                    else ""
                )
                for k in unknown
            ]
            raise ConfigError(f"{type(self).__name__}: unknown setting(s) {', '.join(hints)}")
        for section, values in by_section.items():
            self._update(section, values)
        return self

    @classmethod
    def from_dict(cls: type[Self], config: dict[str, Any]) -> Self:
        """Build a config from :meth:`to_dict` / :meth:`to_json_dict` output."""
        return cls().update_from_dict(config)

    def get(self, key: str, default: Any = None) -> Any:
        """Dict-style read of a setting (Ray Tune reads configs this way)."""
        try:
            return getattr(self, key)
        except AttributeError:
            return default

    def copy(self: Self) -> Self:
        """A deep copy that can be changed independently."""
        return type(self).from_dict(self.to_dict())

    # ----------------------------------------------------------------- build
    def validate(self) -> None:
        """Cross-field checks run at :meth:`build` (each section is checked when it is set).

        Raises:
            ConfigError: If the settings cannot work together.
        """
        if self._search:
            raise ConfigError(
                f"{type(self).__name__}: Tune search spaces in {sorted(self._search)} must be "
                "resolved by Tune (pass the config as a Tuner's param_space) before building"
            )
        if self.env is None:
            raise ConfigError(f"{type(self).__name__}.environment(): no env set")
        self._validate_learners()
        self._validate_recurrence()
        self._validate_multi_agent()
        if self.num_gpus > 0:
            import torch

            if not torch.cuda.is_available():
                raise ConfigError(
                    f"resources(): num_gpus={self.num_gpus} but torch sees no CUDA device; "
                    "use num_gpus=0 to train on the CPU"
                )

    def _validate_recurrence(self) -> None:
        if not self.model.use_lstm:
            for key in ("lstm_use_prev_action", "lstm_use_prev_reward"):
                if getattr(self.model, key):
                    raise ConfigError(
                        f"training(model={{'{key}': True}}): the previous action and reward "
                        "are inputs of the LSTM; set use_lstm=True too"
                    )
            return
        if not self.algo_class.supports_lstm:
            raise ConfigError(
                f"training(model={{'use_lstm': True}}): recurrent policies train with PPO or "
                f"IMPALA; {self.algo_class.name} takes feed-forward models only"
            )
        if self.remote_worker_envs:
            raise ConfigError(
                "training(model={'use_lstm': True}) with env_runners(remote_worker_envs=True): "
                "the envs' states are kept by a runner stepping its envs together; use "
                "gym_env_vectorize_mode='ASYNC' for parallel envs"
            )

    def _validate_multi_agent(self) -> None:
        section = self._values["multi_agent"]
        try:
            section.check()
        except ValueError as err:
            raise ConfigError(f"multi_agent(): {err}") from None
        if not section.policies:
            return
        algo = self.algo_class
        unsupported = [
            (
                not algo.supports_multi_agent,
                f"{algo.name} trains one policy (multi-agent: PPO, DQN, SAC, IMPALA)",
            ),
            (self.num_learners > 0, "num_learners > 0 (learners in the driver: num_learners=0)"),
            (self.model.use_lstm, "use_lstm (recurrent multi-agent policies: not yet)"),
            (bool(self.remote_worker_envs), "remote_worker_envs=True"),
        ]
        for refused, why in unsupported:
            if refused:
                raise ConfigError(f"multi_agent(): not with {why}")

    def _validate_learners(self) -> None:
        if self.num_learners == 0:
            if self.num_gpus_per_learner > 0:
                import torch

                if not torch.cuda.is_available():
                    raise ConfigError(
                        f"learners(): num_gpus_per_learner={self.num_gpus_per_learner} with "
                        "num_learners=0 puts the driver's learner on CUDA, but torch sees no "
                        "CUDA device; use num_gpus_per_learner=0 to train on the CPU"
                    )
            return
        algo = self.algo_class
        if algo.learner_class is None:
            raise ConfigError(
                f"learners(): num_learners={self.num_learners}: {algo.name} trains on one "
                "learner in the driver (data-parallel learners: PPO, DQN, SAC, IMPALA); use "
                "num_learners=0"
            )
        rows_per_step = int(self.get("minibatch_size", self.train_batch_size))
        if rows_per_step < self.num_learners:
            raise ConfigError(
                f"learners(num_learners={self.num_learners}): each gradient step's "
                f"{rows_per_step} rows are split over the learners, so every learner needs at "
                "least one: use fewer learners or a larger minibatch_size / train_batch_size"
            )
        if self.num_gpus > 0:
            raise ConfigError(
                f"resources(num_gpus={self.num_gpus}) places the driver's learner, and "
                f"learners(num_learners={self.num_learners}) moves learning to learner "
                "actors: give them GPUs with learners(num_gpus_per_learner=...) instead"
            )

    @property
    def uses_ray(self) -> bool:
        """Whether ``build()`` starts Ray actors: remote runners, learner actors or env actors."""
        return self.num_env_runners > 0 or self.num_learners > 0 or bool(self.remote_worker_envs)

    @property
    def uses_observation_filter(self) -> bool:
        """Whether observations go through the running mean/std filter."""
        return bool(self.observation_filter == "MeanStdFilter")

    def get_rollout_fragment_length(self) -> int:
        """Steps per env per sample call (``"auto"`` splits the train batch over all envs)."""
        if self.rollout_fragment_length != "auto":
            return int(self.rollout_fragment_length)
        envs = max(1, self.num_env_runners) * self.num_envs_per_env_runner
        return int(max(1, -(-int(self.train_batch_size) // envs)))

    @property
    def algo_class(self) -> type[Algorithm]:
        """The algorithm class this config builds."""
        module, _, name = self.algo_class_path.partition(":")
        cls: type[Algorithm] = getattr(importlib.import_module(module), name)
        return cls

    def build(self) -> Algorithm:
        """Validate and build the algorithm (``build_algo`` in newer RLlib)."""
        self.validate()
        return self.algo_class(config=self)

    build_algo = build

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_dict()!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]


def _provided(arguments: dict[str, Any]) -> dict[str, Any]:
    """A fluent method's keywords that were given; ``**unknown`` ones go on to validation."""
    given = {
        k: v for k, v in arguments.items() if k not in ("self", "unknown") and v is not NotProvided
    }
    return {**given, **arguments.get("unknown", {})}


def env_to_json(env: Any) -> str | None:
    """The JSON form of an env setting: an id, ``"module:Qualname"``, or None.

    Raises:
        ConfigError: If the env is a callable that cannot be imported by name (a lambda or a
            local function): checkpoints must be loadable without it.
    """
    if env is None or isinstance(env, str):
        return env
    recorded = getattr(env, "env_spec_json", None)  # make_multi_agent's classes
    if isinstance(recorded, str):
        return recorded
    module = getattr(env, "__module__", None)
    qualname = getattr(env, "__qualname__", None)
    if module and qualname and "<" not in qualname:
        return f"{module}:{qualname}"
    raise ConfigError(
        f"environment(): env {env!r} cannot be recorded by name; register it with "
        "gymnasium.register or pass an importable class/function"
    )
