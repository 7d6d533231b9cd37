"""The EKT experiment end to end at toy scale: every arm, expert iteration's rounds included, trains on the same
budget and is evaluated; the table, JSON and plot are written."""

import json
from pathlib import Path

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


def test_expert_iteration_pools_rounds_and_stops(monkeypatch, tmp_path):
    """The loop without Ray: the pool accumulates new programs only (whitespace-insensitively, per task), each
    round samples the last trained student, a round that adds nothing keeps it, one that verifies nothing stops."""
    import pandas as pd

    from distill_ray import experiment

    def kept(*rows):
        return pd.DataFrame(rows or None, columns=["task_id", "program"])

    found = {1: kept(("a", "return  1"), ("b", "return 2")), 2: kept(("b", "return 2")), 3: kept()}
    sampled_by, trained_on = [], []

    def self_samples(cfg, problems, model, round_dir, seed):
        sampled_by.append(model)
        rows = found[int(round_dir.name.removeprefix("round"))]
        return {"kept": rows, "samples": 4, "verified": len(rows)}

    def train_on(cfg, pool, budget, init_dir=None):
        trained_on.append(sorted(pool["program"]))
        return f"{Path(cfg.output_dir).name}/student", min(budget, len(pool))

    monkeypatch.setattr(experiment, "self_samples", self_samples)
    monkeypatch.setattr(experiment, "train_on", train_on)
    cfg = load_config(None, [f"output_dir={tmp_path}"])
    first = {"kept": kept(("a", "return 1")), "samples": 4, "verified": 2}
    student, history = experiment.expert_iteration(cfg, [], first, budget=5, rounds=6)

    assert [(r["round"], r["verified"], r["pool"], r["trained_rows"]) for r in history] == [
        (0, 2, 1, 1), (1, 2, 2, 2), (2, 1, 2, 0), (3, 0, 2, 0)]
    assert [r.get("note") for r in history] == [None, None, "nothing new: student kept", "verified nothing: stopped"]
    assert trained_on == [["return 1"], ["return 1", "return 2"]]             # a fresh student on the whole pool
    assert sampled_by == ["round0/student", "round1/student", "round1/student"] and student == "round1/student"
    nothing = {"kept": kept(), "samples": 4, "verified": 0}
    assert experiment.expert_iteration(cfg, [], nothing, budget=5, rounds=2)[0] is None


# The arms that train on a pool differ only in which rows they draw (test_pools_and_budget_draws) and in their
# objective: verified_soft (the soft one) and expert_iteration (sft) run both objectives; unfiltered and verified
# would add ~40 s each of the same training and evaluation.
ARMS = ["none", "verified_soft", "expert_iteration"]


def test_experiment_runs_every_arm_on_one_budget(ray_cluster, tmp_path):
    from distill_ray.experiment import run_experiment

    # base_convert is the one family both the 135M teacher (3-shot, 65% of samples verified in the demo) and
    # the untrained full-model student (zero-shot, 31%) solve, so every pool, expert iteration's round 0
    # included, verifies something: 4 problems x 4 samples leave ~0.3% odds of none (and sampling is seeded).
    # One training row and one step per arm on one worker: what is tested is the plumbing, not the scores.
    cfg = load_config(None, [
        f"output_dir={tmp_path}", "name=tiny-ekt", "task.num_train=4", "task.num_eval=2",
        "task.families=[base_convert]", "prompt.num_shots=3", "prompt.exemplars=retrieved", "prompt.pool_size=3",
        "teacher.samples=4", "teacher.max_new_tokens=8", "teacher.torch_threads=2", "train.student=teacher",
        "train.workers=1", "train.epochs=1", "train.max_steps=2", "eval.samples=2", "eval.k=[1, 2]",
        "eval.max_new_tokens=8", "experiment.seeds=[0]", "experiment.budget=1", "experiment.expert_rounds=2",
        f"experiment.arms={ARMS + ['on_policy_verified']}", "on_policy.prompts_per_step=2", "on_policy.samples=2",
        "on_policy.max_new_tokens=8"])
    report = run_experiment(cfg)
    on_policy = report["on_policy"]["on_policy_verified"][0]
    assert report["trained_rows"].pop("on_policy_verified") == 1 * 2 * 2             # one step: 2 problems x 2
    assert on_policy["steps"] == 1 and 0.0 <= on_policy["verified"][0] <= 1.0 and on_policy["reverse_kl"][0] > 0
    assert report["arms"].pop("on_policy_verified")["seeds"] == 1

    assert report["budget"] == 1 and set(report["arms"]) == set(ARMS)
    assert report["trained_rows"] == {arm: report["budget"] for arm in ARMS[1:]}   # all on the same budget
    for summary in report["arms"].values():
        assert summary["seeds"] == 1 and 0.0 <= summary["pass@1"]["mean"] <= summary["pass@2"]["mean"] <= 1.0
    rounds = report["expert_rounds"][0]
    print("\nexpert rounds:", rounds)
    assert [r["round"] for r in rounds] == [0, 1] and rounds[0]["trained_rows"] == 1
    assert all(r["samples"] == 4 * 4 for r in rounds) and rounds[0]["verified"] >= 1
    assert rounds[0]["pool"] >= 1 and rounds[1]["pool"] >= rounds[0]["pool"]        # the pool only grows
    assert (tmp_path / "seed0" / "expert_iteration" / "round1" / "samples").is_dir()  # round 1: the trained student
    saved = json.loads((tmp_path / "experiment.json").read_text())
    assert saved["budget"] == 1 and saved["expert_rounds"]["0"] == rounds
    table = (tmp_path / "experiment.md").read_text()
    assert all(f"| {arm} | 1 rows |" in table for arm in ARMS[1:]) and "| teacher (few-shot) |" in table
    assert "| on_policy_verified | 4 student completions |" in table and "## On-policy runs" in table
    assert "## Expert iteration, round by round" in table and "| 0 | 1 | 16 |" in table
    assert (tmp_path / "experiment.png").stat().st_size > 0
    # Every arm started from the one student_init, and no run left its checkpoints behind (disk: one student
    # copy per trained arm, not three).
    for arm in ARMS[1:] + ["on_policy_verified"]:
        trained = json.loads((tmp_path / "seed0" / arm / ("round0" if arm == "expert_iteration" else "")
                              / "student" / "train_result.json").read_text())
        assert trained["init_dir"] == str((tmp_path / "student_init").resolve()), arm
    assert not list(tmp_path.rglob("_ray_train")) and len(list(tmp_path.rglob("student_init"))) == 1
