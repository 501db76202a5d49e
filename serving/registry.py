"""``PolicyRegistry``: the named policies one app serves, swappable one at a time."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from serving.runtime import PolicyRuntime

__all__ = ["PolicyRegistry"]

logger = logging.getLogger(__name__)


class PolicyRegistry:
    """Named :class:`PolicyRuntime` objects; replacing one never disturbs the others.

    Args:
        policies: Initial policies by name.
    """

    def __init__(self, policies: Mapping[str, PolicyRuntime] | None = None) -> None:
        self._policies: dict[str, PolicyRuntime] = dict(policies or {})
        for name, runtime in self._policies.items():
            runtime.name = name
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_paths(cls, paths: Mapping[str, str | Path], **runtime_kwargs: Any) -> PolicyRegistry:
        """Verify and load each artifact directory under its name."""
        return cls(
            {name: PolicyRuntime.from_path(p, **runtime_kwargs) for name, p in paths.items()}
        )

    def names(self) -> list[str]:
        """Served policy names."""
        return list(self._policies)

    def get(self, name: str) -> PolicyRuntime | None:
        """The runtime serving ``name`` now (None if unknown)."""
        return self._policies.get(name)

    def set(self, name: str, runtime: PolicyRuntime) -> None:
        """Serve ``runtime`` under ``name`` (requests in flight finish on the old one)."""
        runtime.name = name  # metrics are tagged with the served name
        with self._lock:
            self._policies = {**self._policies, name: runtime}
            self._errors.pop(name, None)

    def reload(self, paths: Mapping[str, str | Path], **runtime_kwargs: Any) -> dict[str, str]:
        """Verify and load each artifact, then swap it in; keep the old one if that fails.

        Returns:
            The reload failures by policy name (also reported by :meth:`describe`).

        Raises:
            ValueError: If a policy that is not served yet fails to load (no fallback).
        """
        failures = {}
        for name, path in paths.items():
            current = self.get(name)
            try:
                runtime = PolicyRuntime.from_path(path, **runtime_kwargs)
            except (ValueError, OSError) as err:
                if current is None:
                    raise
                logger.error(
                    "policy %r: reload failed, still serving %s: %s", name, current.version, err
                )
                self.report_error(name, str(err))
                failures[name] = str(err)
                continue
            if current is None or current.version != runtime.version:
                logger.info("policy %r: now serving version %s", name, runtime.version)
            self.set(name, runtime)
        return failures

    def report_error(self, name: str, message: str) -> None:
        """Record that the last attempt to reload ``name`` failed (the old one keeps serving)."""
        self._errors[name] = message

    def describe(self, name: str, max_rows: int) -> dict[str, Any]:
        """What a client needs to call the policy: spaces, version, formats, limits."""
        runtime = self._policies[name]
        manifest = runtime.artifact.manifest
        return {
            "name": name,
            "version": runtime.version,
            "algorithm": manifest.algorithm,
            "observation_space": manifest.observation_space,
            "action_space": manifest.action_space,
            "action_distribution": manifest.action_distribution,
            "inputs": [spec.model_dump() for spec in manifest.inputs],
            "recurrent": runtime.is_recurrent,
            "state": [spec.model_dump() for spec in runtime.state_specs] or None,
            "previous": [spec.model_dump() for spec in runtime.previous_specs] or None,
            "formats": sorted(manifest.formats),
            "backend": runtime.backend,
            "max_rows": max_rows,
            "last_reload_error": self._errors.get(name),
        }
