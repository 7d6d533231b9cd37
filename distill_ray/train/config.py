"""Settings of one training run and what it returns."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TrainSettings:
    num_workers: int = 2
    cpus_per_worker: float = 0.5      # fractional: a pool that takes every CPU starves Ray Data's read tasks and hangs
    use_gpu: bool = False
    zero_stage: int = 2               # 0 (plain data parallel), 1, 2 or 3
    epochs: int = 1
    batch_size: int = 4                # per worker micro-batch
    grad_accum: int = 1                # micro-batches per optimizer step (an epoch's last step may have fewer)
    lr: float = 1e-4
    warmup_steps: int = 0
    max_grad_norm: float = 1.0         # 0 disables clipping
    max_length: int = 512              # prompt+target tokens; longer rows truncated from the left of the prompt (keep target)
    seed: int = 0
    max_steps: int | None = None
    storage_path: str | None = None    # Ray Train storage (checkpoints); default under output_dir
    max_failures: int = 0
    # --- additions ---
    # objective name -> weight (objectives.OBJECTIVES); the loss is the weighted sum of the terms
    objectives: dict = field(default_factory=lambda: {"sft": 1.0})
    teacher_dir: str | None = None     # HF teacher loaded in each worker for kd/swing rows without teacher_topk
    kd_temperature: float = 2.0        # T of kd (and swing's temperature on non-private tokens)
    swing_max_temperature: float = 8.0  # swing's temperature on surely-private tokens (privacy score 1)
    swing_noise: float = 1.0           # std of the Gaussian noise swing adds to teacher logits
    privacy_scorer: str = "regex"      # privacy.SCORERS: "regex", "list" or "likelihood" (swing's token scores)
    privacy_patterns: list = field(default_factory=list)  # extra regexes the regex scorer treats as private
    privacy_terms: list = field(default_factory=list)     # exact strings the list scorer treats as private
    icl_shots: int = 2                 # demonstrations per icl input (other rows of the micro-batch)
    lr_schedule: str = "constant"      # after warmup: "constant", "linear" or "cosine" (decay to 0 at the last step)
    weight_decay: float = 0.0
    bf16: bool | None = None           # None: bf16 on GPU, fp32 on CPU
    gradient_checkpointing: bool = False  # recompute activations in backward (large students on small GPUs)
    checkpoint_every: int | None = None  # optimizer steps between checkpoints; None: only the final one
    keep_checkpoints: int = 2          # Ray Train CheckpointConfig.num_to_keep
    log_every: int = 10                # rank 0 prints progress every this many steps (0: never)
    run_name: str | None = None        # Ray Train run name; reusing one in the same storage resumes that run
    torch_threads: int | None = None   # torch threads per worker (Ray Train's default is 1)
    prefetch_batches: int = 4          # Ray Data chunks each worker prefetches (hides per-block fetch latency)
    shuffle_buffer: int = 10_000       # rows each worker permutes at a time, seeded per epoch (0: split order)
    deepspeed: dict = field(default_factory=dict)  # extra DeepSpeed config keys, merged over ours
    fail_at_step: int | None = None    # testing fault tolerance: raise once after this step (not after a resume)


@dataclass
class TrainResult:
    output_dir: str        # HF directory of the final student
    steps: int
    samples: int
    tokens: int            # target (loss) tokens seen
    seconds: float         # time in the training loops (rank 0), without model load and DeepSpeed setup
    loss_history: list[float]   # per optimizer step, mean across workers
    data_seconds: float = 0.0   # part of ``seconds`` rank 0 spent waiting for batches and tokenizing
    epoch_start_seconds: float = 0.0  # part of ``seconds`` rank 0 waited for each epoch's first batch
    setup_seconds: float = 0.0  # model load + deepspeed.initialize (+ its one-time op compile) on rank 0
    wall_seconds: float = 0.0   # trainer.fit() on the driver, worker start-up and export included
    input_tokens: int = 0       # non-padding tokens fed to the model (prompt + target)
    checkpoint_path: str | None = None  # the final Ray Train checkpoint
    resumed_from: list[int] = field(default_factory=list)  # steps at which the run restarted from a checkpoint
    peak_rss_mb: float = 0.0    # rank 0 worker's peak resident memory

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds else 0.0

    @property
    def tokens_per_s(self) -> float:
        """Target (loss) tokens per second of training loop."""
        return self.tokens / self.seconds if self.seconds else 0.0

    @property
    def final_loss(self) -> float | None:
        return self.loss_history[-1] if self.loss_history else None
