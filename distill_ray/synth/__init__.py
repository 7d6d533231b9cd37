"""Synthetic programming puzzles at scale: procedural and teacher-written, verified, deduplicated, sharded.

``distill-ray puzzles --num N --output DIR`` runs ``job.run_job`` over ``pipelines/puzzles.py`` (its stages:
``stages/generate``, ``puzzle_teacher``, ``check``, ``sink``). Here: ``config`` (settings and the chunk plan),
``dedupe`` (the keys and the index), ``teacher`` (prompts for teacher-written puzzles and parsing them),
``batchcheck`` (many trusted checks in one sandboxed process).
"""
