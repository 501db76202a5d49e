"""Atomic, verified directories: the on-disk form of checkpoints and exported artifacts.

Part of the shared bottom layer (``formats.spaces``, ``formats.safeio``): it imports nothing
from ``training``, ``exporters`` or ``serving``, so all three (and a serving replica) use it.

A directory is written into a temporary sibling, described by a metadata JSON file that lists
the sha256 and size of every payload file, fsynced, and only then renamed into place, so the
target path holds either a complete old version or a complete new one, never a partial one.
:func:`verify_directory` checks a directory against its metadata before anything is loaded
from it. Only JSON and raw bytes are read here; nothing is ever unpickled.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from formats.errors import RlserveError

__all__ = [
    "METADATA_MAX_BYTES",
    "FileTable",
    "FormatVersionError",
    "IntegrityError",
    "read_json",
    "sha256_file",
    "verify_directory",
    "write_directory_atomically",
    "write_json",
]

METADATA_MAX_BYTES = 16 * 1024 * 1024
_CHUNK = 1024 * 1024
_HEX = frozenset("0123456789abcdef")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_MAX_SHOWN = 10  # unlisted entries named in one error; the rest are counted

FileTable = dict[str, dict[str, Any]]
"""A directory's file table: relative POSIX path -> ``{"sha256": hex, "size": bytes}``."""


class IntegrityError(RlserveError, ValueError):
    """A verified directory (checkpoint or artifact) is missing, malformed, corrupt or unsafe."""


class FormatVersionError(IntegrityError):
    """A directory was written in a format version that this code cannot read."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Return the hex sha256 of a file, read in 1 MiB chunks."""
    with open(path, "rb") as fh:
        return _hash_stream(fh)[0]


def _hash_stream(fh: BinaryIO) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    while chunk := fh.read(_CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as UTF-8 JSON (sorted keys, indent 2, no NaN/inf) and fsync the file.

    Raises:
        ValueError: If ``obj`` contains NaN or infinite floats.
        TypeError: If ``obj`` contains values that JSON cannot represent.
    """
    text = json.dumps(obj, sort_keys=True, indent=2, allow_nan=False, ensure_ascii=False)
    with open(path, "wb") as fh:
        fh.write(text.encode("utf-8") + b"\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_json(path: str | os.PathLike[str], *, max_bytes: int) -> Any:
    """Read a UTF-8 JSON file of at most ``max_bytes`` bytes, without following a final symlink.

    NaN/Infinity literals and duplicate object keys are rejected.

    Raises:
        IntegrityError: If the file is too large, not UTF-8 or not valid strict JSON.
        OSError: If the file cannot be opened.
    """
    with os.fdopen(os.open(path, os.O_RDONLY | _NOFOLLOW), "rb") as fh:
        raw = fh.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise IntegrityError(f"{path}: larger than the limit of {max_bytes} bytes")
    try:
        return json.loads(
            raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant
        )
    except UnicodeDecodeError as exc:
        raise IntegrityError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise IntegrityError(
            f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise json.JSONDecodeError(f"duplicate key {key!r}", "", 0)
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not valid JSON", "", 0)


def write_directory_atomically(
    target: str | os.PathLike[str],
    write_files: Callable[[Path], None],
    *,
    metadata_name: str = "metadata.json",
    metadata: Mapping[str, Any] | Callable[[FileTable], Mapping[str, Any]],
) -> Path:
    """Write a directory beside ``target``, describe it in metadata, then rename it into place.

    ``write_files(tmp)`` writes the payload into a fresh temporary directory (a sibling of
    ``target`` named ``.{name}.tmp-<random>``). Every regular file it created is then listed in
    ``metadata_name`` as ``metadata`` plus ``"files": {relpath: {"sha256", "size"}}``, every file
    and directory is fsynced, and the directory is renamed to ``target``. An existing ``target``
    is first renamed aside (``.{name}.old-<random>``) and deleted once the new one is in place.

    Args:
        target: The directory to create or replace.
        write_files: Writes the payload files into the directory it is given.
        metadata_name: File name of the metadata JSON inside the directory.
        metadata: JSON-serialisable metadata, or a function of the file table that returns it
            (for fields derived from the content, such as an artifact's version); it must not
            have a ``"files"`` entry.

    Returns:
        ``target`` as a ``Path``.

    Raises:
        IntegrityError: If ``write_files`` created links, special files, ``metadata_name``
            itself or unusable names, or ``target`` exists and is not a directory.
        ValueError: If ``metadata_name`` is not a plain file name or ``metadata`` has ``"files"``.
    """
    target = Path(target)
    if metadata_name in ("", ".", "..") or "/" in metadata_name or "\\" in metadata_name:
        raise ValueError(f"metadata_name must be a plain file name, got {metadata_name!r}")
    if not callable(metadata):
        _no_files_entry(metadata)
    if os.path.lexists(target) and (target.is_symlink() or not target.is_dir()):
        raise IntegrityError(f"{target}: exists and is not a directory; refusing to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    _clear_abandoned_siblings(target)
    tmp = _new_sibling(target, "tmp", create=True)
    try:
        write_files(tmp)
        table = _file_table(tmp, metadata_name)
        fields = (
            metadata({name: dict(entry) for name, entry in table.items()})
            if callable(metadata)
            else metadata
        )
        _no_files_entry(fields)
        write_json(tmp / metadata_name, {**fields, "files": table})
        _fsync_tree(tmp)
        _swap_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _no_files_entry(metadata: Mapping[str, Any]) -> None:
    if "files" in metadata:
        raise ValueError("metadata must not contain 'files'; the file table is computed")


def _new_sibling(target: Path, tag: str, *, create: bool) -> Path:
    while True:
        # The writer's pid is in the name, so a later write can tell what a killed one left.
        name = f".{target.name}.{tag}-{os.getpid()}-{secrets.token_hex(6)}"
        candidate = target.with_name(name)
        if not create:
            if not os.path.lexists(candidate):
                return candidate
            continue
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate


def _file_table(root: Path, metadata_name: str) -> FileTable:
    table: FileTable = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            full = Path(dirpath, name)
            rel = full.relative_to(root).as_posix()
            mode = os.lstat(full).st_mode
            if stat.S_ISLNK(mode):
                raise IntegrityError(
                    f"write_files created the symbolic link {rel!r}; only regular files and "
                    "directories may be written"
                )
            if stat.S_ISDIR(mode):
                continue
            problem = _unsafe_name(rel, metadata_name) or (
                None if stat.S_ISREG(mode) else "is not a regular file"
            )
            if problem:
                raise IntegrityError(f"write_files created {rel!r}, which {problem}")
            with open(full, "rb") as fh:
                digest, size = _hash_stream(fh)
            table[rel] = {"sha256": digest, "size": size}
    return dict(sorted(table.items()))


def _fsync_tree(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root, topdown=False):
        for name in filenames:
            fd = os.open(Path(dirpath, name), os.O_RDONLY | _NOFOLLOW)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems cannot fsync a directory
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def _clear_abandoned_siblings(target: Path) -> None:
    """Remove what writers killed mid-write (SIGKILL, power loss) left beside ``target``.

    Every ``.{name}.tmp-<pid>-*`` of a dead writer in ``target``'s directory is an unfinished
    payload: deleted. A ``.{name}.old-<pid>-*`` is the previous complete version of ``name``,
    renamed aside just before its new one was moved in: deleted when ``name`` exists, else put
    back as ``name``. Writers still alive (on this machine) are left alone. Without this, every
    kill during a save leaves a payload-sized directory that nothing ever deletes.
    """
    for sibling in target.parent.glob(".*-*-*"):
        head, pid, _ = sibling.name.rsplit("-", 2)
        name, _, tag = head[1:].rpartition(".")
        if tag not in ("tmp", "old") or not name or not pid.isdigit():
            continue
        if sibling.is_symlink() or _pid_alive(int(pid)):
            continue
        own = target.parent / name
        if tag == "old" and not os.path.lexists(own):
            os.replace(sibling, own)
            _fsync_dir(target.parent)
        else:
            shutil.rmtree(sibling, ignore_errors=True)


def _swap_into_place(tmp: Path, target: Path) -> None:
    if not os.path.lexists(target):
        os.replace(tmp, target)
        _fsync_dir(target.parent)
        return
    old = _new_sibling(target, "old", create=False)
    os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException as exc:
        try:
            os.replace(old, target)  # put the previous, complete version back
        except OSError as restore_exc:
            raise IntegrityError(
                f"{target}: could not move the new version into place ({exc!r}) nor restore the "
                f"previous one ({restore_exc!r}); the previous version is intact at {old}"
            ) from exc
        raise
    _fsync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)


def _unsafe_name(rel: str, metadata_name: str) -> str | None:
    """Why ``rel`` cannot be a file entry, or ``None`` if it is a safe relative POSIX path."""
    parts = rel.split("/")
    if not rel or "\\" in rel or "\x00" in rel:
        return "is empty or contains a backslash or NUL"
    if PurePosixPath(rel).is_absolute() or any(p in ("", ".", "..") for p in parts):
        return "is not a plain relative path inside the directory"
    if rel == metadata_name:
        return f"is the metadata file {metadata_name} itself"
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    return None


def verify_directory(
    path: str | os.PathLike[str],
    *,
    metadata_name: str = "metadata.json",
    max_metadata_bytes: int = METADATA_MAX_BYTES,
    kind: str = "checkpoint",
    exact: bool = False,
) -> dict[str, Any]:
    """Check every file listed in a directory's metadata, and return the metadata.

    Each listed path must be relative and stay inside the directory with no symlink on any
    component, and name a regular file of the listed size and sha256. By default files that
    are not listed are allowed (and ignored): Ray Tune, for one, writes its own files into
    checkpoint directories. With ``exact=True`` the directory must hold the listed files, the
    metadata file and the directories above them and nothing else: the directory itself must
    not be a symbolic link, and every unlisted entry (file, directory, symbolic link, socket…)
    is refused by name. That is for directories nothing but their writer ever adds to, such as
    exported artifacts, where an extra file is tampering or a mistake; it costs one ``scandir``
    per directory.

    Args:
        path: The directory written by :func:`write_directory_atomically`.
        metadata_name: File name of the metadata JSON inside the directory.
        max_metadata_bytes: Size limit of the metadata file.
        kind: What the directory is (``"checkpoint"``, ``"artifact"``), for messages.
        exact: Refuse symbolic links and anything the metadata does not list.

    Returns:
        The parsed metadata, including its ``"files"`` table.

    Raises:
        IntegrityError: Naming each offending file and what was expected versus found.
    """
    root = Path(path)
    where = f"{kind} {root}"
    if exact and root.is_symlink():
        raise IntegrityError(
            f"{where}: is a symbolic link (to {os.readlink(root)!r}); a {kind} must be opened "
            "at its real path"
        )
    if not root.is_dir():
        raise IntegrityError(f"{where}: not a directory (or it does not exist)")
    meta_path = root / metadata_name
    try:
        mode = os.lstat(meta_path).st_mode
    except FileNotFoundError:
        raise IntegrityError(
            f"{where}: {metadata_name} is missing; this is not a {kind} directory or it "
            "was not written completely"
        ) from None
    if not stat.S_ISREG(mode):
        raise IntegrityError(f"{where}: {metadata_name} is not a regular file")
    try:
        meta = read_json(meta_path, max_bytes=max_metadata_bytes)
    except IntegrityError as exc:
        raise IntegrityError(f"{where}: cannot read {metadata_name}: {exc}") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("files"), dict):
        raise IntegrityError(f"{where}: {metadata_name} must be an object with a 'files' object")
    problems = [
        f"file {rel!r} {problem}"
        for rel, entry in meta["files"].items()
        if (problem := _check_entry(root, rel, entry, metadata_name)) is not None
    ]
    if exact:
        problems += _unlisted_entries(root, set(meta["files"]), metadata_name)
    if problems:
        raise IntegrityError(f"{where}: " + "; ".join(problems))
    return meta


def _check_entry(root: Path, rel: str, entry: Any, metadata_name: str) -> str | None:
    if not (
        isinstance(entry, dict)
        and isinstance(entry.get("sha256"), str)
        and len(entry["sha256"]) == 64
        and set(entry["sha256"]) <= _HEX
        and type(entry.get("size")) is int
        and entry["size"] >= 0
    ):
        return f"has a malformed entry in {metadata_name} (expected sha256 hex and size)"
    unsafe = _unsafe_name(rel, metadata_name)
    if unsafe is not None:
        return unsafe + "; refusing to read it"
    return _check_components(root, rel, metadata_name) or _check_content(
        root / rel, entry, metadata_name
    )


def _check_components(root: Path, rel: str, metadata_name: str) -> str | None:
    """Walk ``rel`` one component at a time with lstat, so that no symlink is ever followed."""
    parts = rel.split("/")
    current = root
    for i, part in enumerate(parts):
        current = current / part
        shown = current.relative_to(root).as_posix()
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            return f"is listed in {metadata_name} but missing"
        if stat.S_ISLNK(mode):
            return f"has a symbolic link at {shown!r}; links are not allowed"
        if i < len(parts) - 1 and not stat.S_ISDIR(mode):
            return f"has a non-directory at {shown!r}"
    return None if stat.S_ISREG(mode) else "is not a regular file"


def _check_content(full: Path, entry: dict[str, Any], metadata_name: str) -> str | None:
    with os.fdopen(os.open(full, os.O_RDONLY | _NOFOLLOW | os.O_NONBLOCK), "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size != entry["size"]:
            return (
                f"is {size} bytes but {metadata_name} lists {entry['size']} bytes; the "
                "files are truncated, corrupt or were modified"
            )
        digest = _hash_stream(fh)[0]
    if digest != entry["sha256"]:
        return (
            f"has sha256 {digest[:12]}... but {metadata_name} lists {entry['sha256'][:12]}...; "
            "the files are corrupt or were modified"
        )
    return None


def _unlisted_entries(root: Path, listed: set[str], metadata_name: str) -> list[str]:
    """What ``root`` holds besides the listed files, their directories and the metadata file.

    Walks with ``scandir`` without following any link, so a link is reported, never entered.
    """
    needed_dirs = {
        "/".join(rel.split("/")[:i]) for rel in listed for i in range(1, rel.count("/") + 1)
    }
    found: list[str] = []
    pending = [(root, "")]
    while pending:
        directory, prefix = pending.pop()
        with os.scandir(directory) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                rel = prefix + entry.name
                if entry.is_symlink():
                    if rel not in listed:  # a listed link is already reported by _check_entry
                        found.append(f"{rel!r} is a symbolic link; links are not allowed")
                elif entry.is_dir(follow_symlinks=False):
                    if rel in needed_dirs:
                        pending.append((Path(entry.path), rel + "/"))
                    else:
                        found.append(f"directory {rel + '/'!r} holds no file {metadata_name} lists")
                elif rel not in listed and rel != metadata_name:
                    what = "file" if entry.is_file(follow_symlinks=False) else "special file"
                    found.append(f"{what} {rel!r} is not listed in {metadata_name}")
    found.sort()
    if len(found) > _MAX_SHOWN:
        found[_MAX_SHOWN:] = [f"and {len(found) - _MAX_SHOWN} more unlisted entries"]
    return found
