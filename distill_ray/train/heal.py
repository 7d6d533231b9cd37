"""Heal a cut student before task training: distil the full model into it on general text.

A student cut to a few of its model's layers starts worse than uniform (it writes word salad). A short phase of
token-level KD from the full model (``kd``, the loaded teacher) on general text makes it a language model again,
so task training starts from a model that can write. The general text is the Python standard library's own
source, which every machine running us has and which is close to the programs students learn to write.
"""

from __future__ import annotations

import random
import sysconfig
from pathlib import Path

from distill_ray.config import CompressConfig, MoeConfig
from distill_ray.train.config import TrainSettings


def general_text_rows(count: int, chars: int = 800, seed: int = 0) -> list[dict]:
    """``count`` training rows (empty prompt, a snippet of standard-library source as the target), seeded."""
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    if not files:
        raise FileNotFoundError("no standard-library sources found to heal a student on")
    rng = random.Random(seed)
    rows = []
    while len(rows) < count:
        text = rng.choice(files).read_text(errors="replace")
        start = rng.randrange(max(1, len(text) - chars))
        snippet = text[start:start + chars]
        if snippet.strip():
            rows.append({"prompt_text": "", "target_text": snippet})
    return rows


def heal_student(cut_dir: str | Path, full_dir: str | Path, out_dir: str | Path, steps: int,
                 settings: TrainSettings) -> Path:
    """``steps`` optimizer steps of kd from ``full_dir`` into ``cut_dir`` on general text; the healed student
    is written to ``out_dir``. ``settings`` gives the workers, batch and learning rate of the run."""
    import ray.data

    from distill_ray.train.trainer import train_student

    rows_needed = steps * settings.batch_size * settings.workers * settings.grad_accum
    heal_settings = settings.model_copy(update=dict(
        objectives={"kd": 1.0}, teacher_dir=str(full_dir), max_steps=steps, epochs=1, kd_temperature=1.0,
        checkpoint_every=None, lr_schedule="constant", max_length=min(settings.max_length, 256), run_name=None,
        stages=[], moe=MoeConfig(),   # heal the dense cut: task training upcycles the healed student
        compress=CompressConfig()))   # and task training prunes and quantizes it
    rows = general_text_rows(rows_needed, seed=settings.seed)
    train_student(cut_dir, ray.data.from_items(rows), out_dir, heal_settings)
    return Path(out_dir)
