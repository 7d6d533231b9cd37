"""Student training: build a student, fine-tune it with Ray Train + DeepSpeed, export it for transformers.

- ``student``: students from a subset of the teacher's layers, or tiny ones from a config
- ``moe``: mixture-of-experts students upcycled from a dense one (Mixtral), ``moe_run`` measures them
- ``compress``: pruning to a target sparsity and int8 QAT during training; ``int8``: the int8 export, loader
  and Linear; ``compress_run`` measures them
- ``data``: tokenization, target-only labels, left-padded collation
- ``batch``: a micro-batch with the extras objectives need (label weights, stored top-k, privacy, icl inputs)
- ``losses``: the losses as pure tensor functions (KL with temperature, soft labels, swing temperature, noise)
- ``objectives``: ``Objective``, the weighted sum of ``sft``, ``soft``, ``kd``, ``swing``, ``icl``
- ``privacy``: which target tokens may carry private information (swing)
- ``canary``: canary exposure of a trained model; kd vs swing on a tiny model
- ``loop``: the per-worker loop (DeepSpeed engine, dataset shard, checkpoints, export)
- ``trainer``: ``train_student``, the TorchTrainer wiring
"""

from distill_ray.train.config import TrainResult, TrainSettings
from distill_ray.train.student import build_student, build_student_from_config, first_and_last_layers
from distill_ray.train.trainer import train_student

__all__ = [
    "TrainResult",
    "TrainSettings",
    "build_student",
    "build_student_from_config",
    "first_and_last_layers",
    "train_student",
]
