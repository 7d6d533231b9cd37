"""vLLM (GPU extra) as a teacher engine: a thin layer over vLLM's documented offline API,
``LLM(model, tensor_parallel_size=, max_num_seqs=)`` and ``LLM.generate(prompts, SamplingParams(n=,
logprobs=, seed=))``. One engine per Ray actor in the teacher pool; replicas = the pool's ``actors``.

This module imports without vLLM (``pip install 'distill-ray[gpu]'`` on CUDA machines); everything
around the call, the sampling mapping (``sampling_params``) and the conversion of vLLM's output objects into
our ``Generation`` (``generations_from_output``), is plain code, unit-tested with stand-in output objects.

Why not Ray's ``ray.data.llm`` vLLM processor (``vLLMEngineProcessorConfig`` + ``build_processor``)?
It fits the engine side well: an autoscaling actor pool of vLLM engines with tensor/pipeline parallel
placement groups, chat templating and tokenization as separate CPU stages, per-row ``sampling_params``,
and ``should_continue_on_error`` rows. It does not fit our stage contract, one row per prompt in and
``n`` candidate rows out with provenance: its vLLM stage keeps only ``output.outputs[0]`` of each request
(Ray 2.60, ``vLLMOutputData.from_vllm_engine_output``), so ``SamplingParams(n=8)`` would silently
return one sample. Using it would mean exploding each prompt into n rows with seeds ``seed+i`` before the
processor (n prefills, which vLLM's prefix cache mostly absorbs) and regrouping after; its chat-template
stage would also drop our response prefix unless we render the prompt ourselves. So the teacher stage keeps
our own actor pool (the same one the ``hf`` engine uses) with this engine inside; where one sample per
prompt is enough (n=1, e.g. evaluation), ``build_processor`` is a drop-in alternative.
"""

from __future__ import annotations

import time

from distill_ray.prompts import render
from distill_ray.teachers.base import Batch, Generation, SamplingSettings, chat_stop_ids, top_k_pairs
from distill_ray.teachers.provenance import engine_provenance

MISSING = "vllm not installed (GPU extra)"


def sampling_params(s: SamplingSettings, stop_token_ids: list[int] | None = None) -> dict:
    """Our settings as ``vllm.SamplingParams`` keyword arguments (temperature 0 is greedy in vLLM too)."""
    return dict(n=s.n, temperature=s.temperature, top_p=s.top_p if s.temperature > 0 else 1.0,
                max_tokens=s.max_new_tokens, seed=s.seed, logprobs=s.top_k_logprobs or None,
                stop_token_ids=stop_token_ids or None, stop=list(s.stop) or None)


def generations_from_output(output, top_k_logprobs: int) -> list[Generation]:
    """One vLLM ``RequestOutput`` (``prompt_token_ids``, ``outputs``: ``CompletionOutput`` with ``text``,
    ``token_ids``, ``finish_reason``, ``logprobs`` = per token ``{token_id: Logprob(logprob=...)}``) as our
    Generations, in sample order."""
    prompt_tokens = len(output.prompt_token_ids or [])
    generations = []
    for completion in sorted(output.outputs, key=lambda c: c.index):
        logprobs = None
        if top_k_logprobs and completion.logprobs is not None:
            logprobs = [top_k_pairs(((tid, lp.logprob) for tid, lp in step.items()), top_k_logprobs)
                        for step in completion.logprobs]
        generations.append(Generation(text=completion.text, prompt_tokens=prompt_tokens,
                                      completion_tokens=len(completion.token_ids),
                                      finished=completion.finish_reason == "stop", logprobs=logprobs))
    return generations


class VLLMEngine:
    def __init__(self, model: str, tensor_parallel_size: int = 1, max_num_seqs: int = 256,
                 gpu_memory_utilization: float = 0.9, max_model_len: int | None = None, **engine_kwargs):
        try:
            from vllm import LLM
        except ImportError as error:
            raise ImportError(f"{MISSING}: pip install 'distill-ray[gpu]' on a CUDA machine") from error
        self.name = model
        self.llm = LLM(model=_local_or_hub(model), tensor_parallel_size=tensor_parallel_size,
                       max_num_seqs=max_num_seqs, gpu_memory_utilization=gpu_memory_utilization,
                       max_model_len=max_model_len, **engine_kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.stop_ids = chat_stop_ids(self.tokenizer)

    def render(self, messages: list[dict], response_prefix: str = "") -> str:
        return render(self.tokenizer, messages, response_prefix)

    def provenance(self) -> dict:
        return engine_provenance("vllm", self.name, "vllm")

    def generate(self, prompts: list[str], sampling: SamplingSettings) -> Batch:
        from vllm import SamplingParams

        start = time.perf_counter()
        params = SamplingParams(**sampling_params(sampling, self.stop_ids))
        outputs = self.llm.generate(prompts, params, use_tqdm=False) if prompts else []
        rows = [generations_from_output(output, sampling.top_k_logprobs) for output in outputs]
        return Batch.of(rows, time.perf_counter() - start)


def _local_or_hub(model: str) -> str:
    """Our embedded names and GGUF files resolve to local HF directories; anything else is passed to vLLM
    as is (a Hugging Face hub id on a cluster with network access, or a path)."""
    from distill_ray.models import resolve_model

    try:
        return str(resolve_model(model))
    except FileNotFoundError:
        return model
