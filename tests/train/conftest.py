"""Fixtures of the training tests: the embedded SmolLM2's tokenizer (what the students and teachers here share)."""

import pytest


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from distill_ray.models import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("smollm2"))
