"""TensorBoard event files for a training run, through Ray Train's own callback interface: whenever the workers
report (each checkpoint and the end), the loss of every optimizer step not yet written and the run's numbers
(tokens, samples, seconds, peak RSS) are written with tensorboardX, which Ray installs. The callback runs in Ray
Train's controller, so on a multi-node cluster ``log_dir`` must be on storage that process reaches."""

from __future__ import annotations

from pathlib import Path

from ray.train import UserCallback


def log_dir_for(output_dir: Path) -> Path:
    """``<parent>/tensorboard/<name>``: beside the exported student, not inside its model folder."""
    return output_dir.parent / "tensorboard" / output_dir.name


class TensorBoardCallback(UserCallback):
    def __init__(self, log_dir: str | Path):
        self.log_dir = str(log_dir)
        self.steps_written = 0
        self._writer = None

    def after_report(self, run_context, metrics: list[dict], checkpoint) -> None:
        report = metrics[0] if metrics else {}   # rank 0's; every rank reports the same run numbers
        history = report.get("loss_history") or []
        writer = self.writer()
        for step in range(self.steps_written, len(history)):
            writer.add_scalar("train/loss", history[step], step + 1)
        self.steps_written = max(self.steps_written, len(history))
        for key, value in report.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "loss":
                writer.add_scalar(f"train/{key}", value, len(history))
        writer.flush()

    def writer(self):
        if self._writer is None:
            from tensorboardX import SummaryWriter

            self._writer = SummaryWriter(self.log_dir)
        return self._writer

    def __getstate__(self):   # sent to the controller before any writer exists; never a live writer
        return {**self.__dict__, "_writer": None}
