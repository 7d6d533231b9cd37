"""Our event writer against tensorboardX's reader: CRC-32C, the Event encoding, files in order, no torch."""

import subprocess
import sys

import pytest

from distill_ray.tensorboard import ScalarWriter, crc32c
from tests.tensorboard_events import records, scalars


def test_crc32c_matches_the_standard_check_value_and_tensorboardx():
    from tensorboardX.crc32c import crc32c as reference

    assert crc32c(b"123456789") == 0xE3069283   # the CRC-32C (Castagnoli) check value
    for data in (b"", b"\x00" * 7, bytes(range(256)), b"brain.Event:2"):
        assert crc32c(data) == reference(data)


def test_scalars_read_back_with_their_steps_in_the_order_written(tmp_path):
    from tensorboardX.proto.event_pb2 import Event

    with ScalarWriter(tmp_path) as board:
        board.add_scalar("train/loss", 2.5, 1)
        board.add_scalar("train/loss", 1.25, 2)
        board.add_scalar("train/tokens", 123456, 2)
    with ScalarWriter(tmp_path) as board:          # a second file in the same directory: one run
        board.add_scalar("train/loss", 0.5, 2**40)   # a step past 32 bits
    events = scalars(tmp_path)
    assert events == {"train/loss": [(1, 2.5), (2, 1.25), (2**40, 0.5)], "train/tokens": [(2, 123456.0)]}
    first = Event.FromString(records(sorted(tmp_path.iterdir())[0])[0])
    assert first.file_version == "brain.Event:2" and first.wall_time > 0


def test_importing_the_writer_loads_no_torch():
    code = "import sys, distill_ray.tensorboard, distill_ray.resumable; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
