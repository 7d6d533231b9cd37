"""Fixtures of the training tests: the embedded SmolLM2's tokenizer (what the students and teachers here share),
and two tiny random models with it."""

import pytest


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from distill_ray.models import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("smollm2"))


@pytest.fixture(scope="module")
def tiny_dirs(tokenizer, tmp_path_factory):
    """Two tiny random llamas with the real SmolLM2 tokenizer: a student and a (different) teacher."""
    from distill_ray.models import resolve_model
    from distill_ray.train import build_student_from_config

    root = tmp_path_factory.mktemp("tiny")
    return [build_student_from_config(resolve_model("smollm2"), root / name, hidden_size=32, num_layers=1,
                                      num_heads=2, num_kv_heads=1, seed=seed)
            for name, seed in (("student", 0), ("teacher", 1))]
