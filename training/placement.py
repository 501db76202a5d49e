"""Refusing, at ``build()``, actors the Ray cluster can never place.

Ray waits forever for resources a cluster does not have (a GPU on a CPU-only cluster, more CPUs
than all nodes together): an algorithm that asks for them would hang in ``build()`` with no
word of why. The groups of actors (env runners, learners) check their total first.
"""

from __future__ import annotations

from collections.abc import Mapping

import ray

__all__ = ["missing_resources"]


def missing_resources(
    section: str, count_option: str, count: int, per_actor: Mapping[str, tuple[str, float]]
) -> str | None:
    """What ``count`` actors with ``per_actor`` resources lack in the cluster, or ``None``.

    Args:
        section: The config section the options belong to, e.g. ``"env_runners"``.
        count_option: The option setting the number of actors, e.g. ``"num_env_runners"``.
        count: The number of actors.
        per_actor: Ray resource name -> (option name, amount per actor).

    Returns:
        A message naming the options, what they need and what the cluster has; ``None`` when
        the cluster's total (busy or not) holds them.
    """
    total = ray.cluster_resources()  # type: ignore[no-untyped-call]
    for resource, (option, amount) in per_actor.items():
        needed = amount * count
        if needed > total.get(resource, 0.0):
            return (
                f"{section}({count_option}={count}, {option}={amount:g}) needs {needed:g} "
                f"{resource}s, and the Ray cluster has {total.get(resource, 0.0):g} in all"
            )
    return None
