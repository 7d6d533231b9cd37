"""Reading TensorBoard event files back in tests, with tensorboardX's decoder and CRC (an implementation
independent of ``distill_ray.tensorboard``'s)."""

from __future__ import annotations

import struct


def records(path) -> list[bytes]:
    """The data of each record of an event file, every length and data CRC checked."""
    from tensorboardX.record_writer import masked_crc32c

    data, offset, out = path.read_bytes(), 0, []
    while offset < len(data):
        header = data[offset:offset + 8]
        (length,) = struct.unpack("<Q", header)
        assert struct.unpack_from("<I", data, offset + 8)[0] == masked_crc32c(header), path
        payload = data[offset + 12:offset + 12 + length]
        assert struct.unpack_from("<I", data, offset + 12 + length)[0] == masked_crc32c(payload), path
        out.append(payload)
        offset += 12 + length + 4
    return out


def scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] from the event files in ``log_dir``, in the order they were written."""
    from tensorboardX.proto.event_pb2 import Event

    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        for payload in records(path):
            event = Event.FromString(payload)
            for value in event.summary.value:
                out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out
