"""KNIFE measured on a small student (``python -m distill_ray.train.knife_run``).

The task: a built-in puzzle's ``sat`` in, a satisfying answer (a Python literal) out, nothing else; the rationale is
the puzzle's reference program (the verified ``sol`` that computes the answer). Only families whose answers are a
few tokens take part. Scored by execution: a held-out puzzle counts when ``sat(answer)`` is True for the greedy
answer (``solved``).

The same cut SmolLM2 initialises every model, trained the same optimizer steps on the same rows in the same seeded
order:

- the KNIFE teacher: ``knife_teacher`` (rationale + sat -> answer, the answer reading the rationale only through
  the sat's tokens);
- ``sft``: the student on sat -> answer;
- ``sft + knife``: the same, plus the alignment of its hidden states with the teacher's (``knife``).

The teacher is scored with its rationale (the bottleneck as in training) and without (an empty one). One seed.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

from distill_ray.train.config import TrainSettings

PROMPT = "{sat}\n# sat(answer) is True for answer ="
MAX_ANSWER_TOKENS = 8   # families whose reference answers all fit (lists and long strings are left out)


def knife_rows(problems: list[dict]) -> list[dict]:
    """(sat prompt, answer, rationale) rows: the answer is the repr of what the reference program returns."""
    rows = []
    for p in problems:
        scope: dict = {}
        exec(p["reference"], scope)   # our own generated puzzles' reference programs
        rows.append({"prompt_text": PROMPT.format(sat=p["question"]), "target_text": " " + repr(scope["sol"]()),
                     "rationale_text": p["reference"] + "\n", "sat": p["sat"], "family": p["family"]})
    return rows


def short_families(tokenizer, problems: list[dict]) -> list[str]:
    """Families every one of whose answers in ``problems`` is at most MAX_ANSWER_TOKENS tokens."""
    longest: dict[str, int] = {}
    for row in knife_rows(problems):
        n = len(tokenizer(row["target_text"], add_special_tokens=False)["input_ids"])
        longest[row["family"]] = max(longest.get(row["family"], 0), n)
    return [family for family, n in longest.items() if n <= MAX_ANSWER_TOKENS]


def solved(sat: str, answer: str) -> bool:
    """sat(answer) is True, the answer read as a Python literal (bounded, so no check runs long)."""
    try:
        value = ast.literal_eval(answer.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return False
    if isinstance(value, int) and abs(value) > 10 ** 9 or isinstance(value, (str, list)) and len(value) > 100:
        return False
    scope: dict = {}
    try:
        exec(sat, scope)
        return scope["sat"](value) is True
    except Exception:
        return False


def greedy_answers(model_dir: str, rows: list[dict], rationale: bool, max_new_tokens: int = 12) -> list[str]:
    """Each row's greedy answer, one row at a time (no padding). ``rationale``: the KNIFE teacher's view, the
    rationale before the prompt and the generated tokens kept from it by the bottleneck mask."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill_ray.train.data import IGNORE_INDEX
    from distill_ray.train.knife import attention

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    answers = []
    with torch.no_grad():
        for row in rows:
            head = tokenizer(row["rationale_text"], add_special_tokens=False)["input_ids"] if rationale else []
            prompt = tokenizer(row["prompt_text"], add_special_tokens=False)["input_ids"]
            written: list[int] = []
            for _ in range(max_new_tokens):
                ids = torch.tensor([head + prompt + written])
                batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                         "position_ids": torch.arange(ids.shape[1])[None],
                         "labels": torch.tensor([[IGNORE_INDEX] * (len(head) + len(prompt)) + written])}
                if rationale:
                    batch["rationale"] = torch.tensor([[True] * len(head) + [False] * (len(prompt) + len(written))])
                logits = model(input_ids=ids, attention_mask=attention(model, batch),
                               position_ids=batch["position_ids"], use_cache=False, logits_to_keep=1).logits
                token = int(logits[0, -1].argmax())
                if token == tokenizer.eos_token_id:
                    break
                written.append(token)
            answers.append(tokenizer.decode(written))
    return answers


def accuracy(model_dir: str, rows: list[dict], rationale: bool = False) -> dict:
    answers = greedy_answers(model_dir, rows, rationale)
    hits = [solved(row["sat"], answer) for row, answer in zip(rows, answers)]
    exact = [answer.strip() == row["target_text"].strip() for row, answer in zip(rows, answers)]
    return {"solved": round(sum(hits) / len(rows), 3), "solved_count": sum(hits),
            "exact": round(sum(exact) / len(rows), 3),
            "examples": [[row["target_text"], answer] for row, answer in zip(rows[:6], answers[:6])]}


def alignment_mse(student_dir: str, teacher_dir: str, rows: list[dict], max_length: int = 256) -> float:
    """The knife term (mean per aligned token, last layer) of a student against the teacher on ``rows``."""
    import random

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill_ray.train.batch import make_batch
    from distill_ray.train.objectives import Objective

    tokenizer = AutoTokenizer.from_pretrained(student_dir)
    student, teacher = (AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
                        for d in (student_dir, teacher_dir))
    term = Objective({"knife": 1.0}, teacher=teacher)
    values = []
    with torch.no_grad():
        for start in range(0, len(rows), 8):
            chunk = rows[start:start + 8]
            columns = {k: [r[k] for r in chunk] for k in ("prompt_text", "target_text", "rationale_text")}
            batch = make_batch(columns, tokenizer, max_length, tokenizer.pad_token_id, term.needs, random.Random(0))
            values.append(term(student, batch).parts["knife"])
    return round(sum(values) / len(values), 4)


ARMS = ("teacher", "sft", "sft + knife")


def run(out: Path, layers: int, steps: int, num_train: int, num_eval: int, seed: int, lr: float, batch_size: int,
        knife_weight: float, arms: tuple[str, ...] = ARMS) -> dict:
    """The arms asked for (``sft + knife`` reads the teacher an earlier run of ``teacher`` wrote under ``out``);
    their results join those already in ``out``/knife.json."""
    import ray
    from transformers import AutoTokenizer

    from distill_ray.models import resolve_model
    from distill_ray.tasks.puzzles import load_puzzles
    from distill_ray.train import build_student, train_student

    out = out.resolve()   # the teacher's path reaches the Ray workers, whose working directory is not ours
    out.mkdir(parents=True, exist_ok=True)
    full = resolve_model("smollm2")
    init = build_student(full, out / "student_cut", num_layers=layers)
    families = short_families(AutoTokenizer.from_pretrained(init),
                              load_puzzles(num_train=200, num_eval=0, seed=seed)[0])
    train, evals = load_puzzles(num_train=num_train, num_eval=num_eval, seed=seed, families=families)
    rows, held = knife_rows(train), knife_rows(evals)
    columns = ("prompt_text", "target_text", "rationale_text")
    data = ray.data.from_items([{k: r[k] for k in columns} for r in rows])
    common = dict(workers=1, zero_stage=0, batch_size=batch_size, lr=lr, seed=seed, log_every=10, max_length=256,
                  tensorboard=False, torch_threads=2, cpus_per_worker=1, max_steps=steps, epochs=100)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    saved = out / "knife.json"
    results: dict = json.loads(saved.read_text()) if saved.exists() else {}
    results |= {"setup": {"layers": layers, "steps": steps, "families": families, "train_rows": len(rows),
                          "eval_rows": len(held), "lr": lr, "batch_size": batch_size, "seed": seed,
                          "knife_weight": knife_weight}}
    settings = {"teacher": TrainSettings(**common, objectives={"knife_teacher": 1.0}),
                "sft": TrainSettings(**common, objectives={"sft": 1.0}),
                "sft + knife": TrainSettings(**common, objectives={"sft": 1.0, "knife": knife_weight},
                                             teacher_dir=str(out / "teacher"))}
    for arm in arms:
        result = train_student(init, data, out / arm.replace(" + ", "_"), settings[arm])
        results[arm] = {"steps": result.steps, "seconds": round(result.seconds, 1),
                        "final_train_loss": result.final_loss}
        if arm == "teacher":
            results[arm]["with_rationale"] = accuracy(result.output_dir, held, rationale=True)
            results[arm]["without_rationale"] = accuracy(result.output_dir, held, rationale=False)
        else:
            results[arm].update(accuracy(result.output_dir, held),
                                knife_mse=alignment_mse(result.output_dir, str(out / "teacher"), held))
        print(arm, json.dumps(results[arm]), flush=True)
        saved.write_text(json.dumps(results, indent=2))
    return results


def main() -> None:
    from distill_ray.train.pangu import run_arguments

    parser = run_arguments(__doc__.split("\n\n")[0], "outputs/knife", layers=4, steps=48)
    parser.add_argument("--knife-weight", type=float, default=1.0)
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    args = parser.parse_args()
    results = run(Path(args.out), args.layers, args.steps, args.num_train, args.num_eval, args.seed, args.lr,
                  args.batch_size, args.knife_weight, tuple(args.arms))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
