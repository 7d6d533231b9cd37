"""MLflow tracking, where users already look: when ``mlflow`` is installed and a tracking URI is set
(``mlflow_uri`` in the run config, else ``MLFLOW_TRACKING_URI``), ``generate`` logs its dataset's numbers and
the trainer each optimizer step's loss and the run's throughput (the same numbers as the TensorBoard files).

Written through ``MlflowClient`` with an explicit run id, never MLflow's global active run: the trainer's
callback lives in Ray Train's controller process, and nothing here may depend on which process started what.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import time
from contextlib import contextmanager

EXPERIMENT = "distill-ray"
MAX_PARAM_CHARS = 500   # MLflow refuses longer parameter values


def tracking_uri(configured: str | None) -> str | None:
    """The URI to log to, or None: none configured, or mlflow not installed (said once, on stderr)."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI")
    if uri and importlib.util.find_spec("mlflow") is None:
        print(f"mlflow_uri {uri!r} is set but mlflow is not installed (pip install mlflow-skinny): not logging "
              "to MLflow", file=sys.stderr)
        return None
    return uri or None


def flatten(params: dict, prefix: str = "") -> dict[str, str]:
    """``{"train": {"lr": 1e-4}}`` -> ``{"train.lr": "0.0001"}``, values cut to what MLflow accepts."""
    flat = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:MAX_PARAM_CHARS]
    return flat


def numbers(values: dict, prefix: str = "") -> dict[str, float]:
    """The numeric leaves of ``values`` (nested dicts flattened with dots; booleans and others left out)."""
    found = {}
    for key, value in values.items():
        if isinstance(value, dict):
            found.update(numbers(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            found[f"{prefix}{key}"] = float(value)
    return found


def metric_name(key: str) -> str:
    """A name MLflow accepts (letters, digits, ``_ - . / :`` and spaces): ``teacher.pass@1.mean`` ->
    ``teacher.pass_at_1.mean``."""
    return re.sub(r"[^\w./\- :]", "_", key.replace("@", "_at_"))


class MlflowRun:
    """One MLflow run in the ``distill-ray`` experiment."""

    def __init__(self, uri: str, run_name: str | None = None, params: dict | None = None, run_id: str | None = None):
        """A new run named ``run_name`` with ``params``, or (``run_id``) the existing one, e.g. in another process."""
        from mlflow import MlflowClient

        if uri.startswith("file:") or "://" not in uri:
            # A file store is what the user named; MLflow 3 keeps it (in maintenance) behind this opt-in.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.uri, self.client = uri, MlflowClient(tracking_uri=uri)
        if run_id is None:
            experiment = self.client.get_experiment_by_name(EXPERIMENT)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(EXPERIMENT)
            run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id
        self.run_id = run_id
        if params:
            from mlflow.entities import Param

            items = [Param(k, v) for k, v in flatten(params).items()]
            for start in range(0, len(items), 100):   # MLflow's batch limit for params
                self.client.log_batch(self.run_id, params=items[start:start + 100])

    def log(self, metrics: dict[str, float], step: int = 0) -> None:
        self._log([(k, v, step) for k, v in metrics.items()])

    def log_steps(self, key: str, values: list[float], first_step: int = 1) -> None:
        """One value per step: ``values[i]`` at step ``first_step + i``."""
        self._log([(key, v, first_step + i) for i, v in enumerate(values)])

    def _log(self, points: list[tuple[str, float, int]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(metric_name(key), float(value), now, step) for key, value, step in points]
        for start in range(0, len(items), 1000):   # MLflow's batch limit for metrics
            self.client.log_batch(self.run_id, metrics=items[start:start + 1000])

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)


@contextmanager
def mlflow_run(configured_uri: str | None, run_name: str, params: dict):
    """An MLflow run around a block (None inside when MLflow is off): FINISHED when the block ends, FAILED if it
    raises."""
    uri = tracking_uri(configured_uri)
    if uri is None:
        yield None
        return
    run = MlflowRun(uri, run_name, params)
    try:
        yield run
    except BaseException:
        run.finish("FAILED")
        raise
    run.finish()
