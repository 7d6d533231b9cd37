"""Critic-guided resampling (stages/resample.py) with a scripted engine and a critic that accepts one word:
rejected slots are sampled again until accepted or out of rounds, accepted ones are never touched, and each
prompt keeps its slots."""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from distill_ray.stages.resample import Resampler
from distill_ray.teachers.base import Batch, Generation, SamplingSettings
from distill_ray.teachers.provenance import candidate_columns

BITS = 8


class ScriptedEngine:
    """Completion 'return GOOD' or 'return bad', decided by a hash of (seed, prompt, sample): reproducible."""

    def __init__(self):
        self.calls: list[int] = []

    def generate(self, prompts, sampling):
        self.calls.append(len(prompts) * sampling.n)
        rows = [[Generation("return GOOD" if zlib.crc32(f"{sampling.seed}/{p}/{i}".encode()) % 4 == 0
                            else "return bad", 3, 2, True) for i in range(sampling.n)] for p in prompts]
        return Batch.of(rows, 0.01)

    def provenance(self):
        return {"engine": "scripted", "engine_model": "none", "engine_version": "0"}


def word_critic() -> dict:
    """Accepts a program with the token GOOD: its hashed feature gets a large weight, everything else none."""
    weights = np.zeros(1 << BITS, dtype=np.float32)
    weights[zlib.crc32(b"P:GOOD") % (1 << BITS)] = 20.0
    assert zlib.crc32(b"bias") % (1 << BITS) != zlib.crc32(b"P:GOOD") % (1 << BITS)
    weights[zlib.crc32(b"bias") % (1 << BITS)] = -5.0
    return dict(weights=weights, threshold=0.5)


def first_pass(engine, prompts, sampling) -> pd.DataFrame:
    batch = pd.DataFrame({"task_id": [f"t{i}" for i in range(len(prompts))], "kind": "p3",
                          "response_prefix": "def sol():\n    ", "sat": "def sat(x): return x",
                          "question": None})
    rows = batch.loc[batch.index.repeat(sampling.n)].reset_index(drop=True)
    for column, values in candidate_columns(prompts, engine.generate(prompts, sampling), sampling,
                                            engine.provenance()).items():
        rows[column] = values
    return rows


def test_rejected_slots_are_sampled_again_and_accepted_ones_stay():
    engine, sampling = ScriptedEngine(), SamplingSettings(n=4, seed=7)
    prompts = [f"prompt {i}" for i in range(6)]
    before = first_pass(engine, prompts, sampling)
    out = Resampler(**word_critic(), rounds=3)(engine, before.copy(), prompts, sampling)

    assert list(out["sample_index"]) == list(before["sample_index"]) and list(out["task_id"]) == list(before["task_id"])
    good_before = before["completion"].eq("return GOOD")
    assert out.loc[good_before, "attempts"].eq(1).all()                                   # never resampled
    assert out[good_before].drop(columns="attempts").equals(before[good_before])
    rejected = ~good_before
    assert rejected.any() and out.loc[rejected, "attempts"].ge(2).all()
    good_after = out["completion"].eq("return GOOD")
    assert good_after.sum() > good_before.sum()
    # a slot stops at its first accepted attempt; one still rejected used every round
    assert out.loc[~good_after, "attempts"].eq(4).all()
    # the generations: the first pass, then one per slot still rejected in each round
    assert engine.calls[0] == 24 and sum(engine.calls[1:]) == int((out["attempts"] - 1).sum())
    assert out["completion"].str.startswith("return").all() and out["gen_seconds"].gt(0).all()


def test_zero_rounds_or_all_accepted_generate_nothing_more():
    engine, sampling = ScriptedEngine(), SamplingSettings(n=2, seed=1)
    prompts = ["a", "b"]
    rows = first_pass(engine, prompts, sampling)
    out = Resampler(**word_critic(), rounds=0)(engine, rows.copy(), prompts, sampling)
    assert out["attempts"].eq(1).all() and len(engine.calls) == 1
    rows["completion"] = "return GOOD"
    out = Resampler(**word_critic(), rounds=5)(engine, rows.copy(), prompts, sampling)
    assert out["attempts"].eq(1).all() and len(engine.calls) == 1
