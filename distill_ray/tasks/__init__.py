"""Task sources: procedural P3-style puzzles (the embedded default), GSM8K, and real P3 puzzles.

Every source yields problem dicts with the keys of PROBLEM_COLUMNS (see schema.py for their meaning).
"""

from distill_ray.tasks.families import DIFFICULTIES, FAMILIES, Family
from distill_ray.tasks.gsm8k import GSM8K_EXEMPLARS, load_gsm8k
from distill_ray.tasks.load import SOURCES, load_problems
from distill_ray.tasks.p3 import load_p3
from distill_ray.tasks.puzzles import Puzzle, generate_puzzle, list_families
from distill_ray.tasks.schema import PROBLEM_COLUMNS, check_problem, make_problem

__all__ = [
    "DIFFICULTIES", "FAMILIES", "Family", "GSM8K_EXEMPLARS", "PROBLEM_COLUMNS", "Puzzle", "SOURCES",
    "check_problem", "generate_puzzle", "list_families", "load_gsm8k", "load_p3", "load_problems", "make_problem",
]
