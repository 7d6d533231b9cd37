"""MLflow tracking through the client API, read back from a file store: what goes in comes out, under names MLflow
accepts; nothing is logged without a URI."""

from __future__ import annotations

import pytest

from distill_ray.mlflow_log import MlflowRun, flatten, metric_name, mlflow_run, numbers, tracking_uri

mlflow = pytest.importorskip("mlflow")


def read_run(uri: str, run_id: str):
    return mlflow.MlflowClient(tracking_uri=uri).get_run(run_id)


def test_a_run_logs_params_metrics_and_steps_and_finishes(tmp_path):
    uri = f"file:{tmp_path / 'mlruns'}"
    with mlflow_run(uri, "student", {"train": {"lr": 1e-4, "objectives": ["sft"]}, "seed": 3}) as run:
        run.log({"generate/verified": 7, "teacher.pass@1.mean": 0.25}, step=2)
        run.log_steps("train/loss", [3.0, 2.5, 2.0])
        again = MlflowRun(uri, run_id=run.run_id)   # as the trainer's callback does, in another process
        again.log_steps("train/loss", [1.5], first_step=4)
    data = read_run(uri, run.run_id)
    assert data.info.status == "FINISHED" and data.info.run_name == "student"
    assert data.data.params == {"train.lr": "0.0001", "train.objectives": "['sft']", "seed": "3"}
    assert data.data.metrics == {"generate/verified": 7.0, "teacher.pass_at_1.mean": 0.25, "train/loss": 1.5}
    history = mlflow.MlflowClient(tracking_uri=uri).get_metric_history(run.run_id, "train/loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(1, 3.0), (2, 2.5), (3, 2.0),
                                                                               (4, 1.5)]


def test_a_failing_block_marks_the_run_failed(tmp_path):
    uri = f"file:{tmp_path / 'mlruns'}"
    with pytest.raises(RuntimeError):
        with mlflow_run(uri, "broken", {}) as run:
            raise RuntimeError("boom")
    assert read_run(uri, run.run_id).info.status == "FAILED"


def test_without_a_uri_nothing_is_logged(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(None) is None
    with mlflow_run(None, "x", {}) as run:
        assert run is None
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file:{tmp_path}")
    assert tracking_uri(None) == f"file:{tmp_path}"


def test_names_and_values_are_made_acceptable():
    assert metric_name("teacher.pass@1.mean") == "teacher.pass_at_1.mean"
    assert metric_name("a b/c-d:e.f") == "a b/c-d:e.f" and metric_name("x=(y)") == "x__y_"
    assert flatten({"a": {"b": "x" * 600}})["a.b"] == "x" * 500
    assert numbers({"a": 1, "b": True, "c": {"d": 2.5, "e": "s"}, "f": None}) == {"a": 1.0, "c.d": 2.5}
