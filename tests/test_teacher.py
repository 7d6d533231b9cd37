"""The transformers engine with the real SmolLM2 teacher."""

import pytest

from distill_ray.prompts import Exemplar, build_messages
from distill_ray.teachers import HFEngine, SamplingSettings

pytestmark = pytest.mark.slow
SHOT = Exemplar("def sat(x: int) -> bool:\n    return x - 1 == 4", "def sol():\n    return 4 + 1")
QUESTIONS = ["def sat(x: int) -> bool:\n    return x + 2 == 5", "def sat(s: str) -> bool:\n    return s == 'ab' * 2",
             "def sat(x: int) -> bool:\n    return x * 7 == 21"]


@pytest.fixture(scope="module")
def engine():
    return HFEngine("smollm2", torch_threads=2)


def prompts(engine):
    # Different lengths, so left padding is exercised.
    return [engine.render(build_messages("p3", q, [SHOT] * (i + 1)), "def sol():\n    return ") for i, q in
            enumerate(QUESTIONS)]


def test_shared_prefill_gives_the_same_greedy_text_as_plain_generate(engine):
    greedy = SamplingSettings(n=2, temperature=0.0, max_new_tokens=10)
    engine.share_prefill = True
    shared = engine.generate(prompts(engine), greedy)
    engine.share_prefill = False
    plain = engine.generate(prompts(engine), greedy)
    engine.share_prefill = True
    assert [[g.text for g in row] for row in shared] == [[g.text for g in row] for row in plain]
    assert all(row[0].text == row[1].text for row in shared)  # greedy: every sample is the same


def test_sampling_gives_n_seeded_samples_per_prompt(engine):
    sampling = SamplingSettings(n=4, temperature=1.0, max_new_tokens=8, seed=3)
    first = engine.generate(prompts(engine), sampling)
    assert [len(row) for row in first] == [4, 4, 4]
    assert [[g.text for g in row] for row in first] == [[g.text for g in row] for row in
                                                        engine.generate(prompts(engine), sampling)]
    assert any(len({g.text for g in row}) > 1 for row in first)
    for row, prompt in zip(first, prompts(engine)):
        assert all(g.prompt_tokens == len(engine.tokenizer(prompt, add_special_tokens=False)["input_ids"]) for g in row)
        assert all(1 <= g.completion_tokens <= 8 for g in row)


def test_a_finished_sample_stops_at_the_end_of_turn(engine):
    rows = engine.generate(prompts(engine)[:1], SamplingSettings(n=1, temperature=0.0, max_new_tokens=32))
    sample = rows[0][0]
    assert sample.finished and "<|im_end|>" not in sample.text and sample.completion_tokens < 32
