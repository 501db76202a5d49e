"""``TorchPolicy``: run an artifact's ``torch.export`` program (or its TorchScript) with torch.

**torch.export** (``model.pt2``) is a zip archive of a JSON graph, raw little-endian weight
bytes and JSON configs, but torch's loader also unpickles three kinds of records when present:
sample inputs (``torch.load``, falling back to ``weights_only=False``), payloads flagged
``use_pickle`` and custom-object constants. rlserve's exporter writes none of them (it drops
the sample inputs before saving), and :func:`check_pt2_archive` refuses any archive that holds
one *before* ``torch.export.load`` opens it, so loading an rlserve ``.pt2`` never unpickles.

**TorchScript** (``model.ts``) is a pickle-based archive run by TorchScript's interpreter; it is
deprecated upstream. It is served only when the caller passes ``allow_torchscript=True`` for an
artifact it built itself.

Inputs and outputs match the ONNX graph: the observation leaves (then a recurrent policy's
state) in, ``(action_dist_inputs, actions)`` (then the next state) out, as numpy arrays.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from exporters.artifact import Artifact, ArtifactError

__all__ = [
    "TORCH_FORMATS",
    "LiftedProgram",
    "TorchPolicy",
    "check_pt2_archive",
    "load_exported_program",
]

TORCH_FORMATS = ("torch_export", "torchscript")

# Records of a pt2 archive that hold no code and no pickle (below the archive's root folder).
_PLAIN_RECORDS = ("archive_format", "archive_version", "byteorder", ".data/version")
_PLAIN_PREFIXES = (".data/serialization_id", "models/", "data/weights/", "data/constants/")


def check_pt2_archive(path: Path) -> None:
    """Refuse a ``.pt2`` archive that torch's loader would unpickle anything from.

    Raises:
        ArtifactError: Naming the record (sample inputs, a pickled weight or constant, a
            custom object, a legacy or compiled payload, or anything unknown).
    """
    name = path.name
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            roots = {info.filename.split("/", 1)[0] for info in infos}
            if len(roots) != 1:
                raise ArtifactError(f"artifact file {name}: not a single-root pt2 archive")
            root = roots.pop() + "/"
            configs = []
            for info in infos:
                record = info.filename[len(root) :]
                if record.startswith("data/sample_inputs/"):
                    if info.file_size:  # torch.load'ed, with a weights_only=False fallback
                        raise ArtifactError(
                            f"artifact file {name}: holds pickled sample inputs ({record}); "
                            "re-export it with this rlserve"
                        )
                    continue
                if record.endswith(".pt") or record.endswith(".pkl"):
                    raise ArtifactError(f"artifact file {name}: holds a pickle ({record})")
                if record not in _PLAIN_RECORDS and not record.startswith(_PLAIN_PREFIXES):
                    raise ArtifactError(f"artifact file {name}: unexpected record {record!r}")
                if record.endswith("_config.json"):
                    configs.append((record, archive.read(info)))
    except zipfile.BadZipFile:
        raise ArtifactError(f"artifact file {name}: not a pt2 (zip) archive") from None
    for record, raw in configs:
        _check_payload_config(name, record, raw)


def _check_payload_config(name: str, record: str, raw: bytes) -> None:
    """Every payload a weights or constants config lists must be raw tensor bytes."""
    try:
        entries = json.loads(raw)["config"]
    except (ValueError, KeyError, TypeError):
        entries = None
    if not isinstance(entries, dict) or not all(isinstance(e, dict) for e in entries.values()):
        raise ArtifactError(f"artifact file {name}: {record} is not a payload config")
    for key, entry in entries.items():
        pickled = entry.get("use_pickle") is not False
        if pickled or not str(entry.get("path_name", "")).startswith(("weight_", "tensor_")):
            raise ArtifactError(
                f"artifact file {name}: {record} entry {key!r} is a pickled payload"
            )


def load_exported_program(path: Path) -> Any:
    """``torch.export.load`` of an archive that :func:`check_pt2_archive` accepted."""
    import torch

    check_pt2_archive(path)
    return torch.export.load(str(path))


class LiftedProgram:
    """Calls an exported program's graph with its lifted parameters and buffers.

    ``ExportedProgram.module()`` wraps the same graph in pytree handling and a pre-hook that
    re-checks the input shape constraints with sympy on every call: about 160 µs for a batch of
    one CartPole observation, against 40 µs for the graph itself. Serving validates shapes and
    dtypes at the edge and splits batches beyond the exported limit, so this calls the graph
    directly, feeding each input in the order of the program's graph signature.

    Raises:
        ArtifactError: For a program with other inputs or outputs than parameters, buffers,
            constant tensors and user inputs in, user outputs out (e.g. mutated buffers).
    """

    _LIFTED = ("PARAMETER", "BUFFER", "CONSTANT_TENSOR")

    def __init__(self, program: Any) -> None:
        signature = program.graph_signature
        state = {**program.state_dict, **program.constants}
        self.arguments: list[Any] = []  # a lifted tensor, or None for the next user input
        for spec in signature.input_specs:
            kind = spec.kind.name
            if kind == "USER_INPUT":
                self.arguments.append(None)
            elif kind in self._LIFTED and spec.target in state:
                self.arguments.append(state[spec.target])
            else:
                raise ArtifactError(f"torch.export program: unsupported input {kind} {spec}")
        outputs = {spec.kind.name for spec in signature.output_specs}
        if outputs != {"USER_OUTPUT"}:
            raise ArtifactError(f"torch.export program: unsupported outputs {sorted(outputs)}")
        self.graph = program.graph_module

    def __call__(self, *inputs: Any) -> Any:
        """The graph's outputs for the user inputs, in order."""
        given = iter(inputs)
        return self.graph(*(next(given) if a is None else a for a in self.arguments))


class TorchPolicy:
    """Runs an artifact's torch program on CPU or CUDA.

    Args:
        artifact: A verified artifact (:func:`exporters.load_artifact`).
        fmt: ``"torch_export"`` (default) or ``"torchscript"``.
        device: ``"cpu"`` or ``"cuda"`` (``"cuda:N"``).
        num_threads: torch's intra-op threads for CPU inference (process-wide in torch).
        allow_torchscript: Accept the pickle-based TorchScript format (trusted artifacts only).

    Raises:
        ArtifactError: The artifact lacks the format, the archive is unsafe, or TorchScript was
            not allowed.
    """

    def __init__(
        self,
        artifact: Artifact,
        fmt: str = "torch_export",
        *,
        device: str = "cpu",
        num_threads: int | None = None,
        allow_torchscript: bool = False,
    ) -> None:
        import torch

        if fmt not in TORCH_FORMATS:
            raise ArtifactError(f"torch backend: format {fmt!r}; choose from {TORCH_FORMATS}")
        path = artifact.file(fmt)
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        self.artifact = artifact
        self.format = fmt
        self.device = torch.device(device)
        manifest = artifact.manifest
        leading = [*manifest.inputs, *(manifest.previous or [])]
        self.input_dtypes = [np.dtype(spec.dtype) for spec in leading] + [
            np.dtype(s.dtype) for s in manifest.state or []
        ]
        self.module = self._load(fmt, path, allow_torchscript)

    def _load(self, fmt: str, path: Path, allow_torchscript: bool) -> Any:
        import torch

        from exporters.upstream import upstream_warnings_silenced

        if fmt == "torchscript":
            if not allow_torchscript:
                raise ArtifactError(
                    f"artifact file {path.name}: TorchScript archives are unpickled when "
                    "loaded; serve torch_export or onnx, or allow TorchScript explicitly for "
                    "artifacts you built yourself"
                )
            with upstream_warnings_silenced():
                return torch.jit.load(str(path), map_location=self.device)  # type: ignore[no-untyped-call]
        program = load_exported_program(path)
        if self.device.type != "cpu":
            from torch.export.passes import move_to_device_pass

            program = move_to_device_pass(program, self.device)
        return LiftedProgram(program)

    def run(self, inputs: list[np.ndarray]) -> tuple[np.ndarray, ...]:
        """The graph's outputs for a batch: ``(action_dist_inputs, actions, *next_state)``.

        Args:
            inputs: The observation leaves, then the previous action and reward a recurrent
                policy reads (the manifest's ``previous``), then its state; each with the batch
                as its first axis.
        """
        import torch

        tensors = [
            torch.from_numpy(np.ascontiguousarray(value, dtype=dtype)).to(self.device)
            for value, dtype in zip(inputs, self.input_dtypes, strict=True)
        ]
        with torch.inference_mode():
            outputs = self.module(*tensors)
        return tuple(output.cpu().numpy() for output in outputs)
