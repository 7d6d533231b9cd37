"""Evaluation by execution: pass@k with the unbiased estimator, and the run report."""

from distill_ray.evaluate.passk import pass_at_k, summarize_passk

__all__ = ["pass_at_k", "summarize_passk"]
