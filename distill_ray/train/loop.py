"""The per-worker training loop run by Ray Train: DeepSpeed engine, Ray Data shard, checkpoints, export.

Every worker runs ``train_loop_per_worker``. The driver hands each worker its own materialised split of the
rows (``train_<rank>``, equal sizes: ``trainer.split_for_workers``), so every worker takes the same number
of optimizer steps and the collectives (gradient reduction, the per-step all-reduces, checkpoints) line up.
Each epoch a worker reads its split in a new seeded order (a local shuffle), so a seed reproduces a run.

The loop owns gradient accumulation: an optimizer step is a *window* of up to ``grad_accum`` micro-batches
(the last one of an epoch may be shorter: no micro-batch is dropped). Before the window runs, its target
tokens are counted on every worker and summed, and each micro-batch's loss is its token sum divided by
that count, so every target token of the global batch weighs the same, whatever its micro-batch's size.
"""

from __future__ import annotations

import json
import math
import os
import random
import resource
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from distill_ray.metrics import gauge
from distill_ray.train.config import TrainSettings
from distill_ray.train.batch import make_batch
from distill_ray.train.compress import compressor_for_run
from distill_ray.train.objectives import TEACHER_MODEL_TERMS, DistillParams, Objective

STATE_FILE = "train_state.json"   # in every checkpoint: counters and loss history
DEEPSPEED_DIR = "deepspeed"       # DeepSpeed engine state (weights, ZeRO optimizer partitions, scheduler)
HF_DIR = "hf"                     # the exported student, in the final checkpoint


@dataclass
class TrainState:
    """What a resumed run continues from."""
    step: int = 0                 # optimizer steps taken
    epoch: int = 0
    micro_in_epoch: int = 0       # micro-batches of this worker's shard consumed in the current epoch
    samples: int = 0
    tokens: int = 0               # target tokens (all workers)
    input_tokens: int = 0         # non-padding tokens fed to the model (all workers)
    seconds: float = 0.0
    data_seconds: float = 0.0     # rank 0's share of ``seconds`` spent waiting for batches and tokenizing
    epoch_start_seconds: float = 0.0  # rank 0's share of ``seconds`` waiting for each epoch's first batch
    loss_history: list[float] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)   # rank 0's seconds of each optimizer step
    resumed_from: list[int] = field(default_factory=list)  # steps at which this run was restored
    history: list[dict] = field(default_factory=list)      # per-step records of loops that keep them (on-policy)


@dataclass
class _Window:
    """Sums over the micro-batches of one optimizer step on this worker."""
    started: float
    loss: float = 0.0             # weighted sum of the terms' token sums
    micro: int = 0
    samples: int = 0
    tokens: int = 0
    input_tokens: int = 0
    data_seconds: float = 0.0
    epoch_start_seconds: float = 0.0

    def add_wait(self, seconds: float, epoch_start: bool) -> None:
        """Time spent getting a batch; an epoch's first one waits for Ray Data to start executing."""
        if epoch_start:
            self.epoch_start_seconds += seconds
        else:
            self.data_seconds += seconds


def deepspeed_config(settings: TrainSettings) -> dict:
    bf16 = settings.use_gpu if settings.bf16 is None else settings.bf16
    zero = {"stage": settings.zero_stage}
    if settings.zero_stage == 3:
        # Without it ZeRO-3 save_16bit_model silently writes nothing; our export gathers weights itself.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    config = {
        "train_micro_batch_size_per_gpu": settings.batch_size,
        # The loop owns accumulation (windows that may end short at an epoch's end): DeepSpeed sees one
        # micro-batch per step, and with unmanaged accumulation backward() only accumulates, step() updates.
        "gradient_accumulation_steps": 1,
        "managed_gradient_accumulation": False,
        "gradient_clipping": settings.max_grad_norm,
        "zero_optimization": zero,
        # We pass torch's AdamW: DeepSpeed's own CPU Adam would JIT-compile another C++ op.
        "zero_allow_untested_optimizer": True,
        "bf16": {"enabled": bool(bf16)},
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }
    config.update(settings.deepspeed)
    return config


def lr_lambda(settings: TrainSettings, total_steps: int | None):
    """Multiplier of the base LR at each optimizer step: linear warmup, then the chosen schedule."""
    warmup, schedule = settings.warmup_steps, settings.lr_schedule
    if schedule not in ("constant", "linear", "cosine"):
        raise ValueError(f"unknown lr_schedule {schedule!r}")
    if schedule != "constant" and not total_steps:
        raise ValueError(f"lr_schedule {schedule!r} needs the total number of steps")

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def train_loop_per_worker(config: dict) -> dict:
    import ray.train

    settings = TrainSettings.model_validate(config["settings"])
    configure_process(settings, config.get("torch_extensions_dir"))
    rank = ray.train.get_context().get_world_rank()

    setup_start = time.perf_counter()
    checkpoint = ray.train.get_checkpoint()
    with checkpoint.as_directory() if checkpoint else nullcontext() as restored:
        restored = Path(restored) if restored else None
        engine, tokenizer = build_engine(config["init_dir"], settings, config.get("run_steps"), restored)
        state = load_state(engine, restored)
    setup_seconds = time.perf_counter() - setup_start
    if restored:
        state.resumed_from.append(state.step)
        if rank == 0:
            print(f"[train] resumed at step {state.step} (epoch {state.epoch}, micro-batch {state.micro_in_epoch})")

    objective = _build_objective(settings, engine)
    compressor = compressor_for_run(settings.compress, engine.module, config.get("run_steps"), state.step)
    _train(engine, tokenizer, objective, settings, state, rank, compressor)
    metrics = run_metrics(state, setup_seconds)
    report_final(engine, tokenizer, settings, state, metrics, rank)
    return metrics


def configure_process(settings: TrainSettings, torch_extensions_dir: str | None) -> None:
    # DeepSpeed compiles its CPU comm op on first use; reuse the driver's build cache (tests set it).
    if torch_extensions_dir:
        os.environ.setdefault("TORCH_EXTENSIONS_DIR", torch_extensions_dir)
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    torch.manual_seed(settings.seed)


def import_deepspeed():
    """``import deepspeed`` without its autotuner's ``import mlflow`` (2.4 of the 3.4 s the import takes, paid by
    every training worker; we never autotune, so the mlflow it would log to is never used). mlflow stays
    importable afterwards."""
    if "mlflow" in sys.modules:
        import deepspeed
        return deepspeed
    sys.modules["mlflow"] = None   # makes the autotuner's guarded import fail fast
    try:
        import deepspeed
    finally:
        del sys.modules["mlflow"]
    return deepspeed


def build_engine(init_dir: str, settings: TrainSettings, total_steps: int | None, restored: Path | None):
    deepspeed = import_deepspeed()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # A checkpoint written at the end of a run holds only the exported model: start from it.
    if restored and (restored / HF_DIR).exists() and not (restored / DEEPSPEED_DIR).exists():
        init_dir = str(restored / HF_DIR)
    tokenizer = AutoTokenizer.from_pretrained(init_dir)
    ds_config = deepspeed_config(settings)
    # Under ZeRO-3, HfDeepSpeedConfig makes from_pretrained build the model inside deepspeed.zero.Init: each
    # worker holds only its partition of the weights, never the whole fp32 model (it must stay alive until then).
    zero3_init = _zero3_init(ds_config) if settings.zero_stage == 3 else None
    model = AutoModelForCausalLM.from_pretrained(init_dir, dtype=torch.float32)
    del zero3_init
    model.config.use_cache = False
    if settings.gradient_checkpointing:
        model.gradient_checkpointing_enable()   # recompute activations in backward: memory for compute
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(settings, total_steps))
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                           config=ds_config)
    if settings.zero_stage == 0 and engine.dp_world_size == 1:
        # An all-reduce over one rank is the identity, but DeepSpeed still flattens every gradient into a
        # bucket and copies it back each step (~3% of a step of a small model on CPU).
        engine.enable_backward_allreduce = False
    return engine, tokenizer


def _zero3_init(ds_config: dict):
    from transformers.integrations import HfDeepSpeedConfig

    return HfDeepSpeedConfig(ds_config)


def _build_objective(settings: TrainSettings, engine) -> Objective:
    """The weighted objective; kd/swing with ``teacher_dir`` load the teacher here, frozen, on the
    student's device (it must share the student's tokenizer: the student is cut from its layers)."""
    teacher = None
    if settings.teacher_dir and set(TEACHER_MODEL_TERMS) & set(settings.objectives):
        from transformers import AutoModelForCausalLM

        dtype = torch.bfloat16 if deepspeed_config(settings)["bf16"]["enabled"] else torch.float32
        teacher = AutoModelForCausalLM.from_pretrained(settings.teacher_dir, dtype=dtype).to(engine.device).eval()
        teacher.requires_grad_(False)
        if teacher.config.vocab_size != engine.module.config.vocab_size:
            raise ValueError(f"teacher vocabulary {teacher.config.vocab_size} != student's "
                             f"{engine.module.config.vocab_size}: kd needs the same tokenizer")
    params = DistillParams(settings.kd_temperature, settings.swing_max_temperature, settings.swing_noise,
                           router_aux_weight=settings.moe.aux_loss_weight if settings.moe.experts else 0.0,
                           knife_layers=tuple(settings.knife_layers))
    return Objective(settings.objectives, params, teacher)


def load_state(engine, restored: Path | None) -> TrainState:
    if restored is None:
        return TrainState()
    if (restored / DEEPSPEED_DIR).exists():
        # Weights, ZeRO optimizer partitions (one file per rank) and the LR scheduler.
        engine.load_checkpoint(str(restored / DEEPSPEED_DIR))
    return TrainState(**json.loads((restored / STATE_FILE).read_text()))


def _train(engine, tokenizer, objective: Objective, settings: TrainSettings, state: TrainState, rank: int,
           compressor=None) -> None:
    import ray.train

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    split = ray.train.get_dataset_shard(f"{DATASET_PREFIX}{rank}")
    engine.train()
    while not _done(state, settings):
        fetch_start = time.perf_counter()
        for window in _windows(_epoch_batches(split, settings, state.epoch, rank), settings.grad_accum):
            if window[0][0] < state.micro_in_epoch:
                continue  # resumed mid-epoch: trained on before the checkpoint (windows align with steps)
            # The step's clock starts before its batch is fetched: the wait is part of it (``data_seconds``).
            stats = _Window(started=fetch_start)
            # Seeded by position, so a resumed run draws the same demonstrations and noise again.
            batches = [(index, make_batch(rows, tokenizer, settings.max_length, pad_id, objective.needs,
                                          random.Random(_seed(settings, rank, state.epoch, index)),
                                          settings.icl_shots, settings.privacy_patterns,
                                          privacy_scorer=settings.privacy_scorer,
                                          privacy_terms=settings.privacy_terms, mlm_span=settings.mlm_span))
                       for index, rows in window]
            stats.add_wait(time.perf_counter() - fetch_start, epoch_start=state.micro_in_epoch == 0)
            _optimizer_step(engine, objective, batches, settings, state, rank, stats)
            state.micro_in_epoch = window[-1][0] + 1
            _close_step(state, stats, engine.device)
            if compressor:   # masks re-applied before anything reads or saves the weights
                compressor.sync(state.step)
            if _after_step(engine, state, settings, rank):
                return
            fetch_start = time.perf_counter()
        state.epoch += 1
        state.micro_in_epoch = 0


DATASET_PREFIX = "train_"   # worker r reads dataset "train_<r>" (its own split)


def _epoch_batches(split, settings: TrainSettings, epoch: int, rank: int):
    """This worker's (index, rows) micro-batches of one epoch, in an order seeded by (seed, epoch, rank):
    chunks of ``shuffle_buffer`` rows (a multiple of the micro-batch) are read in order and each is
    permuted. Ray Data's own local shuffle is not reproducible from run to run; this is."""
    size = settings.batch_size
    chunk_rows = max(1, settings.shuffle_buffer // size) * size if settings.shuffle_buffer else size
    rng = random.Random(f"shuffle-{settings.seed}-{epoch}-{rank}")
    index = 0
    for chunk in split.iter_batches(batch_size=chunk_rows, batch_format="numpy",
                                    prefetch_batches=settings.prefetch_batches):
        rows = len(next(iter(chunk.values())))
        order = rng.sample(range(rows), rows) if settings.shuffle_buffer else list(range(rows))
        for start in range(0, rows, size):
            picked = order[start:start + size]
            yield index, {name: column[picked] for name, column in chunk.items()}
            index += 1


def _windows(batches, size: int):
    """Consecutive groups of ``size`` (index, rows) micro-batches; the last group may be shorter."""
    window = []
    for item in batches:
        window.append(item)
        if len(window) == size:
            yield window
            window = []
    if window:
        yield window


def _seed(settings: TrainSettings, rank: int, epoch: int, index: int) -> str:
    return f"{settings.seed}-{rank}-{epoch}-{index}"


def _optimizer_step(engine, objective: Objective, batches: list, settings: TrainSettings, state: TrainState,
                    rank: int, stats: _Window) -> None:
    """Backward on each micro-batch of the window, then one DeepSpeed step. DeepSpeed averages gradients
    over the workers, so dividing by the global token count / world size gives per-token weights."""
    world = dist.get_world_size()
    global_tokens = float(sum(objective.tokens(b) for _, b in batches))
    if world > 1:
        local = torch.tensor([global_tokens], dtype=torch.float64, device=engine.device)
        dist.all_reduce(local)
        global_tokens = float(local.item())
    normaliser = max(global_tokens, 1.0) / world
    for index, batch in batches:
        generator = torch.Generator().manual_seed(random.Random(_seed(settings, rank, state.epoch, index)).getrandbits(63))
        batch = _to_device(batch, engine.device)
        out = objective(engine, batch, generator, normaliser=normaliser)
        engine.backward(out.loss, scale_wrt_gas=False)   # the normaliser already spans the window
        stats.loss += out.total
        stats.micro += 1
        stats.samples += len(batch["input_ids"])
        stats.tokens += out.tokens
        stats.input_tokens += int(batch["attention_mask"].sum())
    engine.step()   # unmanaged accumulation: every step() reduces, clips and updates


def _to_device(batch: dict, device) -> dict:
    return {k: _to_device(v, device) if isinstance(v, dict) else v.to(device) for k, v in batch.items()}


def _after_step(engine, state: TrainState, settings: TrainSettings, rank: int) -> bool:
    """Log, checkpoint (and the fault-injection hook) after an optimizer step; True when training is done."""
    _log(state, settings, rank)
    if settings.fail_at_step == state.step and not state.resumed_from and rank == 0:
        raise RuntimeError(f"fail_at_step={state.step}: simulated worker failure")
    if settings.checkpoint_every and state.step % settings.checkpoint_every == 0:
        report_checkpoint(engine, state, rank)
    return _done(state, settings)


def _done(state: TrainState, settings: TrainSettings) -> bool:
    return state.epoch >= settings.epochs or bool(settings.max_steps and state.step >= settings.max_steps)


def _close_step(state: TrainState, window: _Window, device) -> None:
    """Fold one optimizer step's sums from all workers into the state (one small all-reduce, on the engine's
    device: with GPUs the default process group is NCCL, which has no CPU tensors)."""
    sums = [window.loss, window.micro, window.samples, window.tokens, window.input_tokens]
    if dist.get_world_size() > 1:   # one worker: its sums are the totals
        summed = torch.tensor(sums, dtype=torch.float64, device=device)
        dist.all_reduce(summed)
        sums = summed.tolist()
    loss, micro, samples, tokens, input_tokens = sums
    state.step += 1
    state.loss_history.append(loss / max(tokens, 1))   # per target token of the global batch
    state.samples += int(samples)
    state.tokens += int(tokens)
    state.input_tokens += int(input_tokens)
    elapsed = time.perf_counter() - window.started
    state.seconds += elapsed
    state.step_seconds.append(elapsed)
    state.data_seconds += window.data_seconds  # rank 0's is what gets reported
    state.epoch_start_seconds += window.epoch_start_seconds


def _log(state: TrainState, settings: TrainSettings, rank: int) -> None:
    if rank != 0:
        return
    rate = state.tokens / state.seconds if state.seconds else 0.0
    gauge("train_loss", state.loss_history[-1], "training loss of the last optimizer step", stage="train")
    gauge("train_tokens_per_s", rate, "target tokens per second of training so far", stage="train")
    if settings.log_every and state.step % settings.log_every == 0:
        print(f"[train] step {state.step} loss {state.loss_history[-1]:.4f} "
              f"samples {state.samples} target tokens/s {rate:.1f}", flush=True)


def run_metrics(state: TrainState, setup_seconds: float) -> dict:
    # ru_maxrss is in KiB on Linux: this worker's peak resident memory (model, optimizer, activations).
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"step": state.step, "loss": state.loss_history[-1] if state.loss_history else None,
            "setup_seconds": setup_seconds, "peak_rss_mb": peak_rss_mb, **asdict(state)}


def report_checkpoint(engine, state: TrainState, rank: int) -> None:
    """Every rank saves its DeepSpeed shard; Ray Train merges the ranks' directories into one checkpoint."""
    import ray.train

    with tempfile.TemporaryDirectory(prefix="distill-ckpt-") as tmp:
        engine.save_checkpoint(os.path.join(tmp, DEEPSPEED_DIR), tag=f"step{state.step}")
        if rank == 0:
            Path(tmp, STATE_FILE).write_text(json.dumps(asdict(state)))
        ray.train.report(run_metrics(state, 0.0), checkpoint=ray.train.Checkpoint.from_directory(tmp),
                         checkpoint_dir_name=f"checkpoint_step{state.step:06d}")


def report_final(engine, tokenizer, settings: TrainSettings, state: TrainState, metrics: dict,
                  rank: int) -> None:
    """The final checkpoint holds the student in Hugging Face format (written by rank 0) and the state."""
    import ray.train

    with tempfile.TemporaryDirectory(prefix="distill-final-") as tmp:
        export_hf(engine, tokenizer, Path(tmp, HF_DIR), settings.zero_stage, rank)
        checkpoint = None
        if rank == 0:
            Path(tmp, STATE_FILE).write_text(json.dumps(asdict(state)))
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=f"final_step{state.step:06d}")


def export_hf(engine, tokenizer, out_dir: Path, zero_stage: int, rank: int) -> None:
    """Write ``save_pretrained`` weights + tokenizer on rank 0. Every rank must call it: under ZeRO-3 the
    parameters are partitioned and gathering them is a collective. ZeRO 0-2 keep full fp32 parameters on
    every rank (only optimizer state/gradients are partitioned), so rank 0 saves its own copy."""
    import deepspeed

    model = engine.module
    gather = (deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None)
              if zero_stage == 3 else nullcontext())
    with gather:
        if rank == 0:
            model.config.use_cache = True  # for generation after reload
            model.save_pretrained(out_dir)
            tokenizer.save_pretrained(out_dir)
