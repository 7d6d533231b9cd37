"""Engine plumbing every engine shares (stats, logprob shape, provenance rows), the vLLM conversion on
stand-in vLLM output objects, and the vLLM engine itself where vLLM is installed in this interpreter (the CPU
build in .venv-vllm, run from a child process: tests/teachers/test_vllm_engine.py)."""

import importlib.util
import json
from types import SimpleNamespace

import pytest

from distill_ray.teachers import Batch, Generation, SamplingSettings, make_engine
from distill_ray.teachers.base import top_k_pairs
from distill_ray.teachers.provenance import CANDIDATE_COLUMNS, candidate_columns, engine_provenance
from distill_ray.teachers import vllm as vllm_module
from distill_ray.teachers.vllm import cpu_defaults, cpu_environment, generations_from_output, sampling_params


def gen(text, prompt_tokens, completion_tokens, **kw):
    return Generation(text=text, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                      finished=True, **kw)


def test_batch_stats_count_each_prompt_once_and_every_sample():
    rows = [[gen("a", 10, 3), gen("b", 10, 5)], [gen("", 7, 0, error="HTTP 500"), gen("c", 7, 2)]]
    stats = Batch.of(rows, seconds=2.0, retries=4).stats
    assert (stats.prompts, stats.samples, stats.prompt_tokens, stats.completion_tokens) == (2, 4, 17, 10)
    assert (stats.errors, stats.retries, stats.tokens_per_s) == (1, 4, 5.0)


def test_top_k_pairs_sort_by_logprob_and_keep_k():
    # vLLM/OpenAI report the sampled token besides the top k: k+1 entries, in any order.
    assert top_k_pairs([(5, -2.0), (9, -0.1), (3, -1.0)], 2) == [(9, -0.1), (3, -1.0)]


def test_candidate_columns_give_n_rows_per_prompt_with_provenance():
    rows = [[gen("a", 4, 1, logprobs=[[(7, -0.5)]]), gen("b", 4, 2)], [gen("c", 6, 1), gen("d", 6, 1)]]
    sampling = SamplingSettings(n=2, top_k_logprobs=1)
    prov = engine_provenance("hf", "smollm2", "transformers")
    cols = candidate_columns(["p1", "p2"], Batch.of(rows, seconds=1.0), sampling, prov)
    assert set(cols) == set(CANDIDATE_COLUMNS)
    assert cols["prompt"] == ["p1", "p1", "p2", "p2"] and cols["sample_index"] == [0, 1, 0, 1]
    assert cols["completion"] == ["a", "b", "c", "d"] and cols["gen_seconds"] == [0.25] * 4
    assert json.loads(cols["logprobs"][0]) == [[[7, -0.5]]] and cols["logprobs"][1] is None
    assert cols["engine"] == ["hf"] * 4 and cols["engine_version"][0].startswith("transformers==")
    assert json.loads(cols["sampling"][0])["top_k_logprobs"] == 1


def fake_vllm_output():
    """The attributes of vLLM's ``RequestOutput``/``CompletionOutput``/``Logprob`` that we read."""
    lp = lambda v: SimpleNamespace(logprob=v, rank=1, decoded_token="x")  # noqa: E731
    second = SimpleNamespace(index=1, text=" 2", token_ids=[17, 18, 19], finish_reason="length", logprobs=None)
    first = SimpleNamespace(index=0, text="4 + 1", token_ids=[11, 12], finish_reason="stop",
                            logprobs=[{11: lp(-0.2), 40: lp(-1.9), 41: lp(-3.0)}, {50: lp(-0.7), 12: lp(-0.9)}])
    return SimpleNamespace(prompt_token_ids=list(range(30)), outputs=[second, first])


def test_vllm_outputs_become_generations_in_sample_order():
    first, second = generations_from_output(fake_vllm_output(), top_k_logprobs=2)
    assert (first.text, first.prompt_tokens, first.completion_tokens, first.finished) == ("4 + 1", 30, 2, True)
    assert first.logprobs == [[(11, -0.2), (40, -1.9)], [(50, -0.7), (12, -0.9)]]
    assert (second.completion_tokens, second.finished, second.logprobs) == (3, False, None)
    assert generations_from_output(fake_vllm_output(), top_k_logprobs=0)[0].logprobs is None


def test_a_stop_token_is_not_counted_but_a_stop_strings_last_token_is():
    """As in hf: eos/end of turn (vLLM keeps it in token_ids) is no completion token; the token that completed
    a stop string (``stop_reason`` is the string) is."""
    output = fake_vllm_output()
    first, _ = generations_from_output(output, top_k_logprobs=2, stop_ids=[12])
    assert (first.completion_tokens, first.finished, first.logprobs) == (1, True, [[(11, -0.2), (40, -1.9)]])
    output.outputs[1].stop_reason = "4 +"
    first, _ = generations_from_output(output, top_k_logprobs=2, stop_ids=[12])
    assert (first.completion_tokens, first.finished, len(first.logprobs)) == (2, True, 2)
    output.outputs[1].stop_reason = None
    assert generations_from_output(output, top_k_logprobs=0, stop_ids=[99])[0].completion_tokens == 2


def test_cpu_settings_bind_threads_to_the_actors_cores_and_keep_callers_values():
    cores = sorted(__import__("os").sched_getaffinity(0))
    env = cpu_environment(cpu_threads=1, kv_cache_gib=2)
    assert env == {"VLLM_CPU_OMP_THREADS_BIND": str(cores[0]), "OMP_NUM_THREADS": "1", "VLLM_CPU_KVCACHE_SPACE": "2"}
    assert cpu_environment(None, None)["OMP_NUM_THREADS"] == str(len(cores))
    assert cpu_defaults({"max_model_len": None, "enforce_eager": False}) == dict(
        enforce_eager=False, enable_chunked_prefill=False, max_model_len=4096)
    assert cpu_defaults({}, model_max_len=2048)["max_model_len"] == 2048      # vLLM refuses more than the model's
    assert cpu_defaults({}, model_max_len=8192)["max_model_len"] == 4096


def test_sampling_settings_map_to_vllm_sampling_params():
    params = sampling_params(SamplingSettings(n=8, temperature=0.7, top_p=0.9, max_new_tokens=32, seed=3,
                                              top_k_logprobs=5), stop_token_ids=[2])
    assert params == dict(n=8, temperature=0.7, top_p=0.9, max_tokens=32, seed=3, logprobs=5, stop_token_ids=[2],
                          stop=None)
    greedy = sampling_params(SamplingSettings(n=1, temperature=0.0, stop=("\nProblem:",)))
    assert (greedy["temperature"], greedy["top_p"], greedy["logprobs"], greedy["stop"]) == (0.0, 1.0, None,
                                                                                         ["\nProblem:"])


def test_unknown_engine_names_the_available_ones():
    with pytest.raises(ValueError, match="hf, openai, vllm"):
        make_engine("tgi", "smollm2")


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm not installed (GPU extra)")
@pytest.mark.slow
def test_vllm_engine_generates_n_samples_with_logprobs():
    engine = make_engine("vllm", "smollm2", max_num_seqs=8, gpu_memory_utilization=0.3)
    prompt = engine.render([{"role": "user", "content": "What is 2 + 3?"}])
    batch = engine.generate([prompt], SamplingSettings(n=3, max_new_tokens=8, top_k_logprobs=2))
    assert len(batch[0]) == 3 and all(len(g.logprobs) == g.completion_tokens for g in batch[0])
    assert batch.stats.samples == 3 and engine.provenance()["engine"] == "vllm"


def test_without_vllm_the_engine_says_what_is_missing(monkeypatch, tmp_path):
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed in this interpreter")
    monkeypatch.delenv(vllm_module.PYTHON_ENV, raising=False)
    monkeypatch.setattr(vllm_module, "VENV_PYTHON", tmp_path / "absent" / "python")
    monkeypatch.setattr(vllm_module, "SIBLING_VENV_PYTHON", tmp_path / "absent" / "python")
    with pytest.raises(ImportError, match="vllm not installed: `bash scripts/setup_vllm.sh`"):
        make_engine("vllm", "smollm2")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        make_engine("vllm", "smollm2", python=str(tmp_path / "nope"))


def test_a_job_running_from_a_copy_of_the_repository_finds_the_vllm_venv_beside_its_own(monkeypatch, tmp_path):
    """`ray job submit --working-dir .` runs Ray's copy of the repository, without .venv-vllm; the job's python is
    the project's venv, and .venv-vllm sits beside it."""
    monkeypatch.delenv(vllm_module.PYTHON_ENV, raising=False)
    monkeypatch.setattr(vllm_module, "VENV_PYTHON", tmp_path / "copy" / ".venv-vllm" / "bin" / "python")
    beside = tmp_path / "checkout" / ".venv-vllm" / "bin" / "python"
    monkeypatch.setattr(vllm_module, "SIBLING_VENV_PYTHON", beside)
    assert vllm_module.vllm_python() is None
    beside.parent.mkdir(parents=True)
    beside.touch()
    assert vllm_module.vllm_python() == str(beside)
