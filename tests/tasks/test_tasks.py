"""Task sources: procedural puzzles, GSM8K and P3 loaders, the problem schema, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from distill_ray.tasks import (
    DIFFICULTIES, FAMILIES, GSM8K_EXEMPLARS, PROBLEM_COLUMNS, check_problem, generate_puzzle, list_families,
    load_gsm8k, load_problems,
)
from distill_ray.tasks.puzzles import EVAL_OFFSET

SEEDS_PER_CHECK = 40
TYPES = {"int": int, "str": str, "List[int]": (list, int), "List[str]": (list, str)}


def run_puzzle(sat_src: str, sol_src: str):
    """(sat function, sol()'s answer): both sources are exec'd as a model's candidate would be."""
    namespace = {"List": List}
    exec(sat_src, namespace)
    exec(sol_src, namespace)
    return namespace["sat"], namespace["sol"]()


def has_type(value, ans_type: str) -> bool:
    expected = TYPES[ans_type]
    if isinstance(expected, tuple):
        outer, inner = expected
        return type(value) is outer and all(type(v) is inner for v in value)
    return type(value) is expected


def wrong_answer(answer):
    """A nearby answer that every family's puzzle must reject."""
    if isinstance(answer, int):
        return answer + 1
    if isinstance(answer, str):
        return answer + "z"
    if answer and isinstance(answer[-1], int):
        return answer + [answer[-1] + 1]
    return answer + ["zz"]


def rejects(sat, answer) -> bool:
    try:
        return sat(answer) is not True
    except Exception:   # a crash on a wrong answer is also a rejection
        return True


# ------------------------------------------------------------------ procedural puzzles

def test_registry_has_enough_families_across_topics():
    assert len(list_families()) >= 30
    topics = {FAMILIES[name].topic for name in list_families()}
    assert {"arithmetic", "strings", "lists", "number_theory", "combinatorics", "geometry", "games"} <= topics


@pytest.mark.parametrize("difficulty", DIFFICULTIES)
@pytest.mark.parametrize("family", list_families())
def test_reference_satisfies_and_wrong_answer_fails(family, difficulty):
    for seed in range(SEEDS_PER_CHECK):
        puzzle = generate_puzzle(family, seed, difficulty)
        sat, answer = run_puzzle(puzzle.sat, puzzle.sol)
        assert has_type(answer, puzzle.ans_type), (puzzle.sat, puzzle.sol, answer)
        assert sat(answer) is True, (puzzle.sat, puzzle.sol, answer)
        assert rejects(sat, wrong_answer(answer)), (puzzle.sat, wrong_answer(answer))


@pytest.mark.parametrize("family", list_families())
def test_puzzle_form(family):
    puzzle = generate_puzzle(family, 3, 1)
    header, body = puzzle.sat.split("\n")
    assert header.startswith("def sat(") and header.endswith(f": {puzzle.ans_type}) -> bool:")
    assert body.startswith("    return ") and len(puzzle.sat) < 200
    assert puzzle.sol.startswith("def sol():\n    return ")
    # The exemplar answer is computed from the puzzle's constants, never a bare literal result.
    _, answer = run_puzzle(puzzle.sat, puzzle.sol)
    assert puzzle.sol.split("return ", 1)[1] != repr(answer)


def test_difficulty_one_is_trivial():
    assert generate_puzzle("add_const", 0, 1).sat.endswith("return x + 2 == 28")
    for family in list_families():
        assert len(generate_puzzle(family, 0, 1).sat.split("return ", 1)[1]) <= 60, family


def test_generate_puzzle_is_deterministic_and_validates():
    assert generate_puzzle("affix", 11, 2) == generate_puzzle("affix", 11, 2)
    assert generate_puzzle("affix", 11, 2) != generate_puzzle("affix", 12, 2)
    with pytest.raises(ValueError, match="unknown puzzle family"):
        generate_puzzle("nope", 0, 1)
    with pytest.raises(ValueError, match="difficulty"):
        generate_puzzle("add_const", 0, 4)


def test_puzzle_hash_seed_independent():
    """String seeds go through SHA-512, so another interpreter (other PYTHONHASHSEED) gives the same puzzle."""
    code = "from distill_ray.tasks import generate_puzzle; print(generate_puzzle('repeat_str', 5, 3).sat)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123"}, cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == generate_puzzle("repeat_str", 5, 3).sat


def test_load_puzzles_split_dedup_and_determinism():
    train, eval_ = load_problems("puzzles", num_train=120, num_eval=60, seed=3, difficulty=1)
    assert (len(train), len(eval_)) == (120, 60)
    assert train == load_problems("puzzles", num_train=120, num_eval=60, seed=3, difficulty=1)[0]
    assert train != load_problems("puzzles", num_train=120, num_eval=60, seed=4, difficulty=1)[0]
    ids = [p["task_id"] for p in train + eval_]
    assert len(set(ids)) == len(ids)
    assert not {p["sat"] for p in train} & {p["sat"] for p in eval_}
    assert len({p["sat"] for p in train}) == len(train)
    base = 3 * 2 ** 32
    assert all(base <= int(p["task_id"].rsplit("/s", 1)[1]) < base + EVAL_OFFSET for p in train)
    assert all(int(p["task_id"].rsplit("/s", 1)[1]) >= base + EVAL_OFFSET for p in eval_)
    # Round-robin: every family shows up, in registry order first.
    assert [p["family"] for p in train[:len(FAMILIES)]] == list_families()
    for p in train[:5] + eval_[:5]:
        check_problem(p)
        assert (p["kind"], p["source"], p["difficulty"], p["expected"]) == ("p3", "puzzles", 1, None)
        assert p["question"] == p["sat"]


def test_task_id_regenerates_the_puzzle():
    train, _ = load_problems("puzzles", num_train=30, num_eval=0, difficulty=2)
    for p in train:
        _, family, d, s = p["task_id"].split("/")
        assert generate_puzzle(family, int(s[1:]), int(d[1:])).sat == p["sat"]


def test_family_filter_and_exhaustion():
    train, eval_ = load_problems("puzzles", num_train=10, num_eval=4, families=["add_const", "repeat_str"])
    assert {p["family"] for p in train + eval_} == {"add_const", "repeat_str"}
    with pytest.raises(ValueError, match="unknown puzzle families"):
        load_problems("puzzles", num_train=1, num_eval=1, families=["add_const", "bogus"])
    # root at difficulty 1 has only 39 distinct puzzles: a clear error, not an endless loop.
    with pytest.raises(ValueError, match="distinct eval puzzles"):
        load_problems("puzzles", num_train=30, num_eval=15, families=["root"])


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown task source"):
        load_problems("apps", num_train=1, num_eval=1)
    with pytest.raises(ValueError, match="needs path"):
        load_problems("humaneval", num_train=1, num_eval=1)
    with pytest.raises(ValueError, match="needs path"):
        load_problems("gsm8k", num_train=1, num_eval=1)
    with pytest.raises(ValueError, match="not found"):
        load_problems("p3", num_train=1, num_eval=1, path="/nonexistent")
    with pytest.raises(ValueError, match="not found"):
        load_problems("gsm8k", num_train=1, num_eval=1, path="/nonexistent")
    with pytest.raises(ValueError, match="difficulty"):
        load_problems("puzzles", num_train=1, num_eval=1, difficulty=0)


# ------------------------------------------------------------------ GSM8K

def run_solution(program: str):
    namespace: dict = {}
    exec(program, namespace)
    return namespace["solution"]()


def test_gsm8k_exemplars_are_correct_programs():
    assert len(GSM8K_EXEMPLARS) == 4
    for ex in GSM8K_EXEMPLARS:
        check_problem(ex)
        assert ex["reference"].startswith("def solution():\n") and ex["reference"].endswith("return result")
        assert run_solution(ex["reference"]) == ex["expected"]


GOOD = {"question": "Tom has 3 apples and buys 4 more. How many?",
        "answer": "He has 3+4=<<3+4=7>>7.\n#### 7"}


def test_gsm8k_quarantines_bad_lines(tmp_path):
    lines = [
        json.dumps(GOOD),
        "{not json",
        json.dumps({"answer": "#### 3"}),                                       # no question
        json.dumps({"question": "How many?", "answer": "It is 5."}),              # no #### N
        json.dumps({"question": "How many?", "answer": "#### inf"}),              # not finite
        json.dumps({"question": "How many?", "answer": "#### five"}),             # not a number
        "",
        json.dumps(["a list"]),
        json.dumps({"question": "Big?", "answer": "1000+80=<<1000+80=1080>>\n#### 1,080"}),
    ]
    file = tmp_path / "train.jsonl"
    file.write_bytes(("\n".join(lines) + "\n").encode() + b'{"question": "\xff?"}\n')   # + bad UTF-8
    problems, quarantined = load_gsm8k(tmp_path, "train")
    assert [p["task_id"] for p in problems] == ["gsm8k/train/0", "gsm8k/train/8"]
    assert [p["expected"] for p in problems] == [7.0, 1080.0]
    assert [q["line"] for q in quarantined] == [2, 3, 4, 5, 6, 7, 8, 10]
    assert "utf-8" in quarantined[-1]["reason"]
    assert all(set(q) == {"line", "reason", "raw"} and q["reason"] for q in quarantined)
    assert "JSON" in quarantined[0]["reason"] and "####" in quarantined[2]["reason"]
    assert "finite" in quarantined[3]["reason"]
    # load_problems skips them too, logs them, and hands them to a caller-supplied list.
    (tmp_path / "test.jsonl").write_text(json.dumps(GOOD | {"question": "Other?"}) + "\n{bad\n")
    bad: list[dict] = []
    train, eval_ = load_problems("gsm8k", num_train=10, num_eval=10, path=str(tmp_path), quarantine=bad)
    assert (len(train), len(eval_), len(bad)) == (2, 1, 9)
    assert bad[-1]["split"] == "test" and bad[-1]["line"] == 2


def test_gsm8k_reference_from_annotations(tmp_path):
    record = {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many "
                          "clips in May. How many clips did Natalia sell altogether in April and May?",
              "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
                        "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"}
    (tmp_path / "train.jsonl").write_text(json.dumps(record) + "\n"
                                          + json.dumps({"question": "Q?", "answer": "no notes\n#### 12"}) + "\n")
    (problem, plain), _ = load_gsm8k(tmp_path, "train")
    assert problem["reference"] == ("def solution():\n    step1 = 48 / 2\n    step2 = 48 + step1\n"
                                    "    result = step2\n    return result")
    assert plain["reference"] == "def solution():\n    return 12"


@pytest.fixture(scope="module")
def gsm8k_dir(shared_data):
    path = shared_data / "gsm8k"
    if not (path / "train.jsonl").exists():
        pytest.skip(f"GSM8K not found at {path}")
    return path


def test_gsm8k_real_files(gsm8k_dir):
    problems, quarantined = load_gsm8k(gsm8k_dir, "train")
    assert len(problems) == 7473 and quarantined == []
    for p in problems:   # every reference, rebuilt or fallback, reproduces the #### number
        got = run_solution(p["reference"])
        assert abs(got - p["expected"]) <= 1e-6 * max(1.0, abs(p["expected"])), p["task_id"]
    with_steps = sum("step1" in p["reference"] for p in problems)
    assert with_steps > 0.9 * len(problems)
    assert any(p["expected"] == 1080.0 for p in problems) and min(p["expected"] for p in problems) < 0

    train, eval_ = load_problems("gsm8k", num_train=50, num_eval=20, seed=1, path=str(gsm8k_dir))
    assert (len(train), len(eval_)) == (50, 20)
    assert train == load_problems("gsm8k", num_train=50, num_eval=20, seed=1, path=str(gsm8k_dir))[0]
    assert all(p["split"] == "train" and p["task_id"].startswith("gsm8k/train/") for p in train)
    assert all(p["split"] == "eval" and p["task_id"].startswith("gsm8k/test/") for p in eval_)
    for p in train + eval_:
        check_problem(p)
        assert p["kind"] == "gsm8k" and p["sat"] == "" and p["ans_type"] == ""


# ------------------------------------------------------------------ P3

@pytest.fixture(scope="module")
def p3_dir(shared_data):
    path = shared_data / "p3"
    if not (path / "puzzles.json").exists():
        pytest.skip(f"P3 not found at {path}")
    return path


def test_p3_real_files(p3_dir):
    split = json.loads((p3_dir / "split.json").read_text())
    train, eval_ = load_problems("p3", num_train=40, num_eval=30, seed=0, path=str(p3_dir))
    assert (len(train), len(eval_)) == (40, 30)
    assert train == load_problems("p3", num_train=40, num_eval=30, seed=0, path=str(p3_dir))[0]
    assert {p["family"] for p in train} <= set(split["train"])
    assert {p["family"] for p in eval_} <= set(split["test"])
    assert len({p["family"] for p in train}) > 10     # the seeded shuffle mixes families
    for p in train + eval_:
        check_problem(p)
        assert p["task_id"] == f"p3/{p['family']}:{p['task_id'].split(':')[1]}"
        assert p["question"] == p["sat"] and p["sat"].startswith("def sat(") and p["ans_type"]
    assert all(p["reference"].startswith("def sol(") for p in train)
    everything, _ = load_problems("p3", num_train=10_000, num_eval=0, path=str(p3_dir))
    assert 0 < len(everything) < 1259 and all(p["reference"] for p in everything)
    only, _ = load_problems("p3", num_train=100, num_eval=0, path=str(p3_dir), families=["Study_1"])
    assert [p["task_id"] for p in only] == ["p3/Study_1:0"]
    with pytest.raises(ValueError, match="unknown P3 families"):
        load_problems("p3", num_train=1, num_eval=1, path=str(p3_dir), families=["NoSuchFamily"])


def test_p3_references_verify(p3_dir):
    """A handful of real references satisfy their sat, checked like upstream (own process, digit limit off)."""
    train, _ = load_problems("p3", num_train=8, num_eval=0, seed=0, path=str(p3_dir))
    checks = "".join(
        f"ns = {{'List': List}}\nexec({p['sat']!r}, ns)\nexec({p['reference']!r}, ns)\n"
        f"assert ns['sat'](ns['sol']()) is True, {p['task_id']!r}\n" for p in train)
    code = "import sys\nsys.set_int_max_str_digits(0)\nfrom typing import List\n" + checks
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


# ------------------------------------------------------------------ schema

def test_all_sources_share_one_arrow_schema(gsm8k_dir, p3_dir):
    pa = pytest.importorskip("pyarrow")
    rows = (load_problems("puzzles", num_train=5, num_eval=5)[0]
            + load_problems("p3", num_train=5, num_eval=5, path=str(p3_dir))[1]
            + load_problems("gsm8k", num_train=5, num_eval=0, path=str(gsm8k_dir))[0] + GSM8K_EXEMPLARS)
    for row in rows:
        assert tuple(row) == tuple(PROBLEM_COLUMNS)
        check_problem(row)
    table = pa.Table.from_pylist(rows)
    assert tuple(table.column_names) == tuple(PROBLEM_COLUMNS)
    assert table.schema.field("expected").type == pa.float64()
    assert table.schema.field("difficulty").type == pa.int64()
