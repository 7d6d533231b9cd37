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


class _ReportCallback(UserCallback):
    """Whenever the workers report: the losses of the steps not yet written, and the report's numbers (rank
    0's report; every rank reports the same run numbers), to ``write``."""

    def __init__(self):
        self.steps_written = 0

    def after_report(self, run_context, metrics: list[dict], checkpoint) -> None:
        report = metrics[0] if metrics else {}
        history = report.get("loss_history") or []
        run_numbers = {k: v for k, v in numbers(report).items() if k != "loss"}
        self.write(history[self.steps_written:], self.steps_written + 1, run_numbers, len(history))
        self.steps_written = max(self.steps_written, len(history))

    def write(self, losses: list[float], first_step: int, run_numbers: dict[str, float], step: int) -> None:
        raise NotImplementedError


class TensorBoardCallback(_ReportCallback):
    def __init__(self, log_dir: str | Path):
        super().__init__()
        self.log_dir = str(log_dir)

    def write(self, losses, first_step, run_numbers, step) -> None:
        # An event file per report (TensorBoard reads a directory's files as one run): nothing is held open in
        # Ray Train's controller between reports.
        with ScalarWriter(self.log_dir) as writer:
            for offset, loss in enumerate(losses):
                writer.add_scalar("train/loss", loss, first_step + offset)
            for key, value in run_numbers.items():
                writer.add_scalar(f"train/{key}", value, step)


class MlflowCallback(_ReportCallback):
    """The same numbers as ``TensorBoardCallback``, to the MLflow run the driver opened (``mlflow_log.mlflow_run``
    around the fit, which also ends it)."""

    def __init__(self, uri: str, run_id: str):
        super().__init__()
        self.uri, self.run_id = uri, run_id

    def write(self, losses, first_step, run_numbers, step) -> None:
        run = MlflowRun(self.uri, run_id=self.run_id)
        run.log_steps("train/loss", losses, first_step=first_step)
        run.log({f"train/{k}": v for k, v in run_numbers.items()}, step=step)
