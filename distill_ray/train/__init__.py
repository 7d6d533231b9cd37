"""Student training: build a student, fine-tune it with Ray Train + DeepSpeed, export it for transformers.

- ``student``: students from a subset of the teacher's layers, or tiny ones from a config
- ``data``: tokenization, target-only labels, left-padded collation
- ``objectives``: losses by name (``sft`` now; issue 5's objectives plug in here)
- ``loop``: the per-worker loop (DeepSpeed engine, dataset shard, checkpoints, export)
- ``trainer``: ``train_student``, the TorchTrainer wiring
"""

from distill_ray.train.config import TrainResult, TrainSettings
from distill_ray.train.student import build_student, build_student_from_config, evenly_spaced_layers
from distill_ray.train.trainer import train_student

__all__ = [
    "TrainResult",
    "TrainSettings",
    "build_student",
    "build_student_from_config",
    "evenly_spaced_layers",
    "train_student",
]
