"""Settings of one training run and what it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field, model_validator

from distill_ray.config import TrainConfig


class TrainSettings(TrainConfig):
    """One training run: every ``train.*`` field of the run config (its defaults are defined there, once), plus
    what the run decides (seed, teacher) and the trainer's own knobs, which the run config does not expose."""

    seed: int = Field(0, description="Seeds the shuffle and the noise of swing.")
    teacher_dir: str | None = Field(None, description="HF teacher loaded in each worker for kd/swing rows without "
                                    "stored top-k, rkd, and knife (a teacher trained with knife_teacher).")
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping (0: none).")
    lr_schedule: Literal["constant", "linear", "cosine"] = Field("constant", description="After warm-up; linear "
                                                                  "and cosine decay to 0 at the last step.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    bf16: bool | None = Field(None, description="None: bf16 on GPU, fp32 on CPU.")
    log_every: int = Field(10, ge=0, description="Rank 0 prints progress every this many steps (0: never).")
    run_name: str | None = Field(None, description="Ray Train run name; reusing one in the same storage resumes "
                                 "that run.")
    torch_threads: int | None = Field(None, ge=1, description="torch threads per worker (Ray Train's default: 1).")
    prefetch_batches: int = Field(4, ge=0, description="Ray Data chunks each worker prefetches.")
    shuffle_buffer: int = Field(10_000, ge=0, description="Rows each worker permutes at a time, seeded per epoch "
                                "(0: split order).")
    deepspeed: dict = Field({}, description="Extra DeepSpeed config keys, merged over ours.")
    mlflow_uri: str | None = Field(None, description="MLflow tracking URI of the run (the run config's mlflow_uri; "
                                   "null: MLFLOW_TRACKING_URI if set, else no MLflow).")
    fail_at_step: int | None = Field(None, description="Testing fault tolerance: raise once after this step (not "
                                     "after a resume).")

    @model_validator(mode="after")
    def _knife_needs_its_teacher(self):
        chosen = [dict(self.objectives), *(dict(stage.objectives) for stage in self.stages)]
        if any(objectives.get("knife") for objectives in chosen) and not self.teacher_dir:
            raise ValueError("objective knife matches the student's hidden states to a KNIFE teacher's: set "
                             "teacher_dir to a teacher trained with knife_teacher (on rows with rationale_text)")
        return self


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
    history: list[dict] = field(default_factory=list)  # per-step records (on-policy: divergence, verified, times)
    step_seconds: list[float] = field(default_factory=list)  # rank 0's seconds of each optimizer step (its batch
    # wait included): their median is a steady-state step time that other jobs' bursts of load hardly move
    stages: list[dict] = field(default_factory=list)  # a staged run (train.stages): each phase's record, in order

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
