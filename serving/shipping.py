"""Artifacts shipped to replicas on other nodes through Ray, and verified there by hash.

On a Ray cluster a replica may start on a node that cannot see the driver's disk, and a node
that dies takes its replicas with it: Serve starts replacements wherever it finds room. So
``rlserve serve --address`` never hands replicas a local path. :func:`ship_artifacts` reads
each verified artifact into an :class:`ArtifactStore` actor pinned to the driver's node and
gives the replicas a ``ray-artifact://STORE/VERSION`` reference instead. A replica's
:func:`fetch_artifact` copies the files into this node's cache (atomically, through
:func:`formats.safeio.write_directory_atomically`), verifies every file again with
:func:`exporters.load_artifact`, and refuses the copy unless its content-derived version is
the one referenced: a byte changed on the way is a new version, never the old one.

What it costs: the files travel once per node (the cache is keyed by version), through Ray's
object store; artifacts are kilobytes to a few hundred megabytes. The store lives as long as
the driver that made it (``rlserve serve``), as the Serve application does.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from exporters import ArtifactError, load_artifact
from formats.safeio import write_directory_atomically

__all__ = ["SCHEME", "ArtifactStore", "fetch_artifact", "is_shipped", "ship_artifacts"]

SCHEME = "ray-artifact://"
"""How a shipped artifact is named in the application's ``artifacts``."""
NAMESPACE = "rlserve"
"""Ray namespace of the store actors (replicas run in Serve's own)."""
MANIFEST = "manifest.json"
CACHE = Path(tempfile.gettempdir()) / "rlserve-shipped-artifacts"
"""Where a node keeps the artifacts its replicas fetched, one directory per version."""

_stores: list[Any] = []
"""Handles of the stores this process made: a store lives as long as a handle to it does."""


class ArtifactStore:
    """The files of some artifacts, by version (a Ray actor; no CPU reserved)."""

    def __init__(self, packs: dict[str, dict[str, bytes]]) -> None:
        self._packs = packs

    def files(self, version: str) -> dict[str, bytes]:
        """Every file of the artifact ``version``, manifest included, by relative path."""
        return self._packs[version]


def is_shipped(path: str) -> bool:
    """Whether an application's artifact entry is a shipped reference, not a local path."""
    return path.startswith(SCHEME)


def _pack(path: str) -> tuple[str, dict[str, bytes]]:
    artifact = load_artifact(path)
    files = {rel: (artifact.path / rel).read_bytes() for rel in artifact.files}
    files[MANIFEST] = (artifact.path / MANIFEST).read_bytes()
    return artifact.version, files


def ship_artifacts(paths: Mapping[str, str]) -> dict[str, str]:
    """Verify the artifacts, put them in a store on this node, and name them for replicas.

    Ray must be initialised (the driver of a cluster).

    Args:
        paths: Policy name -> local artifact directory.

    Returns:
        Policy name -> ``ray-artifact://STORE/VERSION``.

    Raises:
        exporters.ArtifactError: If an artifact fails verification.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    packs: dict[str, dict[str, bytes]] = {}
    versions: dict[str, str] = {}
    for name, path in paths.items():
        version, files = _pack(path)
        packs[version], versions[name] = files, version
    store_name = f"artifacts-{uuid.uuid4().hex[:12]}"
    actor: Any = ray.remote(num_cpus=0)(ArtifactStore)  # untyped upstream
    store = actor.options(
        name=store_name,
        namespace=NAMESPACE,
        # On the driver's node: it lives and dies with the service, whichever node fails.
        scheduling_strategy=NodeAffinitySchedulingStrategy(
            ray.get_runtime_context().get_node_id(), soft=False
        ),
    ).remote(packs)
    ray.get(store.__ray_ready__.remote())
    _stores.append(store)
    return {name: f"{SCHEME}{store_name}/{version}" for name, version in versions.items()}


def fetch_artifact(reference: str, cache: Path = CACHE) -> Path:
    """The local, verified copy of a shipped artifact (fetched once per node and version).

    Raises:
        exporters.ArtifactError: For a malformed reference, a store that is gone, or files
            that do not verify as the referenced version.
    """
    store_name, _, version = reference.removeprefix(SCHEME).partition("/")
    if not (store_name and version.isalnum()):
        raise ArtifactError(f"{reference!r}: expected {SCHEME}STORE/VERSION")
    target = cache / version
    if target.is_dir():
        try:
            if load_artifact(target).version == version:
                return target
        except ArtifactError:
            pass  # a damaged copy: fetched again below, replacing it
    import ray

    try:
        store = ray.get_actor(store_name, namespace=NAMESPACE)
        files: dict[str, bytes] = ray.get(store.files.remote(version))
    except (ValueError, KeyError, ray.exceptions.RayError) as err:
        raise ArtifactError(f"{reference}: cannot fetch it from its store: {err}") from None
    fields = {k: v for k, v in json.loads(files[MANIFEST]).items() if k != "files"}

    for rel in files:
        if rel.startswith("/") or ".." in Path(rel).parts:
            raise ArtifactError(f"{reference}: refusing the file name {rel!r}")

    def write(tmp: Path) -> None:
        for rel, data in files.items():
            if rel != MANIFEST:
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                (tmp / rel).write_bytes(data)

    # The manifest's file table is derived again from the bytes that arrived, so the version
    # check below covers every byte.
    write_directory_atomically(target, write, metadata_name=MANIFEST, metadata=fields)
    got = load_artifact(target).version
    if got != version:
        raise ArtifactError(f"{reference}: the files that arrived are version {got}")
    return target
