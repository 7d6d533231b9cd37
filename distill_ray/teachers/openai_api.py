"""Any OpenAI-compatible server (``vllm serve``, llama.cpp's server, hosted APIs) as a teacher engine.

Decisions:
- Client: the ``openai`` package's ``AsyncOpenAI`` (maintained with the API, typed responses, timeouts,
  connection pooling) rather than raw ``httpx``; its own retries are switched off (``max_retries=0``)
  because ours are bounded and configurable per engine, and counted in ``BatchStats.retries``.
- Prompt: with a ``tokenizer`` (a model name or HF directory for ``resolve_model``) the chat template is
  rendered here, exactly as the ``hf`` engine renders it, and sent to the **completions** API, so the
  response prefix is honoured token for token and both engines see the same prompt text. Without one,
  the messages go to the **chat** API (hosted chat-only models); the prefix then becomes an instruction
  and is stripped from the reply when the model repeats it.
- n samples: one request with ``n``; servers that ignore ``n`` (llama-cpp-python returns one choice) are
  detected and topped up with single-sample requests, seeds ``seed+1, seed+2, ...`` so they differ.
- Failures: 429, 5xx, timeouts and connection errors are retried with exponential backoff (honouring
  ``Retry-After``, capped); what still fails, or fails for good (400, 401, ...), becomes Generations with
  ``error`` set, never an exception that kills the job.
- The API key is read from the environment variable *named* by ``api_key_env``; the key itself is never
  logged, returned, or part of provenance or errors.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time

import openai

from distill_ray.teachers.base import Batch, Generation, SamplingSettings, TokenLogprobs, failed, top_k_pairs
from distill_ray.teachers.provenance import engine_provenance

RETRYABLE = (openai.APITimeoutError, openai.APIConnectionError, openai.RateLimitError,
             openai.InternalServerError)


class OpenAIEngine:
    def __init__(self, model: str, base_url: str = "http://127.0.0.1:8000/v1", api_key_env: str | None = None,
                 tokenizer: str | None = None, max_concurrency: int = 8, max_retries: int = 4,
                 backoff_s: float = 0.5, max_backoff_s: float = 8.0, timeout_s: float = 120.0,
                 stop: list[str] | None = None, extra_body: dict | None = None):
        self.name = model
        self.base_url = base_url
        self.api_key_env = api_key_env
        self._api_key = self._read_key(api_key_env)
        self.tokenizer = _load_tokenizer(tokenizer) if tokenizer else None
        self.max_concurrency = max_concurrency
        self.max_retries, self.backoff_s, self.max_backoff_s = max_retries, backoff_s, max_backoff_s
        self.timeout_s = timeout_s
        self.stop = stop
        self.extra_body = extra_body or {}
        self._honours_n: bool | None = None  # learnt from the first n>1 response
        self._loop = asyncio.new_event_loop()  # one private loop: the client's connections live on it
        self._client: openai.AsyncOpenAI | None = None

    @staticmethod
    def _read_key(env: str | None) -> str:
        if env is None:
            return "none"  # local servers need no key, but the client insists on one
        key = os.environ.get(env)
        if not key:
            raise ValueError(f"the API key variable {env!r} is not set")  # the name only, never a value
        return key

    # --- the engine interface ------------------------------------------------------------------------

    def render(self, messages: list[dict], response_prefix: str = "") -> str:
        if self.tokenizer is not None:
            from distill_ray.prompts import render

            return render(self.tokenizer, messages, response_prefix)
        return json.dumps({"messages": messages, "response_prefix": response_prefix})

    def provenance(self) -> dict:
        return engine_provenance("openai", self.name, "openai", engine_url=self.base_url)

    def generate(self, prompts: list[str], sampling: SamplingSettings) -> Batch:
        start = time.perf_counter()
        self._retries = 0
        rows = self._loop.run_until_complete(self._all(prompts, sampling)) if prompts else []
        return Batch.of(rows, time.perf_counter() - start, retries=self._retries)

    def close(self) -> None:
        if self._client is not None:
            self._loop.run_until_complete(self._client.close())
        self._loop.close()

    # --- requests ------------------------------------------------------------------------------------

    async def _all(self, prompts: list[str], sampling: SamplingSettings) -> list[list[Generation]]:
        if self._client is None:
            self._client = openai.AsyncOpenAI(base_url=self.base_url, api_key=self._api_key,
                                              timeout=self.timeout_s, max_retries=0)
        self._slots = asyncio.Semaphore(self.max_concurrency)
        return list(await asyncio.gather(*(self._samples(p, sampling) for p in prompts)))

    async def _samples(self, prompt: str, s: SamplingSettings) -> list[Generation]:
        """n samples of one prompt: one n-request, topped up with single ones where the server ignores n."""
        generations: list[Generation] = []
        next_seed = s.seed
        if self._honours_n is not False or s.n == 1:
            generations = await self._request(prompt, s, n=s.n, seed=s.seed)
            if s.n > 1 and not generations[0].error:
                self._honours_n = len(generations) >= s.n
            next_seed += 1
            if generations[0].error:
                return generations * s.n if len(generations) == 1 else generations
        missing = s.n - len(generations)
        extra = await asyncio.gather(*(self._request(prompt, s, n=1, seed=next_seed + i) for i in range(missing)))
        return (generations + [g for got in extra for g in got[:1]])[:s.n]

    async def _request(self, prompt: str, s: SamplingSettings, n: int, seed: int) -> list[Generation]:
        """One HTTP request, retried on transient failures; a final failure is one Generation with ``error``."""
        for attempt in range(self.max_retries + 1):
            try:
                async with self._slots:
                    return await self._call(prompt, s, n, seed)
            except RETRYABLE as error:
                if attempt == self.max_retries:
                    return [failed(0, _describe(error, attempt + 1))]
                self._retries += 1
                await asyncio.sleep(self._delay(attempt, error))
            except openai.APIError as error:  # 4xx other than 429: retrying will not help
                return [failed(0, _describe(error, attempt + 1))]
        raise AssertionError("unreachable")

    def _delay(self, attempt: int, error: Exception) -> float:
        """Exponential backoff with jitter, or the server's ``Retry-After`` when it sends one; capped."""
        response = getattr(error, "response", None)
        retry_after = response.headers.get("retry-after") if response is not None else None
        try:
            wanted = float(retry_after) if retry_after else self.backoff_s * 2 ** attempt
        except ValueError:
            wanted = self.backoff_s * 2 ** attempt
        return min(self.max_backoff_s, wanted) * random.uniform(0.8, 1.2)

    async def _call(self, prompt: str, s: SamplingSettings, n: int, seed: int) -> list[Generation]:
        common = dict(model=self.name, n=n, temperature=s.temperature, top_p=s.top_p, seed=seed,
                      max_tokens=s.max_new_tokens, extra_body=self.extra_body or None)
        stop = list(self.stop or []) + [x for x in s.stop if x not in (self.stop or [])]
        if stop:
            common["stop"] = stop  # only when set: some servers reject an explicit null
        if self.tokenizer is not None:
            logprobs = {"logprobs": s.top_k_logprobs} if s.top_k_logprobs else {}
            response = await self._client.completions.create(prompt=prompt, **common, **logprobs)
            return [self._completion_choice(c, response.usage, len(response.choices), s) for c in response.choices]
        request = json.loads(prompt)
        logprobs = {"logprobs": True, "top_logprobs": s.top_k_logprobs} if s.top_k_logprobs else {}
        response = await self._client.chat.completions.create(
            messages=_chat_messages(request["messages"], request["response_prefix"]), **common, **logprobs)
        return [self._chat_choice(c, response.usage, len(response.choices), request["response_prefix"], s)
                for c in response.choices]

    # --- responses -----------------------------------------------------------------------------------

    def _completion_choice(self, choice, usage, choices: int, s: SamplingSettings) -> Generation:
        logprobs = None
        if s.top_k_logprobs and choice.logprobs is not None:
            logprobs = [self._top_k(top or {}, s.top_k_logprobs) for top in choice.logprobs.top_logprobs]
        return self._generation(choice.text, choice.finish_reason, usage, choices, logprobs)

    def _chat_choice(self, choice, usage, choices: int, prefix: str, s: SamplingSettings) -> Generation:
        text = choice.message.content or ""
        if prefix and text.lstrip().startswith(prefix.strip()):
            text = text.lstrip()[len(prefix.strip()):].lstrip(" ")
        logprobs = None
        if s.top_k_logprobs and choice.logprobs is not None and choice.logprobs.content is not None:
            logprobs = [self._top_k({t.token: t.logprob for t in token.top_logprobs}, s.top_k_logprobs)
                        for token in choice.logprobs.content]
        return self._generation(text, choice.finish_reason, usage, choices, logprobs)

    def _generation(self, text: str, finish_reason: str | None, usage, choices: int,
                    logprobs: list[TokenLogprobs] | None) -> Generation:
        prompt_tokens = usage.prompt_tokens if usage else 0
        if logprobs is not None:
            completion_tokens = len(logprobs)
        elif usage and choices == 1:
            completion_tokens = usage.completion_tokens
        elif self.tokenizer is not None:
            completion_tokens = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        else:
            completion_tokens = round(usage.completion_tokens / choices) if usage else 0  # an estimate
        return Generation(text=text, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                          finished=finish_reason == "stop", logprobs=logprobs)

    def _top_k(self, top: dict[str, float], k: int) -> TokenLogprobs:
        """A server's ``{token text: logprob}`` as our sorted (token_id, logprob) pairs. Servers name tokens
        by text; ``token_id:123`` (vLLM's ``return_tokens_as_token_ids``) is exact, otherwise the text is
        mapped back through the tokenizer when it encodes to exactly one token, else id -1."""
        return top_k_pairs(((self._token_id(text), lp) for text, lp in top.items()), k)

    def _token_id(self, text: str) -> int:
        if text.startswith("token_id:"):
            return int(text.split(":", 1)[1])
        if self.tokenizer is not None:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) == 1:
                return ids[0]
        return -1


def _load_tokenizer(name: str):
    from transformers import AutoTokenizer

    from distill_ray.models import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model(name))


def _chat_messages(messages: list[dict], prefix: str) -> list[dict]:
    """Chat APIs cannot continue a partial reply, so the response prefix becomes an instruction."""
    if not prefix:
        return messages
    last = dict(messages[-1])
    last["content"] = f"{last['content']}\n\nStart your reply with exactly:\n{prefix}"
    return [*messages[:-1], last]


def _describe(error: Exception, attempts: int) -> str:
    status = getattr(error, "status_code", None)
    kind = f"HTTP {status}" if status else type(error).__name__
    return f"{kind} after {attempts} attempt(s): {str(error)[:200]}"
