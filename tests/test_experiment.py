"""The EKT experiment end to end at toy scale: every arm trains on the same budget and is evaluated; the table,
JSON and plot are written."""

import json

import pytest

from distill_ray.config import load_config
from distill_ray.experiment import draw, teacher_pools

pytestmark = pytest.mark.slow


def test_pools_and_budget_draws():
    import pandas as pd

    rows = pd.DataFrame({"task_id": ["a", "a", "a", "a", "b"], "program": ["p", "p", "q", "q", ""],
                         "teacher": ["t1", "t1", "t1", "t2", "t1"], "passed": [True, True, True, True, False],
                         "keep": [True, False, True, False, False], "label_weight": [1.0, 0.0, 1.0, 0.0, 0.0]})
    pools = teacher_pools(rows, {"t1": 1.0, "t2": 3.0})
    assert len(pools["unfiltered"]) == 2 and len(pools["verified"]) == 2     # distinct written programs; kept
    # The soft label over a's verified programs: t1 wrote p, p, q (2/3, 1/3), t2 wrote q (weight 3):
    # p = (1 * 2/3) / 4, q = (1 * 1/3 + 3 * 1) / 4.
    assert pools["verified_soft"]["label_weight"].tolist() == pytest.approx([1 / 6, 5 / 6])
    first, again = draw(pools["unfiltered"], 1, seed=3), draw(pools["unfiltered"], 1, seed=3)
    assert len(first) == 1 and first["keep"].all() and first.equals(again)
    assert len(draw(pools["verified"], 5, seed=0)) == 2                       # never more than the pool


def test_experiment_runs_every_arm_on_one_budget(ray_cluster, tmp_path):
    from distill_ray.experiment import run_experiment

    cfg = load_config(None, [
        f"output_dir={tmp_path}", "name=tiny-ekt", "task.num_train=6", "task.num_eval=2", "prompt.pool_size=12",
        "teacher.samples=4", "teacher.max_new_tokens=16", "teacher.torch_threads=2", "train.student_layers=2",
        "train.max_steps=2", "train.epochs=1", "eval.samples=2", "eval.k=[1, 2]", "eval.max_new_tokens=8",
        "experiment.seeds=[0]", "experiment.arms=[none, unfiltered]"])
    report = run_experiment(cfg)

    # (verified arms are left out here: a toy run may verify nothing, and the budget would then be 0)
    assert set(report["arms"]) == {"none", "unfiltered"}
    assert report["trained_rows"]["unfiltered"] == report["budget"] == report["pools"]["unfiltered"] >= 1
    for arm, summary in report["arms"].items():
        assert 0.0 <= summary["pass@1"]["mean"] <= summary["pass@2"]["mean"] <= 1.0
    saved = json.loads((tmp_path / "experiment.json").read_text())
    assert saved["budget"] == report["budget"]
    table = (tmp_path / "experiment.md").read_text()
    assert "| unfiltered |" in table and "| teacher (few-shot) |" in table and set(report["teachers"]) == {"teacher"}
    assert (tmp_path / "experiment.png").stat().st_size > 0
