"""Tracking a training run through Ray Train's own callback interface: whenever the workers report (each
checkpoint and the end), the loss of every optimizer step not yet written and the run's numbers (tokens,
samples, seconds, peak RSS) go to TensorBoard event files (``distill_ray.tensorboard``) and, when configured, to
an MLflow run (``distill_ray.mlflow_log``). The callbacks run in Ray Train's controller, so on a multi-node
cluster ``log_dir`` (and a file-based MLflow URI) must be on storage that process reaches."""

from __future__ import annotations

from pathlib import Path

from ray.train import UserCallback

from distill_ray.mlflow_log import MlflowRun, numbers
from distill_ray.tensorboard import ScalarWriter


def log_dir_for(output_dir: Path) -> Path:
    """``<parent>/tensorboard/<name>``: beside the exported student, not inside its model folder."""
    return output_dir.parent / "tensorboard" / output_dir.name


class TensorBoardCallback(UserCallback):
    def __init__(self, log_dir: str | Path):
        self.log_dir = str(log_dir)
        self.steps_written = 0

    def after_report(self, run_context, metrics: list[dict], checkpoint) -> None:
        report = metrics[0] if metrics else {}   # rank 0's; every rank reports the same run numbers
        history = report.get("loss_history") or []
        # An event file per report (TensorBoard reads a directory's files as one run): nothing is held open in
        # Ray Train's controller between reports.
        with ScalarWriter(self.log_dir) as writer:
            for step in range(self.steps_written, len(history)):
                writer.add_scalar("train/loss", history[step], step + 1)
            self.steps_written = max(self.steps_written, len(history))
            for key, value in report.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "loss":
                    writer.add_scalar(f"train/{key}", value, len(history))


class MlflowCallback(UserCallback):
    """The same numbers as ``TensorBoardCallback``, to the MLflow run the driver opened (``mlflow_log.mlflow_run``
    around the fit, which also ends it)."""

    def __init__(self, uri: str, run_id: str):
        self.uri, self.run_id = uri, run_id
        self.steps_written = 0

    def after_report(self, run_context, metrics: list[dict], checkpoint) -> None:
        report = metrics[0] if metrics else {}
        run = MlflowRun(self.uri, run_id=self.run_id)
        history = report.get("loss_history") or []
        run.log_steps("train/loss", history[self.steps_written:], first_step=self.steps_written + 1)
        self.steps_written = max(self.steps_written, len(history))
        run.log({f"train/{k}": v for k, v in numbers(report).items() if k != "loss"}, step=len(history))
