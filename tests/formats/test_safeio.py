"""formats.safeio: atomic directory writes and their verification."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from formats.safeio import (
    FormatVersionError,
    IntegrityError,
    read_json,
    sha256_file,
    verify_directory,
    write_directory_atomically,
    write_json,
)

WEIGHTS = bytes(range(256)) * 64


def _payload(weights: bytes = WEIGHTS, note: str = "v1") -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        (tmp / "weights.safetensors").write_bytes(weights)
        (tmp / "state").mkdir()
        (tmp / "state" / "optimizer.bin").write_bytes(b"\x00\x01" * 10)
        (tmp / "state" / "empty.txt").write_bytes(b"")
        (tmp / "note.txt").write_text(note, encoding="utf-8")

    return write


def _siblings(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir())


def _write(target: Path, note: str = "v1") -> Path:
    return write_directory_atomically(target, _payload(note=note), metadata={"version": 1})


def test_round_trip(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    assert _write(target) == target
    meta = verify_directory(target)
    assert meta["version"] == 1
    assert list(meta["files"]) == [
        "note.txt",
        "state/empty.txt",
        "state/optimizer.bin",
        "weights.safetensors",
    ]
    assert meta["files"]["weights.safetensors"] == {
        "sha256": hashlib.sha256(WEIGHTS).hexdigest(),
        "size": len(WEIGHTS),
    }
    assert meta["files"]["state/empty.txt"]["size"] == 0
    assert "metadata.json" not in meta["files"]
    assert _siblings(tmp_path) == ["ckpt"]  # no temp dir left behind
    on_disk = (target / "metadata.json").read_text(encoding="utf-8")
    assert on_disk == json.dumps(meta, sort_keys=True, indent=2) + "\n"


def test_custom_metadata_name(tmp_path: Path) -> None:
    target = tmp_path / "artifact"
    write_directory_atomically(target, _payload(), metadata_name="manifest.json", metadata={})
    assert not (target / "metadata.json").exists()
    assert "weights.safetensors" in verify_directory(target, metadata_name="manifest.json")["files"]
    with pytest.raises(IntegrityError, match=r"metadata\.json is missing"):
        verify_directory(target)


def test_sha256_file_streams_large_files(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    (tmp_path / "big").write_bytes(data)
    assert sha256_file(tmp_path / "big") == hashlib.sha256(data).hexdigest()


def test_tampered_byte_names_the_file(tmp_path: Path) -> None:
    target = _write(tmp_path / "ckpt")
    path = target / "weights.safetensors"
    data = bytearray(path.read_bytes())
    data[1000] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as info:
        verify_directory(target)
    message = str(info.value)
    assert f"checkpoint {target}" in message
    assert "'weights.safetensors' has sha256" in message
    assert hashlib.sha256(WEIGHTS).hexdigest()[:12] in message
    assert "corrupt or were modified" in message
    assert "optimizer.bin" not in message


def test_truncated_file(tmp_path: Path) -> None:
    target = _write(tmp_path / "ckpt")
    with open(target / "state" / "optimizer.bin", "r+b") as fh:
        fh.truncate(5)
    with pytest.raises(IntegrityError, match=r"'state/optimizer.bin' is 5 bytes but .* lists 20"):
        verify_directory(target)


def test_missing_files_are_all_reported(tmp_path: Path) -> None:
    target = _write(tmp_path / "ckpt")
    (target / "weights.safetensors").unlink()
    (target / "note.txt").unlink()
    with pytest.raises(IntegrityError) as info:
        verify_directory(target)
    assert "'note.txt' is listed in metadata.json but missing" in str(info.value)
    assert "'weights.safetensors' is listed in metadata.json but missing" in str(info.value)


def test_unlisted_extra_files_are_allowed(tmp_path: Path) -> None:
    target = _write(tmp_path / "ckpt")
    (target / "README").write_text("added later", encoding="utf-8")
    (target / "tune").mkdir()  # what Ray Tune may add to a checkpoint directory
    (target / "tune" / "state.json").write_text("{}", encoding="utf-8")
    (target / "latest").symlink_to(target / "note.txt")
    assert "README" not in verify_directory(target)["files"]


def test_exact_accepts_exactly_the_listed_files(tmp_path: Path) -> None:
    target = _write(tmp_path / "ckpt")  # has a subdirectory and an empty file
    assert verify_directory(target, exact=True)["files"].keys() == {
        "note.txt",
        "state/empty.txt",
        "state/optimizer.bin",
        "weights.safetensors",
    }


def _fifo(path: Path) -> None:
    os.mkfifo(path)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda t: (t / "README").write_text("x"), r"file 'README' is not listed in metadata"),
        (lambda t: (t / "state" / "x.bin").write_bytes(b""), r"file 'state/x\.bin' is not listed"),
        (lambda t: (t / "extra").mkdir(), r"directory 'extra/' holds no file metadata\.json lists"),
        (lambda t: (t / "link").symlink_to(t / "note.txt"), r"'link' is a symbolic link"),
        (lambda t: (t / "state" / "up").symlink_to(t), r"'state/up' is a symbolic link"),
        (lambda t: (t / "dangling").symlink_to(t / "nowhere"), r"'dangling' is a symbolic link"),
        (lambda t: _fifo(t / "pipe"), r"special file 'pipe' is not listed"),
        (lambda t: (t / "state" / "metadata.json").write_text("{}"), r"'state/metadata\.json'"),
    ],
    ids=[
        "file",
        "nested-file",
        "directory",
        "link",
        "nested-link",
        "dangling-link",
        "fifo",
        "meta",
    ],
)
def test_exact_refuses_every_unlisted_entry_by_name(
    tmp_path: Path, make: Callable[[Path], Any], expected: str
) -> None:
    target = _write(tmp_path / "ckpt")
    make(target)
    verify_directory(target)  # the default stays lenient (checkpoints)
    with pytest.raises(IntegrityError, match=expected):
        verify_directory(target, exact=True)


def test_exact_refuses_a_symlinked_directory_and_counts_the_rest(tmp_path: Path) -> None:
    target = _write(tmp_path / "ckpt")
    link = tmp_path / "via-link"
    link.symlink_to(target, target_is_directory=True)
    assert verify_directory(link)["files"]  # lenient: the link is followed
    with pytest.raises(IntegrityError, match=r"via-link: is a symbolic link"):
        verify_directory(link, exact=True)
    for i in range(15):
        (target / f"extra{i:02d}").write_bytes(b"")
    with pytest.raises(IntegrityError, match=r"extra09.*and 5 more unlisted entries") as info:
        verify_directory(target, exact=True)
    assert "extra10" not in str(info.value)


def _rewrite_files(target: Path, change: Callable[[dict[str, Any]], None]) -> None:
    meta = json.loads((target / "metadata.json").read_text(encoding="utf-8"))
    change(meta["files"])
    (target / "metadata.json").write_text(json.dumps(meta), encoding="utf-8")


@pytest.mark.parametrize(
    ("rel", "expected"),
    [
        ("../x", "not a plain relative path"),
        ("state/../../x", "not a plain relative path"),
        ("/etc/passwd", "not a plain relative path"),
        ("./note.txt", "not a plain relative path"),
        ("state//optimizer.bin", "not a plain relative path"),
        ("state\\optimizer.bin", "backslash"),
        ("metadata.json", "metadata file"),
    ],
)
def test_unsafe_paths_in_metadata_are_rejected(tmp_path: Path, rel: str, expected: str) -> None:
    outside = tmp_path / "x"
    outside.write_bytes(b"secret")
    target = _write(tmp_path / "ckpt")
    entry = {"sha256": hashlib.sha256(b"secret").hexdigest(), "size": 6}
    _rewrite_files(target, lambda files: files.update({rel: entry}))
    with pytest.raises(IntegrityError, match=expected) as info:
        verify_directory(target)
    assert repr(rel) in str(info.value)


def test_symlinked_file_pointing_outside_is_rejected(tmp_path: Path) -> None:
    target = _write(tmp_path / "ckpt")
    outside = tmp_path / "outside.bin"
    outside.write_bytes(WEIGHTS)  # same content: only the link itself is wrong
    (target / "weights.safetensors").unlink()
    (target / "weights.safetensors").symlink_to(outside)
    with pytest.raises(IntegrityError, match=r"'weights\.safetensors' has a symbolic link"):
        verify_directory(target)


def test_symlinked_directory_component_is_rejected(tmp_path: Path) -> None:
    target = _write(tmp_path / "ckpt")
    outside = tmp_path / "elsewhere"
    (target / "state").rename(outside)
    (target / "state").symlink_to(outside, target_is_directory=True)
    with pytest.raises(IntegrityError, match="symbolic link at 'state'"):
        verify_directory(target)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"{not json", "invalid JSON at line 1"),
        (b"[1, 2]", "must be an object with a 'files' object"),
        (b'{"version": 1}', "must be an object with a 'files' object"),
        (b'{"files": {}, "x": NaN}', "NaN is not valid JSON"),
        (b'{"files": {}, "files": {}}', "duplicate key 'files'"),
        (b'{"files": {"a": {"sha256": "xyz", "size": 1}}}', "'a' has a malformed entry"),
        (b'{"files": {"a": {"sha256": "' + b"0" * 64 + b'", "size": -1}}}', "malformed"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_invalid_metadata(tmp_path: Path, content: bytes, expected: str) -> None:
    target = _write(tmp_path / "ckpt")
    (target / "metadata.json").write_bytes(content)
    with pytest.raises(IntegrityError, match=expected):
        verify_directory(target)


def test_metadata_size_cap_and_missing_directory(tmp_path: Path) -> None:
    target = _write(tmp_path / "ckpt")
    with pytest.raises(IntegrityError, match="larger than the limit of 100 bytes"):
        verify_directory(target, max_metadata_bytes=100)
    with pytest.raises(IntegrityError, match="not a directory"):
        verify_directory(tmp_path / "nope")


def test_write_and_read_json(tmp_path: Path) -> None:
    write_json(tmp_path / "a.json", {"b": [1, 2.5], "a": "é"})
    raw = (tmp_path / "a.json").read_bytes()
    assert raw == '{\n  "a": "é",\n  "b": [\n    1,\n    2.5\n  ]\n}\n'.encode()
    assert read_json(tmp_path / "a.json", max_bytes=1000) == {"a": "é", "b": [1, 2.5]}
    with pytest.raises(ValueError, match="Out of range float"):
        write_json(tmp_path / "nan.json", {"x": float("nan")})


def test_crash_inside_write_files_cleans_up_and_keeps_previous(tmp_path: Path) -> None:
    target = _write(tmp_path / "ckpt", note="old")

    def crash(tmp: Path) -> None:
        (tmp / "weights.safetensors").write_bytes(b"half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        write_directory_atomically(target, crash, metadata={"version": 2})
    assert _siblings(tmp_path) == ["ckpt"]
    assert verify_directory(target)["version"] == 1
    assert (target / "note.txt").read_text(encoding="utf-8") == "old"


def test_replacing_an_existing_target(tmp_path: Path) -> None:
    target = _write(tmp_path / "ckpt", note="old")
    (target / "stale.bin").write_bytes(b"from the old version")
    write_directory_atomically(target, _payload(note="new"), metadata={"version": 2})
    assert verify_directory(target)["version"] == 2
    assert (target / "note.txt").read_text(encoding="utf-8") == "new"
    assert not (target / "stale.bin").exists()
    assert _siblings(tmp_path) == ["ckpt"]  # the old version was removed


@pytest.mark.parametrize("failing_call", [1, 2])
def test_crash_at_rename_keeps_previous_valid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing_call: int
) -> None:
    """Call 1 moves the old version aside, call 2 moves the new one in; both may fail."""
    target = _write(tmp_path / "ckpt", note="old")
    real_replace = os.replace
    calls: list[tuple[str, str]] = []

    def flaky_replace(src: Any, dst: Any) -> None:
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == failing_call:
            raise OSError("simulated crash during rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", flaky_replace)
    with pytest.raises(OSError, match="simulated crash"):
        write_directory_atomically(target, _payload(note="new"), metadata={"version": 2})
    monkeypatch.undo()
    assert calls[0][0] == "ckpt" and calls[0][1].startswith(".ckpt.old-")
    if failing_call == 2:
        assert calls[1][0].startswith(".ckpt.tmp-") and calls[1][1] == "ckpt"
        assert calls[2] == (calls[0][1], "ckpt")  # the old version was put back
    assert _siblings(tmp_path) == ["ckpt"]
    assert verify_directory(target)["version"] == 1
    assert (target / "note.txt").read_text(encoding="utf-8") == "old"


def test_first_write_rename_failure_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_replace(src: Any, dst: Any) -> None:
        raise OSError("simulated crash during rename")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="simulated crash"):
        _write(tmp_path / "ckpt")
    assert _siblings(tmp_path) == []


def test_refuses_symlinks_and_reserved_names(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("x", encoding="utf-8")

    def with_link(tmp: Path) -> None:
        (tmp / "data.bin").write_bytes(b"1")
        (tmp / "link.txt").symlink_to(outside)

    with pytest.raises(IntegrityError, match=r"symbolic link 'link\.txt'"):
        write_directory_atomically(tmp_path / "a", with_link, metadata={})

    def with_dir_link(tmp: Path) -> None:
        (tmp / "sub").symlink_to(tmp_path, target_is_directory=True)

    with pytest.raises(IntegrityError, match="symbolic link 'sub'"):
        write_directory_atomically(tmp_path / "b", with_dir_link, metadata={})

    def with_metadata(tmp: Path) -> None:
        (tmp / "metadata.json").write_text("{}", encoding="utf-8")

    with pytest.raises(IntegrityError, match="metadata file"):
        write_directory_atomically(tmp_path / "c", with_metadata, metadata={})
    with pytest.raises(ValueError, match="must not contain 'files'"):
        write_directory_atomically(tmp_path / "d", _payload(), metadata={"files": {}})
    assert _siblings(tmp_path) == ["outside.txt"]


def test_refuses_to_replace_a_file(tmp_path: Path) -> None:
    (tmp_path / "ckpt").write_text("not a directory", encoding="utf-8")
    with pytest.raises(IntegrityError, match="exists and is not a directory"):
        _write(tmp_path / "ckpt")
    assert (tmp_path / "ckpt").read_text(encoding="utf-8") == "not a directory"


def test_version_error_is_a_checkpoint_error() -> None:
    assert issubclass(FormatVersionError, IntegrityError)
    assert issubclass(IntegrityError, ValueError)


def test_metadata_derived_from_the_file_table(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []

    def derive(files: dict[str, dict[str, Any]]) -> dict[str, Any]:
        seen.append(files)
        return {"weights": files["weights.safetensors"]["sha256"]}

    target = write_directory_atomically(tmp_path / "ckpt", _payload(), metadata=derive)
    meta = verify_directory(target, exact=True)
    assert meta["weights"] == hashlib.sha256(WEIGHTS).hexdigest()
    assert seen == [meta["files"]]
    with pytest.raises(ValueError, match="must not contain 'files'"):
        write_directory_atomically(
            tmp_path / "bad", _payload(), metadata=lambda files: {"files": files}
        )
    assert _siblings(tmp_path) == ["ckpt"]


def _dead_pid() -> int:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_next_write_clears_what_a_killed_writer_left(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    write_directory_atomically(target, _payload(), metadata={"v": 1})
    dead = _dead_pid()
    abandoned = tmp_path / f".ckpt.tmp-{dead}-abc123"
    abandoned.mkdir()
    (abandoned / "weights.bin").write_bytes(b"half")
    live = tmp_path / f".ckpt.tmp-{os.getpid()}-def456"  # a writer still at work
    live.mkdir()
    stale_old = tmp_path / f".ckpt.old-{dead}-0a0a0a"
    stale_old.mkdir()
    elsewhere = tmp_path / f".ckpt_7.tmp-{dead}-bbbbbb"  # another target's, killed too
    elsewhere.mkdir()
    write_directory_atomically(target, _payload(note="v2"), metadata={"v": 2})
    assert not abandoned.exists() and not stale_old.exists() and not elsewhere.exists()
    assert live.exists()
    assert verify_directory(target)["v"] == 2


def test_a_kill_between_the_two_renames_gets_the_previous_version_back(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    write_directory_atomically(target, _payload(), metadata={"v": 1})
    # As if killed after moving the old version aside and before moving the new one in.
    os.replace(target, tmp_path / f".ckpt.old-{_dead_pid()}-1b1b1b")
    write_directory_atomically(tmp_path / "other", _payload(), metadata={"v": 0})
    assert verify_directory(target)["v"] == 1  # the next write beside it put it back
    write_directory_atomically(target, _payload(note="v2"), metadata={"v": 2})
    assert verify_directory(target)["v"] == 2
    assert _siblings(tmp_path) == ["ckpt", "other"]
