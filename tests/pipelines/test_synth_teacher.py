"""Teacher-written puzzles: parsing, the fate of every row (verified, trivial, wrong, unparsable), the batched
fast path for trusted rows, and a real SmolLM2 run through the job."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.dataset as pads
import pytest

from distill_ray.synth.config import PuzzleJobConfig
from distill_ray.stages.check import judge_puzzles
from distill_ray.stages.verify import VerifierActor
from distill_ray.stages.generate import PUZZLE_COLUMNS, procedural_rows
from distill_ray.stages.sink import rejected_dir
from distill_ray.synth.teacher import example_pool, parse_pair, prompt_messages
from distill_ray.tasks import list_families
from distill_ray.verify import Check, Verifier

GOOD = "x: int, a=17) -> bool:\n    return x * 3 == a + 4\n\ndef sol(a=17):\n    return (a + 4) // 3\n```\nmore"
P3_NAMES = "li: List[int]) -> bool:\n    return sum(li) == 9 and len(li) == 2\n\ndef g():\n    return [4, 5]\n```"
TRIVIAL = "s: str) -> bool:\n    return len(s) < 3\n\ndef sol():\n    return 'ab'\n```"
WRONG = "x: int) -> bool:\n    return x > 100\n\ndef sol():\n    return 5\n```"
CUT = "x: int) -> bool:\n    return x == 4\n\ndef sol():\n    return (2 +"   # token budget ran out


def test_parse_pair():
    sat, sol, ans_type, reject = parse_pair(GOOD)
    assert reject == "" and ans_type == "int" and sat.startswith("def sat(x: int, a=17)") and "more" not in sol
    sat, sol, ans_type, reject = parse_pair(P3_NAMES)   # the paper's f/g names are renamed
    assert reject == "" and ans_type == "List[int]" and sol.startswith("def sol():")
    assert parse_pair(CUT)[3] == "missing_sat_or_sol"
    assert parse_pair("x) -> bool:\n    return x\n\ndef sol():\n    return 1")[3] == "no_answer_type"
    assert parse_pair("x: dict) -> bool:\n    return x\n\ndef sol():\n    return {}")[3] == "unsupported_answer_type"


def test_every_teacher_row_gets_a_fate():
    parsed = [parse_pair(t) for t in (GOOD, P3_NAMES, TRIVIAL, WRONG, CUT)]
    batch = pd.DataFrame([dict(id=f"t{i}", chunk=0, source="teacher", family="teacher", difficulty=0,
                               ans_type=a, sat=s, sol=g, trusted=False, reject=r, detail="")
                          for i, (s, g, a, r) in enumerate(parsed)], columns=list(PUZZLE_COLUMNS))
    out = VerifierActor(dict(timeout_s=2.0), workers=1, judge=judge_puzzles)(batch)
    assert out["reject"].tolist() == ["", "", "trivial", "verify_fail", "missing_sat_or_sol"]


def test_trusted_rows_batched_path_matches_one_by_one():
    batch = procedural_rows(pd.DataFrame({"id": range(200)}), list_families(), [1, 2, 3], 0, 1000, frozenset())
    batch.loc[7, "sol"] = "def sol():\n    return 10 ** 9"                       # wrong answer
    batch.loc[100, "sol"] = "def sol():\n    while True:\n        pass"           # never returns
    fates = {}
    for size in (8, 1):
        out = VerifierActor(dict(timeout_s=1.0), workers=2, judge=judge_puzzles, trusted_batch=size)(batch.copy())
        fates[size] = out["reject"].tolist()
    assert fates[8] == fates[1]
    assert {i: f for i, f in enumerate(fates[8]) if f} == {7: "verify_fail", 100: "verify_timeout"}


def test_prompts_show_real_p3_puzzles(shared_data):
    pool = example_pool(shared_data / "p3")
    messages = prompt_messages(pool, 0, 3, seed=0)
    assert messages == prompt_messages(pool, 0, 3, seed=0) != prompt_messages(pool, 1, 3, seed=0)
    assert messages[0]["content"].count("def sat(") == 3 and messages[0]["content"].count("def sol(") == 3


@pytest.mark.slow
def test_real_teacher_writes_puzzles_through_the_job(ray_cluster, shared_data, tmp_path):
    from distill_ray.synth.job import run_job

    out = tmp_path / "ds"
    cfg = PuzzleJobConfig(num=60, output=str(out), teacher_prompts=3, teacher_samples=2, chunk_size=60,
                          teacher_max_new_tokens=96, p3_path=str(shared_data / "p3"), progress_s=30)
    summary = run_job(cfg, log=lambda line: None)
    kept = pads.dataset(str(out), format="parquet").to_table().to_pandas()
    rejected = pads.dataset(str(rejected_dir(out)), format="parquet").to_table().to_pandas()
    teacher_kept, teacher_rejected = kept[kept["source"] == "teacher"], rejected[rejected["source"] == "teacher"]
    # Every teacher row has exactly one recorded fate, and every rejection a reason (and the raw text).
    assert sorted(list(teacher_kept["id"]) + list(teacher_rejected["id"])) == \
        sorted(f"teacher/p{p}/k{k}" for p in range(3) for k in range(2))
    assert all(teacher_rejected["reason"].str.len() > 0)
    assert summary["rows_done"] == 60 + 6
    # Kept teacher puzzles really verify, untrusted, and are not trivial.
    with Verifier(workers=1) as v:
        for row in teacher_kept.itertuples():
            assert v.verify([Check("p3", row.sol, sat=row.sat, ans_type=row.ans_type)])[0].passed
    print(json.dumps({"teacher_fates": teacher_rejected["reason"].value_counts().to_dict(),
                      "teacher_kept": len(teacher_kept)}))
