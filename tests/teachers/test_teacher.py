"""The transformers engine with the real SmolLM2 teacher."""

import pytest

from distill_ray.prompts import PLAIN_STOP, Exemplar, build_messages, render_plain
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


def test_greedy_top_k_logprobs_match_a_separate_forward_pass(engine):
    import torch

    batch = engine.generate(prompts(engine)[:2], SamplingSettings(n=1, temperature=0.0, max_new_tokens=6,
                                                                  top_k_logprobs=4))
    for prompt, [g] in zip(prompts(engine)[:2], batch):
        assert len(g.logprobs) == g.completion_tokens and all(len(top) == 4 for top in g.logprobs)
        completion = [top[0][0] for top in g.logprobs]  # greedy: the chosen token is the most likely one
        assert engine.tokenizer.decode(completion) == g.text
        # Unpadded, un-cached forward pass over prompt + completion: the same distribution at each step.
        ids = engine.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            logits = engine.model(torch.tensor([ids + completion])).logits[0, len(ids) - 1:-1]
        values, top_ids = torch.log_softmax(logits.float(), -1).topk(4, -1)
        for step, top in enumerate(g.logprobs):
            assert [t for t, _ in top] == top_ids[step].tolist()
            assert [lp for _, lp in top] == pytest.approx(values[step].tolist(), abs=2e-3)
    assert batch.stats.prompts == 2 and batch.stats.completion_tokens == sum(row[0].completion_tokens for row in batch)


def test_asking_for_logprobs_does_not_change_the_samples(engine):
    sampling = SamplingSettings(n=3, temperature=0.9, top_p=0.9, max_new_tokens=6, seed=11)
    plain = engine.generate(prompts(engine)[:1], sampling)
    with_logprobs = engine.generate(prompts(engine)[:1], SamplingSettings(**{**sampling.__dict__, "top_k_logprobs": 2}))
    assert [g.text for g in plain[0]] == [g.text for g in with_logprobs[0]]
    assert plain[0][0].logprobs is None and len(with_logprobs[0][0].logprobs) == with_logprobs[0][0].completion_tokens


@pytest.fixture(scope="module")
def gemma():
    return HFEngine("gemma3", torch_threads=2)


def test_gemma3_loads_and_answers_in_its_own_chat_template(gemma):
    prompt = gemma.render(build_messages("p3", QUESTIONS[0], [SHOT]), "def sol():\n    return ")
    assert prompt.count("<start_of_turn>user") == 2 and "<|im_start|>" not in prompt
    [[sample]] = gemma.generate([prompt], SamplingSettings(n=1, temperature=0.0, max_new_tokens=24))
    assert sample.completion_tokens >= 1 and sample.text.strip() and "<end_of_turn>" not in sample.text
    assert gemma.provenance()["engine_model"] == "gemma3"


def test_a_plain_prompt_answer_stops_where_the_model_starts_the_next_problem(gemma):
    """A base model in few-shot text never emits its end token there: without the stop string it writes the next
    'Problem:' and runs to the token budget; with it, generation stops, and the text and counts end before it."""
    prompt = "<bos>" + render_plain(build_messages("p3", QUESTIONS[0], [SHOT] * 2), "def sol():\n    return ")
    greedy = dict(n=2, temperature=0.0, max_new_tokens=48, top_k_logprobs=2)
    [[free, _]] = gemma.generate([prompt], SamplingSettings(**greedy))
    [[stopped, again]] = gemma.generate([prompt], SamplingSettings(**greedy, stop=PLAIN_STOP))
    assert "\nProblem:" in free.text and free.completion_tokens == 48 and not free.finished
    assert stopped.finished and "Problem:" not in stopped.text and stopped.completion_tokens < 48
    assert free.text.startswith(stopped.text)
    # The two greedy samples are one batch's two rows: the same tokens; logprobs equal up to the batch
    # position's float rounding (which some CPUs' kernels show in the last digits).
    assert (stopped.text, stopped.completion_tokens, stopped.finished) == (again.text, again.completion_tokens,
                                                                           again.finished)
    assert [t[0][0] for t in stopped.logprobs] == [t[0][0] for t in again.logprobs]
    assert [t[0][1] for t in stopped.logprobs] == pytest.approx([t[0][1] for t in again.logprobs], abs=1e-3)
    assert len(stopped.logprobs) == stopped.completion_tokens
