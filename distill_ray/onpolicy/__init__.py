"""On-policy distillation: the student samples, the teachers score every token it wrote, the verifier judges
each program, and Ray Train minimises the divergence on the student's own samples (``train.mode: on_policy``).

``rollouts.py`` (pure: teacher mixture, verdict weights, the micro-batch), ``loss.py`` (the objective),
``actors.py`` (samplers, teacher scorers, judge), ``loop.py`` (per training worker), ``trainer.py`` (driver)."""

from distill_ray.onpolicy.trainer import ScoringTeacher, train_on_policy

__all__ = ["ScoringTeacher", "train_on_policy"]
