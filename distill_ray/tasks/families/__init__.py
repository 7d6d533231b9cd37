"""Procedural puzzle families, one module per topic; importing the package registers all of them.

``FAMILIES`` (name -> Family) and the ``family`` decorator live in ``core``; registration order (module order
below, then definition order) is the default round-robin order of ``load_puzzles``.
"""

from distill_ray.tasks.families.core import ANSWER_VARS, DIFFICULTIES, FAMILIES, Family, LETTERS, WORDS, family
from distill_ray.tasks.families import arithmetic, strings, lists, geometry, games, steps  # noqa: F401,E402 (registers)

__all__ = ["ANSWER_VARS", "DIFFICULTIES", "FAMILIES", "Family", "LETTERS", "WORDS", "family"]
