"""GAL (generate, annotate, learn): the teachers write new train problems in the task's format, and the normal
pipeline annotates them like any unlabelled problem.

    real train problems -> writer prompts -> [teachers] -> gal_inputs (parse) -> filter -> + real train problems
                                                                                            -> prompt -> ... -> vote

A writer prompt shows ``shots`` real train problems (of one family where the task has families) as chat turns and
asks for one more; each teacher writes ``samples`` of them. A completion becomes a problem row with the columns of
a real one (``source`` "gal", ``task_id`` ``gal/p<prompt>/<teacher>/k<sample>``: which prompt and which teacher
wrote it) or is dropped as malformed with its reason. The rest are filtered in a fixed order, each problem's fate
recorded: ``contaminated`` (the same or nearly the same text as an evaluation problem), ``duplicate_exact`` /
``duplicate_near`` (of a real train problem or of a generated one kept before it; exact: the same words,
near: MinHash of word 3-grams, both ``tasks/decontaminate.py``'s), else ``kept``. A kept GSM8K question has no
reference answer (``expected`` None): the teachers' programs answer it and the vote labels it (agreement: a hard
label, disagreement: soft labels). A kept puzzle is verified like any other, its ``sat`` run as untrusted code
(``source`` is not one of the curated ones).

Every generated problem and its fate go to ``<output>/gal_inputs.jsonl`` (the audit: which real problems the
prompt showed, the teacher's text, why it was dropped); the dataset manifest holds the counts (``summary``).
"""

from __future__ import annotations

import ast
import json
import random
import re
from collections import Counter, defaultdict
from pathlib import Path

import pandas as pd

from distill_ray.synth.teacher import default_answer, parse_prefix
from distill_ray.tasks.decontaminate import EvalIndex

SOURCE = "gal"
KINDS = ("gsm8k", "p3")   # the kinds a teacher can write: a word problem, or a puzzle the verifier can run
SYSTEMS = {
    "gsm8k": "You write new grade-school math word problems: a short story with numbers that ends in one question "
             "whose answer is a number. Reply with the problem only.",
    "p3": "You write new Python programming puzzles: a function sat(x) that returns True exactly for the correct "
          "answers x. Reply with code only.",
}
ASK = "Write a new problem, different from the ones before."
RESPONSE_PREFIXES = {"gsm8k": "", "p3": "def sat("}
# A question shorter than this is not a word problem; a longer one is the teacher rambling on.
MIN_WORDS, MAX_WORDS = 8, 150
# Where a written question ends: a blank line, or the teacher going on with an answer or the next problem.
_QUESTION_END = re.compile(r"\n\s*\n|\n\s*(?:problem|question|answer|solution|step|def |```)", re.I)
_LABEL = re.compile(r"^\s*(?:new\s+)?(?:problem|question)\s*\d*\s*[:.]\s*", re.I)


def writer_prompts(train: list[dict], prompts: int, shots: int, seed: int) -> pd.DataFrame:
    """One row per writer prompt: chat ``messages`` showing ``shots`` real train problems as earlier answers,
    then the request; families take turns, so every family of the task gets new problems."""
    by_family = families(train, "gal")
    names = sorted(by_family)
    rows = []
    for i in range(prompts):
        pool = by_family[names[i % len(names)]]
        shown = random.Random(f"gal/{seed}/{i}").sample(pool, min(shots, len(pool)))
        rows.append(writer_row(f"gal/p{i}", shown, ASK))
    return pd.DataFrame(rows)


def families(train: list[dict], method: str) -> dict[str, list[dict]]:
    """The real train problems by family, refusing a kind no teacher can write (``method`` names the caller)."""
    by_family: dict[str, list[dict]] = defaultdict(list)
    for p in train:
        if p["kind"] not in KINDS:
            raise ValueError(f"{method}: teachers can write problems of kinds {KINDS}, not {p['kind']!r} "
                             f"({p['task_id']})")
        by_family[p["family"]].append(p)
    if not by_family:
        raise ValueError(f"{method}: no real train problems to show the teachers")
    return by_family


def writer_row(task_id: str, shown: list[dict], ask: str) -> dict:
    """A writer prompt: the ``shown`` problems as the teacher's earlier answers to ``ASK``, then ``ask``."""
    kind = shown[0]["kind"]
    messages = [{"role": "system", "content": SYSTEMS[kind]}]
    for p in shown:
        messages += [{"role": "user", "content": ASK}, {"role": "assistant", "content": problem_text(p)}]
    messages.append({"role": "user", "content": ask})
    return {"task_id": task_id, "kind": kind, "family": shown[0]["family"], "difficulty": shown[0]["difficulty"],
            "messages": json.dumps(messages), "response_prefix": RESPONSE_PREFIXES[kind],
            "shown": json.dumps([p["task_id"] for p in shown])}


def problem_text(problem: dict) -> str:
    return problem["sat"] if problem["kind"] == "p3" else problem["question"]


def parse_question(completion: str, finished: bool) -> tuple[str, str]:
    """(question, "") from a written word problem, or ("", why it is malformed). The question is the first
    paragraph up to its last '?' (a small teacher often goes on with an answer or the next problem)."""
    text = _QUESTION_END.split(_LABEL.sub("", completion.strip()), maxsplit=1)[0]
    if "?" not in text:
        return "", "no_question" if finished else "unfinished"
    text = " ".join(text[:text.rindex("?") + 1].split())
    words = len(text.split())
    if not any(c.isdigit() for c in text):
        return "", "no_number"
    if words < MIN_WORDS:
        return "", "too_short"
    if words > MAX_WORDS:
        return "", "too_long"
    return text, ""


def parse_puzzle(completion: str) -> tuple[str, str, str]:
    """(sat source, answer type, "") from a completion of ``def sat(``, or ("", "", why it is malformed). Only
    the function ``sat`` is kept (a puzzle of this task is that one function)."""
    tree = parse_prefix(RESPONSE_PREFIXES["p3"] + completion.split("```", 1)[0])
    if tree is None:
        return "", "", "unparsable"
    sat = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "sat"), None)
    if sat is None or not any(isinstance(n, ast.Return) for n in ast.walk(sat)):
        return "", "", "no_sat"
    if not sat.args.args or sat.args.args[0].annotation is None:
        return "", "", "no_answer_type"
    ans_type = ast.unparse(sat.args.args[0].annotation)
    if default_answer(ans_type) is None:
        return "", "", "unsupported_answer_type"
    return ast.unparse(sat), ans_type, ""


def written_problem(kind: str, completion: str, finished: bool) -> tuple[dict, str]:
    """The problem columns a completion gives (question, sat, ans_type), and "" or why it is malformed."""
    if kind == "p3":
        sat, ans_type, reject = parse_puzzle(completion)
        return {"question": sat, "sat": sat, "ans_type": ans_type}, reject
    question, reject = parse_question(completion, finished)
    return {"question": question, "sat": "", "ans_type": ""}, reject


def filter_inputs(rows: pd.DataFrame, real: list[dict], eval_index: EvalIndex | None,
                  threshold: float) -> list[str]:
    """Each generated row's fate, in row order: its ``reject`` reason when malformed, else ``contaminated:
    ...`` (eval_index's reason), ``duplicate_exact`` / ``duplicate_near`` (of a real train problem or an
    earlier kept row), or ``kept``. Only kept rows enter the dedupe index, so a row is dropped for what the
    student would otherwise see twice."""
    seen = EvalIndex(real, threshold)
    fates = []
    for row in rows.to_dict("records"):
        if row["reject"]:
            fates.append(f"malformed: {row['reject']}")
            continue
        why = eval_index.match(row) if eval_index is not None else None
        copy = seen.nearest(row) if why is None else None
        if why is None and copy is not None:
            why = f"duplicate_{copy[0]}"
        if why is None:
            seen.add(row)
            why = "kept"
        fates.append(why)
    return fates


def fate_kind(fate: str) -> str:
    """The counter a fate goes to: kept, malformed, contaminated, duplicate_exact, duplicate_near."""
    return fate.split(":", 1)[0]


def summary(records: list[dict]) -> dict:
    """The manifest's GAL counts from the audit records."""
    fates = Counter(fate_kind(r["fate"]) for r in records)
    malformed = Counter(r["fate"].split(": ", 1)[1] for r in records if fate_kind(r["fate"]) == "malformed")
    return {"generated": len(records), "kept": fates["kept"], "malformed": sum(malformed.values()),
            "malformed_reasons": dict(sorted(malformed.items())), "duplicate_exact": fates["duplicate_exact"],
            "duplicate_near": fates["duplicate_near"], "contaminated": fates["contaminated"],
            "per_teacher": {t: sum(1 for r in records if r["teacher"] == t and r["fate"] == "kept")
                            for t in sorted({r["teacher"] for r in records})}}


def audit_path(output_dir: str | Path, method: str = SOURCE) -> Path:
    """``<output>/<method>_inputs.jsonl``: GAL's and mix-up's written problems, each in its own file."""
    return Path(output_dir) / f"{method}_inputs.jsonl"


def write_audit(output_dir: str | Path, records: list[dict], method: str = SOURCE) -> Path:
    path = audit_path(output_dir, method)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def read_audit(output_dir: str | Path, method: str = SOURCE) -> list[dict]:
    path = audit_path(output_dir, method)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def generate_inputs(prompts: pd.DataFrame, stages: list, seen: list[dict], eval_index: EvalIndex | None,
                    threshold: float) -> tuple[list[dict], list[dict]]:
    """(the kept generated problems, the audit record of every generated one): ``stages`` (the teachers as
    writers, then a stage parsing their text: ``pipelines/gal.py``) run over the writer ``prompts`` on Ray Data
    (Ray must be connected), then the driver filters them all in a fixed order (prompt, teacher, sample) against
    ``seen`` (the train problems the student already has), so a run's result does not depend on the order Ray
    Data returns rows in. GAL and mix-up both come through here, each with its own prompts and parse stage."""
    import ray.data

    from distill_ray.pipelines.gal import SOURCE_COLUMNS
    from distill_ray.stages import apply_stages
    from distill_ray.tasks.schema import PROBLEM_COLUMNS

    ds = apply_stages(ray.data.from_pandas(prompts), SOURCE_COLUMNS, stages)
    rows = ds.to_pandas()
    rows["_prompt"] = [int(str(w).rsplit("p", 1)[-1]) for w in rows["writer_prompt"]]
    rows = rows.sort_values(["_prompt", "teacher", "sample_index"], kind="stable").reset_index(drop=True)
    rows["fate"] = filter_inputs(rows, seen, eval_index, threshold)
    # Back to plain problem dicts: pandas made the missing number NaN and the difficulty a numpy integer.
    kept = [{**{c: row[c] for c in PROBLEM_COLUMNS}, "expected": None, "difficulty": int(row["difficulty"])}
            for row in rows[rows["fate"] == "kept"].to_dict("records")]
    records = [{"task_id": r["task_id"], "teacher": r["teacher"], "writer_prompt": r["writer_prompt"],
                "shown": json.loads(r["shown"]), "fate": r["fate"], "text": problem_text(r),
                "completion": r["completion"]} for r in rows.to_dict("records")]
    return kept, records
