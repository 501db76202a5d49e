"""``load_artifact``: the only way serving opens an exported policy.

Before any runtime session exists it verifies ``manifest.json`` and every listed file (size
and sha256, paths inside the directory), refuses symbolic links anywhere (the directory itself
included) and any file or directory the manifest does not list, rejects unknown future format
versions, and rejects ONNX models that reference external data. It imports nothing from
``training``: a serving replica needs only the artifact, onnxruntime and numpy.

Identity: the version an artifact is served under (:attr:`Artifact.version`, every answer's
``version`` and ``X-Policy-Version``) is recomputed here from the verified content
(:func:`exporters.manifest.content_version`), never taken from the manifest. The manifest's own
``version`` field is kept (people and tools read it) but must agree: a stored version that
differs from the recomputed one is refused, naming both. Refusing rather than ignoring it
catches the likeliest tampering — a file swapped and its hash rewritten, the version left as
it was — loudly at load time instead of serving it quietly under another id, and it keeps
``manifest.json`` true for anyone reading it without rlserve. Whoever rewrites the version too
gets the artifact served under the *new* id, which is what identity asks: no content is ever
served under the id of other content.

Unlisted entries are refused rather than ignored because an artifact directory is written
whole by the exporter and never added to: anything else in it was put there afterwards, and a
file next to a model is not inert (ONNX resolves external data by relative path, for one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from pydantic import ValidationError

from exporters.errors import ArtifactError, ArtifactVersionError
from exporters.manifest import ARTIFACT_FORMAT, ARTIFACT_VERSION, Manifest, content_version
from formats.safeio import IntegrityError, verify_directory
from formats.spaces import space_from_json

__all__ = ["Artifact", "ArtifactError", "ArtifactVersionError", "OnnxPolicy", "load_artifact"]

_UNHASHED_VERSION_FORMATS = frozenset({"1.0"})
"""Format versions whose ``version`` hashed the module weights only (not content_version)."""


@dataclass(frozen=True)
class Artifact:
    """A verified artifact directory.

    Attributes:
        path: The directory.
        manifest: The parsed manifest.
        files: The verified file table (name -> sha256 and size).
        observation_space: Re-created from the manifest.
        action_space: Re-created from the manifest.
        version: The content-derived policy version, computed from ``manifest`` and ``files``
            when the object is made (:func:`exporters.manifest.content_version`).
    """

    path: Path
    manifest: Manifest
    files: dict[str, Any]
    observation_space: gym.Space[Any]
    action_space: gym.Space[Any]
    version: str = field(init=False)

    def __post_init__(self) -> None:
        # Computed once here, not per call: serving reads it on every answer.
        object.__setattr__(self, "version", content_version(self.manifest, self.files))

    def file(self, fmt: str) -> Path:
        """Path of an exported format's file (``onnx``, ``torchscript``, ``torch_export``).

        Raises:
            ArtifactError: If the artifact has no such format.
        """
        entry = self.manifest.formats.get(fmt)
        if entry is None:
            raise ArtifactError(
                f"artifact {self.path}: no {fmt!r} format; it has {sorted(self.manifest.formats)}"
            )
        return self.path / entry.file

    def onnx_policy(
        self, *, intra_op_num_threads: int = 1, providers: list[str] | None = None
    ) -> OnnxPolicy:
        """An onnxruntime session on this artifact's ONNX graph."""
        return OnnxPolicy(self, intra_op_num_threads=intra_op_num_threads, providers=providers)


def _check_onnx_has_no_external_data(path: Path) -> None:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # onnx raises several types for malformed protobufs
        raise ArtifactError(f"artifact file {path.name}: not a valid ONNX model ({err})") from None
    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                tensors.append(attribute.t)
    for tensor in tensors:
        if tensor.data_location == onnx.TensorProto.EXTERNAL or tensor.external_data:
            raise ArtifactError(
                f"artifact file {path.name}: tensor {tensor.name!r} references external data; "
                "artifacts must be self-contained"
            )


def _check_stored_version(root: Path, manifest: Manifest, files: dict[str, Any]) -> None:
    expected = content_version(manifest, files)
    if manifest.version == expected:
        return
    hint = (
        f"format {manifest.format_version} versions were not content-derived; export it again "
        "with this rlserve"
        if manifest.format_version in _UNHASHED_VERSION_FORMATS
        else "a file or the manifest was changed after export"
    )
    raise ArtifactError(
        f"artifact {root}: manifest.json version is {manifest.version!r}, expected "
        f"{expected!r} (the hash of its files and manifest); {hint}"
    )


def load_artifact(path: str | Path) -> Artifact:
    """Verify an artifact directory completely, then describe it.

    Raises:
        ArtifactError: Naming the bad file or field (tampered, truncated, missing, outside the
            directory, a symbolic link, a file or directory the manifest does not list, ONNX
            external data, a malformed manifest, a ``version`` that is not the content's).
        ArtifactVersionError: For a newer major format version.
    """
    root = Path(path)
    try:
        data = verify_directory(root, metadata_name="manifest.json", kind="artifact", exact=True)
    except IntegrityError as err:
        raise ArtifactError(str(err)) from None
    if data.get("format") != ARTIFACT_FORMAT:
        raise ArtifactError(
            f"artifact {root}: manifest.json format is {data.get('format')!r}, "
            f"expected {ARTIFACT_FORMAT!r}"
        )
    version = str(data.get("format_version", ""))
    major = version.split(".", maxsplit=1)[0]
    if not major.isdigit():
        raise ArtifactError(f"artifact {root}: bad format_version {version!r}")
    if int(major) > int(ARTIFACT_VERSION.split(".")[0]):
        raise ArtifactVersionError(
            f"artifact {root}: format version {version} is newer than this rlserve reads "
            f"({ARTIFACT_VERSION}); upgrade rlserve"
        )
    files = data.pop("files")
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ArtifactError(f"artifact {root}: manifest.json {where}: {first['msg']}") from None
    for fmt, entry in manifest.formats.items():
        if entry.file not in files:
            raise ArtifactError(
                f"artifact {root}: format {fmt!r} names {entry.file!r}, which manifest.json "
                "does not list with a hash"
            )
    _check_stored_version(root, manifest, files)
    if "onnx" in manifest.formats:
        _check_onnx_has_no_external_data(root / manifest.formats["onnx"].file)
    try:
        obs_space = space_from_json(manifest.observation_space, "observation_space")
        act_space = space_from_json(manifest.action_space, "action_space")
    except ValueError as err:
        raise ArtifactError(f"artifact {root}: manifest.json {err}") from None
    return Artifact(root, manifest, files, obs_space, act_space)


class OnnxPolicy:
    """Runs an artifact's ONNX graph with onnxruntime.

    Args:
        artifact: A verified artifact.
        intra_op_num_threads: Threads per inference call (size it to the replica's CPUs).
        providers: onnxruntime execution providers (default: CPU).
    """

    def __init__(
        self,
        artifact: Artifact,
        *,
        intra_op_num_threads: int = 1,
        providers: list[str] | None = None,
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_num_threads
        options.inter_op_num_threads = 1
        self.artifact = artifact
        self.session = ort.InferenceSession(
            str(artifact.file("onnx")),
            sess_options=options,
            providers=providers or ["CPUExecutionProvider"],
        )
        manifest = artifact.manifest
        state = manifest.state or []
        leading = [*manifest.inputs, *(manifest.previous or [])]
        self.input_names = [spec.name for spec in leading] + [s.input for s in state]
        self.input_dtypes = [np.dtype(spec.dtype) for spec in leading] + [
            np.dtype(s.dtype) for s in state
        ]

    def run(self, inputs: list[np.ndarray]) -> tuple[np.ndarray, ...]:
        """The graph's outputs for a batch: ``(action_dist_inputs, actions, *next_state)``.

        Args:
            inputs: The observation leaves, then the previous action and reward a recurrent
                policy reads (the manifest's ``previous``), then its state (``state``); each
                with the batch as its first axis.
        """
        feed = {
            name: np.ascontiguousarray(value, dtype=dtype)
            for name, dtype, value in zip(self.input_names, self.input_dtypes, inputs, strict=True)
        }
        return tuple(self.session.run(None, feed))
