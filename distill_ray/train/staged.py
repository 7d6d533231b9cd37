"""Staged training (``train.stages``): phases run in order, each a whole ``train_student`` run with its own
objectives, data and length, started from the student the previous phase wrote. PanGu-Coder's recipe is two of
them: causal LM on raw code (``data: raw_code``, the ``sft`` objective on rows whose prompt is empty and whose
target is code), then ``sft`` + ``mlm`` on problem/solution pairs (the run's dataset).

Each phase is its own run (fresh optimizer state and LR schedule, as between the paper's stages); a run without
stages never comes here. The result is the last phase's student, with the phases' numbers summed, their loss
histories joined in order, and each phase's own record in ``TrainResult.stages``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

from distill_ray.config import CompressConfig, StageConfig
from distill_ray.train.config import TrainResult, TrainSettings

STAGES_DIR = "stages"   # under the output: the students of the phases before the last, while the next one needs them


def train_stages(init_dir: Path, data, output_dir: Path, settings: TrainSettings) -> TrainResult:
    """Run ``settings.stages`` in order from ``init_dir``; the last phase writes ``output_dir``."""
    from distill_ray.train.trainer import RESULT_FILE, train_student

    done: list[tuple[str, StageConfig, TrainResult]] = []
    current = Path(init_dir)
    for index, stage in enumerate(settings.stages):
        name = stage.name or f"stage{index}"
        last = index == len(settings.stages) - 1
        out = output_dir if last else output_dir / STAGES_DIR / f"{index}-{name}"
        print(f"[train] stage {index} {name!r}: {dict(stage.objectives)} on {stage.data}", flush=True)
        result = train_student(current, stage_data(stage, data, settings), out, stage_settings(settings, stage, last))
        if done:   # the previous phase's student has been trained from: only its record is kept
            shutil.rmtree(current, ignore_errors=True)
        done.append((name, stage, result))
        current = Path(result.output_dir)
    shutil.rmtree(output_dir / STAGES_DIR, ignore_errors=True)
    combined = combine(done)
    (output_dir / RESULT_FILE).write_text(json.dumps(
        {"init_dir": str(init_dir), "settings": settings.model_dump(), "result": asdict(combined)}, indent=2))
    return combined


def stage_settings(settings: TrainSettings, stage: StageConfig, last: bool = True) -> TrainSettings:
    """The run's settings with the phase's objectives, length and LR (and no stages: a phase is one run).
    ``train.compress`` applies to the last phase: a phase's schedule starts dense, undoing earlier pruning."""
    return settings.model_copy(update=dict(
        objectives=dict(stage.objectives), max_steps=stage.max_steps, epochs=stage.epochs,
        lr=stage.lr or settings.lr, stages=[], run_name=None,
        compress=settings.compress if last else CompressConfig()))


def stage_data(stage: StageConfig, data, settings: TrainSettings):
    """The run's rows, or ``max_steps`` optimizer steps' worth of standard-library snippets (``heal.py``'s
    general text: code every machine running us has), seeded by the run's seed."""
    if stage.data == "dataset":
        return data
    import ray.data

    from distill_ray.train.heal import general_text_rows

    rows = stage.max_steps * settings.batch_size * settings.workers * settings.grad_accum
    return ray.data.from_items(general_text_rows(rows, seed=settings.seed))


def combine(done: list[tuple[str, StageConfig, TrainResult]]) -> TrainResult:
    """One result for the staged run: the last phase's student, sums of the counts and times, the loss
    histories in order, and one record per phase."""
    results = [result for _, _, result in done]
    total = lambda name: sum(getattr(r, name) for r in results)   # noqa: E731
    joined = lambda name: [x for r in results for x in getattr(r, name)]   # noqa: E731
    return TrainResult(
        output_dir=results[-1].output_dir, steps=total("steps"), samples=total("samples"), tokens=total("tokens"),
        seconds=total("seconds"), loss_history=joined("loss_history"), data_seconds=total("data_seconds"),
        epoch_start_seconds=total("epoch_start_seconds"), setup_seconds=total("setup_seconds"),
        wall_seconds=total("wall_seconds"), input_tokens=total("input_tokens"),
        checkpoint_path=results[-1].checkpoint_path, resumed_from=joined("resumed_from"),
        peak_rss_mb=max(r.peak_rss_mb for r in results), history=joined("history"),
        step_seconds=joined("step_seconds"),
        stages=[{"name": name, "data": stage.data, "objectives": dict(stage.objectives), "steps": result.steps,
                 "samples": result.samples, "tokens": result.tokens, "seconds": result.seconds,
                 "loss_history": result.loss_history}
                for name, stage, result in done])
