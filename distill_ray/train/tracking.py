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
        self.reports = 0

    def after_report(self, run_context, metrics: list[dict], checkpoint) -> None:
        from tensorboardX import SummaryWriter

        report = metrics[0] if metrics else {}   # rank 0's; every rank reports the same run numbers
        history = report.get("loss_history") or []
        self.reports += 1
        # One writer per report, closed before returning: tensorboardX writes from a background thread and its
        # flush() does not wait for that thread's queue, so only close() guarantees the events are on disk
        # when the run ends. The suffix keeps two reports in the same second from sharing a file name.
        with SummaryWriter(self.log_dir, filename_suffix=f".{self.reports:06d}") as writer:
            for step in range(self.steps_written, len(history)):
                writer.add_scalar("train/loss", history[step], step + 1)
            self.steps_written = max(self.steps_written, len(history))
            for key, value in report.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "loss":
                    writer.add_scalar(f"train/{key}", value, len(history))
