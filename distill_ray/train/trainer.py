"""``train_student``: wire the per-worker loop into a Ray Train ``TorchTrainer`` and collect the result."""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from distill_ray.mlflow_log import MlflowRun, mlflow_run
from distill_ray.train.config import TrainResult, TrainSettings
from distill_ray.train.data import as_dataset
from distill_ray.train.loop import DATASET_PREFIX, HF_DIR, train_loop_per_worker
from distill_ray.train.moe import release_upcycled, upcycle_for_run
from distill_ray.train.student import PROVENANCE_FILE

RESULT_FILE = "train_result.json"   # written next to the exported student: settings and metrics
RUN_STORAGE = "_ray_train"          # Ray Train's checkpoints under the output, when train.storage_path is unset


def train_student(init_dir: str | Path, data, output_dir: str | Path,
                  settings: TrainSettings | None = None) -> TrainResult:
    """Fine-tune the student in ``init_dir`` (a HF directory) on ``data`` and save it to ``output_dir``.

    data: a ray.data.Dataset or a path to a Parquet directory; uses columns `prompt_text` (the full prompt
    string, already chat-templated, ending where the answer starts) and `target_text` (what the student must
    write). Rows are tokenized in the workers (tokenizer from init_dir); an EOS token is appended to the
    target; labels are -100 on prompt tokens and padding. Ray must already be initialised. With
    ``settings.stages`` the phases run in order (``staged.py``), each a run of this function.
    """
    settings = settings or TrainSettings()
    init_dir, output_dir = Path(init_dir).resolve(), Path(output_dir).resolve()
    if settings.moe.experts:   # before any phase: a staged run's later phases start from an MoE student already
        init_dir = upcycle_for_run(init_dir, output_dir, settings.moe, settings.seed)
    if settings.stages:
        from distill_ray.train.staged import train_stages

        staged = train_stages(init_dir, data, output_dir, settings)
        release_upcycled(output_dir)
        return staged
    splits = split_for_workers(as_dataset(data), settings)
    with mlflow_run(settings.mlflow_uri, output_dir.name, settings.model_dump()) as tracking:
        trainer = _make_trainer(init_dir, splits, output_dir, settings, tracking)
        started = time.perf_counter()
        result = trainer.fit()  # raises TrainingFailedError once max_failures restarts are used up
        wall = time.perf_counter() - started

    export_checkpoint(result.checkpoint, init_dir, output_dir)
    if settings.compress.export_int8:
        from distill_ray.train.int8 import INT8_DIR, export_int8

        export_int8(output_dir, output_dir / INT8_DIR)
    train_result = write_result(result, init_dir, output_dir, settings, wall)
    release_run_storage(settings, output_dir)
    release_upcycled(output_dir)
    return train_result


def release_run_storage(settings: TrainSettings, output_dir: Path) -> None:
    """Remove the checkpoints of a finished run kept under the output (no ``storage_path`` given): the last
    one is the exported student, the others only served a resume that can no longer happen (each run gets a
    fresh name). A full-size student copy per run otherwise (0.5 GB for SmolLM2-135M, more with optimizer
    state). Checkpoints in a ``storage_path`` the user chose are theirs and stay."""
    if settings.storage_path is None:
        shutil.rmtree(output_dir / RUN_STORAGE, ignore_errors=True)


def write_result(result, init_dir: Path, output_dir: Path, settings: TrainSettings, wall: float,
                 **extra) -> TrainResult:
    """The run's TrainResult from Ray Train's result; saved with the settings (and ``extra``) beside the student."""
    metrics = result.metrics or {}
    train_result = TrainResult(
        output_dir=str(output_dir), steps=metrics["step"], samples=metrics["samples"],
        tokens=metrics["tokens"], seconds=metrics["seconds"], loss_history=list(metrics["loss_history"]),
        data_seconds=metrics.get("data_seconds", 0.0), epoch_start_seconds=metrics.get("epoch_start_seconds", 0.0),
        setup_seconds=metrics.get("setup_seconds", 0.0), wall_seconds=wall,
        input_tokens=metrics.get("input_tokens", 0),
        # Kept only where it outlives the run (release_run_storage).
        checkpoint_path=result.checkpoint.path if result.checkpoint and settings.storage_path else None,
        resumed_from=list(metrics.get("resumed_from", [])), peak_rss_mb=metrics.get("peak_rss_mb", 0.0),
        history=list(metrics.get("history", [])), step_seconds=list(metrics.get("step_seconds", [])),
    )
    (output_dir / RESULT_FILE).write_text(json.dumps(
        {"init_dir": str(init_dir), "settings": settings.model_dump(), **extra, "result": asdict(train_result)},
        indent=2))
    return train_result


def split_for_workers(dataset, settings: TrainSettings) -> list:
    """One materialised split per worker: the rows are read, filtered and converted once per run (not once
    per epoch), shuffled once across workers, and split into equal parts, so every worker takes the same
    number of steps; at most ``num_workers - 1`` rows are left out, and which ones depends on the seed.

    The shuffle is a sort on a seeded hash of each row's text: the same rows and seed give the same splits
    in the same order on every run (Ray Data's random_shuffle and streaming split do not). Up to
    ``DRIVER_SPLIT_ROWS`` rows the driver sorts and cuts them itself, with the same result: Ray Data's sort and
    equal split are a few seconds of tasks, most of a small run's data time."""
    keyed = dataset.map_batches(_order_key, fn_kwargs={"seed": settings.seed}, batch_format="pandas").materialize()
    if keyed.count() <= DRIVER_SPLIT_ROWS:
        return split_in_driver(keyed, settings.workers)
    ordered = keyed.sort(ORDER_COLUMN).drop_columns([ORDER_COLUMN])
    # Without it the map after the sort hands blocks on in completion order, undoing the sort.
    ordered.context.execution_options.preserve_order = True
    return ordered.materialize().split(settings.workers, equal=True)


DRIVER_SPLIT_ROWS = 20_000   # a few tens of MB of prompt text in the driver at most


def split_in_driver(keyed, workers: int) -> list:
    """split_for_workers' sort and equal split done in the driver: contiguous runs of the sorted rows."""
    import ray.data

    frame = keyed.to_pandas().sort_values(ORDER_COLUMN, kind="stable").drop(columns=[ORDER_COLUMN])
    size = len(frame) // workers
    return [ray.data.from_pandas(frame.iloc[rank * size:(rank + 1) * size].reset_index(drop=True))
            for rank in range(workers)]


ORDER_COLUMN = "_distill_order"
KEY_COLUMNS = ("task_id", "prompt_text", "target_text", "label_weight")   # rows equal on these may tie: harmless


def _order_key(batch, seed: int):
    import hashlib

    columns = [c for c in KEY_COLUMNS if c in batch]
    batch[ORDER_COLUMN] = [hashlib.blake2b(repr((seed, *values)).encode(), digest_size=8).hexdigest()
                           for values in zip(*(batch[c] for c in columns))]
    return batch


def _make_trainer(init_dir: Path, splits: list, output_dir: Path, settings: TrainSettings, tracking=None):
    from ray.train import DataConfig
    from ray.train.torch import TorchTrainer

    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "init_dir": str(init_dir),
            "settings": settings.model_dump(),
            # The LR schedule decays to 0 at it; the compressor ramps sparsity and starts QAT by it.
            "run_steps": run_steps(splits, settings),
            # Workers started by an existing cluster may not inherit it; the op build is reused through it.
            "torch_extensions_dir": os.environ.get("TORCH_EXTENSIONS_DIR"),
        },
        scaling_config=scaling_config(settings),
        run_config=run_config(settings, output_dir, tracking),
        # Each worker reads its own split whole (``loop.DATASET_PREFIX``): no streaming split, whose
        # block-to-worker assignment changes from run to run.
        datasets={f"{DATASET_PREFIX}{rank}": split for rank, split in enumerate(splits)},
        dataset_config=DataConfig(datasets_to_split=[], execution_options=_ordered()),
    )


def scaling_config(settings: TrainSettings):
    from ray.train import ScalingConfig

    resources = {"CPU": settings.cpus_per_worker}
    if settings.use_gpu:
        resources["GPU"] = 1
    return ScalingConfig(num_workers=settings.workers, use_gpu=settings.use_gpu, resources_per_worker=resources)


def run_config(settings: TrainSettings, output_dir: Path, tracking: MlflowRun | None = None):
    """Ray Train's run settings: storage, restarts, checkpoints kept, and the tracking callbacks (TensorBoard;
    MLflow when ``tracking`` is the run the driver opened)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig

    from distill_ray.train.tracking import MlflowCallback, TensorBoardCallback, log_dir_for

    callbacks = [TensorBoardCallback(log_dir_for(output_dir))] if settings.tensorboard else []
    if tracking is not None:
        callbacks.append(MlflowCallback(tracking.uri, tracking.run_id))

    return RunConfig(
        # A fresh name per run: Ray Train resumes a run whose name already exists in the storage.
        name=settings.run_name or time.strftime("train-%Y%m%d-%H%M%S"),
        storage_path=settings.storage_path or str(output_dir / RUN_STORAGE),
        failure_config=FailureConfig(max_failures=settings.max_failures),
        checkpoint_config=CheckpointConfig(num_to_keep=settings.keep_checkpoints),
        callbacks=callbacks,
    )


def _ordered():
    """Execution options that hand blocks on in their order (Ray Train's default does not)."""
    from ray.data import ExecutionOptions

    return ExecutionOptions(preserve_order=True)


def run_steps(splits: list, settings: TrainSettings) -> int:
    """Optimizer steps the run will take: its epochs', or max_steps if that ends it first."""
    micro_batches = math.ceil(splits[0].count() / settings.batch_size)
    epoch_steps = max(1, settings.epochs * math.ceil(micro_batches / settings.grad_accum))
    return min(settings.max_steps or epoch_steps, epoch_steps)


def export_checkpoint(checkpoint, init_dir: Path, output_dir: Path) -> None:
    """Copy the student from the final checkpoint (written by rank 0 wherever it ran) to ``output_dir``."""
    if checkpoint is None:
        raise RuntimeError("training finished without a final checkpoint")
    output_dir.mkdir(parents=True, exist_ok=True)
    with checkpoint.as_directory() as directory:
        shutil.copytree(Path(directory) / HF_DIR, output_dir, dirs_exist_ok=True)
    if (init_dir / PROVENANCE_FILE).exists():
        shutil.copy2(init_dir / PROVENANCE_FILE, output_dir / PROVENANCE_FILE)
