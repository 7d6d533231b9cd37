"""Pipelines as plain lists of stages: ``distill`` (problems -> verified, voted candidates) and ``puzzles``
(the streaming puzzle job)."""
