"""Real P3 puzzles (Schuster et al.) from ``puzzles.json`` + ``split.json``, on the papers' family split.

Train rows come from split.json's "train" families and eval rows from its "test" families, so no puzzle family
is in both. Families in neither list (the human_eval ones) are not used.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from distill_ray.tasks.schema import make_problem

SOURCE = "p3"


def read_p3(path: str | Path) -> tuple[list[dict], dict]:
    """(puzzle records, {"train": [...], "test": [...]}) from the P3 directory ``path``."""
    path = Path(path)
    files = [path / "puzzles.json", path / "split.json"]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ValueError(f"P3 files not found: {missing} (path must be the directory with puzzles.json/split.json)")
    with open(files[0], encoding="utf-8") as handle:
        records = json.load(handle)
    with open(files[1], encoding="utf-8") as handle:
        split = json.load(handle)
    return records, split


def family_of(name: str) -> str:
    return name.split(":", 1)[0]


def reference_of(record: dict) -> str:
    """sol_header + the first shipped body ("" when the puzzle ships none)."""
    bodies = record.get("sol_bodies") or []
    if not bodies:
        return ""
    return record["sol_header"] + "\n" + bodies[0].lstrip("\n")


def to_problem(record: dict, split: str) -> dict:
    return make_problem(task_id=f"{SOURCE}/{record['name']}", split=split, source=SOURCE,
                        family=family_of(record["name"]), difficulty=1, kind="p3", question=record["sat"],
                        sat=record["sat"], ans_type=record["ans_type"], reference=reference_of(record))


def load_p3(path: str | Path, *, num_train: int, num_eval: int, seed: int = 0,
            families: list[str] | None = None) -> tuple[list[dict], list[dict]]:
    records, split = read_p3(path)
    wanted = _check_families(records, families)
    sides = {"train": set(split["train"]), "eval": set(split["test"])}
    result = []
    for side, count in (("train", num_train), ("eval", num_eval)):
        chosen = [r for r in records if family_of(r["name"]) in sides[side]
                  and (wanted is None or family_of(r["name"]) in wanted)
                  # A train row must carry a reference: it is what the student and the prompts learn from.
                  and (side == "eval" or reference_of(r))]
        # Seeded shuffle of the file order, so any prefix mixes families; one RNG per side keeps them independent.
        random.Random(f"p3/{side}/{seed}").shuffle(chosen)
        result.append([to_problem(r, side) for r in chosen[:count]])
    return result[0], result[1]


def _check_families(records: list[dict], families: list[str] | None) -> set[str] | None:
    if families is None:
        return None
    known = {family_of(r["name"]) for r in records}
    unknown = sorted(set(families) - known)
    if unknown:
        raise ValueError(f"unknown P3 families {unknown} (not in puzzles.json)")
    return set(families)
