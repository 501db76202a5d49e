"""A self-contained TensorBoard event-file reader for tests (no tensorflow, no tensorboard).

An event file is a TFRecord file: each record is ``uint64 length``, ``uint32 masked CRC-32C of
the length bytes``, ``data``, ``uint32 masked CRC-32C of the data``, little-endian. The CRCs are
checked with an implementation of CRC-32C written here, independent of the writer's.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

_MASK = 0xFFFFFFFF


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), bit by bit."""
    crc = _MASK
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ _MASK


def masked_crc32c(data: bytes) -> int:
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & _MASK) + 0xA282EAD8) & _MASK


def read_records(path: Path) -> list[bytes]:
    """Every record's data, checking the framing and both CRCs of each record."""
    blob = path.read_bytes()
    records: list[bytes] = []
    pos = 0
    while pos < len(blob):
        header = blob[pos : pos + 8]
        assert len(header) == 8, f"truncated record header at byte {pos}"
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", blob[pos + 8 : pos + 12])
        assert header_crc == masked_crc32c(header), f"bad length CRC at byte {pos}"
        data = blob[pos + 12 : pos + 12 + length]
        assert len(data) == length, f"truncated record data at byte {pos}"
        (data_crc,) = struct.unpack("<I", blob[pos + 12 + length : pos + 16 + length])
        assert data_crc == masked_crc32c(data), f"bad data CRC at byte {pos}"
        records.append(data)
        pos += 16 + length
    return records


def read_events(path: Path) -> list[Any]:
    """The ``Event`` protos of an event file, parsed with tensorboardX's generated classes."""
    from tensorboardX.proto import event_pb2

    events = []
    for data in read_records(path):
        event = event_pb2.Event()
        event.ParseFromString(data)
        events.append(event)
    return events


def read_scalars(path: Path) -> list[tuple[int, dict[str, float]]]:
    """``(step, {tag: value})`` for every summary event, in file order."""
    return [
        (int(event.step), {value.tag: float(value.simple_value) for value in event.summary.value})
        for event in read_events(path)
        if event.HasField("summary")
    ]
