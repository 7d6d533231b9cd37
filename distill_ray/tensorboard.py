"""TensorBoard event files of scalars, written synchronously, in pure Python.

Why not tensorboardX (which Ray installs): importing any part of it imports torch, ~170 MB more in a `generate`
driver that otherwise never loads it, and its writer's ``flush()`` returns before its background thread has
written what was added. An event file is a sequence of records (TFRecord framing: the length, its masked CRC-32C,
the data, its masked CRC-32C), each an ``Event`` protocol buffer; the few fields a scalar needs are encoded here
by hand (tensorflow/core/util/event.proto, tensorboard's summary.proto).
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
import time
from pathlib import Path

_FILE_COUNT = itertools.count()


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1   # Castagnoli, reflected
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        bits, value = value & 0x7F, value >> 7
        out.append(bits | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def scalar_event(tag: str, value: float, step: int, wall_time: float) -> bytes:
    """Event{wall_time: 1 (double), step: 2 (int64), summary: 5 {value: 1 {tag: 1, simple_value: 2 (float)}}}."""
    summary_value = _length_delimited(1, tag.encode()) + _varint(2 << 3 | 5) + struct.pack("<f", value)
    return (_varint(1 << 3 | 1) + struct.pack("<d", wall_time) + _varint(2 << 3 | 0) + _varint(step & (2**64 - 1))
            + _length_delimited(5, _length_delimited(1, summary_value)))


def version_event(wall_time: float) -> bytes:
    """The first event of every file: Event{wall_time: 1, file_version: 3 = "brain.Event:2"}."""
    return _varint(1 << 3 | 1) + struct.pack("<d", wall_time) + _length_delimited(3, b"brain.Event:2")


def record(data: bytes) -> bytes:
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data))


class ScalarWriter:
    """``with ScalarWriter(log_dir) as board: board.add_scalar(tag, value, step)``: a new event file in
    ``log_dir`` (TensorBoard reads every file of a directory as one run); each scalar is on disk when
    ``add_scalar`` returns."""

    def __init__(self, log_dir: str | Path):
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}."
                f"{next(_FILE_COUNT):06d}")   # in the order written
        self.path = Path(log_dir) / name
        self._file = open(self.path, "ab")
        self._write(version_event(time.time()))

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self._write(scalar_event(tag, float(value), int(step), time.time()))

    def _write(self, event: bytes) -> None:
        self._file.write(record(event))
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "ScalarWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
