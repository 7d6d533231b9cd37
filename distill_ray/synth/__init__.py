"""Synthetic programming puzzles at scale: procedural and teacher-written, verified, deduplicated, sharded.

``distill-ray puzzles --num N --output DIR`` runs ``job.run_job``; ``dedupe`` holds the keys and the index,
``teacher`` the teacher-written puzzles, ``sink`` the one actor that deduplicates and writes shards.
"""
