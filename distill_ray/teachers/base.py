"""What every teacher engine shares: sampling settings, one generation, per-batch stats, the engine protocol."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

# Per generated token: the top-k (token_id, logprob) pairs, most likely first. token_id is -1 where the
# engine reports only the token's text and it could not be mapped back to one id (see openai.py).
TokenLogprobs = list[tuple[int, float]]


@dataclass(frozen=True)
class SamplingSettings:
    n: int = 4                    # samples per prompt
    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 64
    seed: int = 0
    top_k_logprobs: int = 0       # per generated token, the k most likely tokens' logprobs (0 = none)
    stop: tuple[str, ...] = ()    # stop strings: the completion ends before the first one (not included)


@dataclass(frozen=True)
class Generation:
    text: str                     # the completion, after the prompt (and after any response prefix)
    prompt_tokens: int
    completion_tokens: int
    finished: bool                # ended on a stop token rather than the token budget
    logprobs: list[TokenLogprobs] | None = None  # one entry per completion token, when top_k_logprobs > 0
    error: str | None = None      # why this request failed (then text is empty and finished is False)
    token_ids: list[int] | None = None  # the completion's tokens, where the engine reports them (hf, vllm)


@dataclass(frozen=True)
class BatchStats:
    """What one ``generate`` call cost, in the same shape for every engine."""

    prompts: int
    samples: int
    prompt_tokens: int            # each prompt counted once (its n samples share one prefill)
    completion_tokens: int        # all samples
    seconds: float                # wall time of the call
    errors: int = 0               # samples whose request failed
    retries: int = 0              # requests repeated after a transient failure (remote engines)

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0


class Batch(list):
    """``generate``'s result: a plain ``list[list[Generation]]`` (one inner list per prompt) that also
    carries the call's ``stats``, so callers that only iterate keep working."""

    stats: BatchStats

    @classmethod
    def of(cls, rows: list[list[Generation]], seconds: float, retries: int = 0) -> Batch:
        batch = cls(rows)
        flat = [g for row in rows for g in row]
        batch.stats = BatchStats(prompts=len(rows), samples=len(flat),
                                 prompt_tokens=sum(row[0].prompt_tokens for row in rows if row),
                                 completion_tokens=sum(g.completion_tokens for g in flat),
                                 seconds=seconds, errors=sum(g.error is not None for g in flat),
                                 retries=retries)
        return batch


def top_k_pairs(pairs, k: int) -> TokenLogprobs:
    """(token_id, logprob) pairs, most likely first, at most k. Engines report the sampled token besides
    the top k (vLLM, OpenAI), so a step can carry k+1 entries: we keep the same k for every engine."""
    return sorted(((int(t), float(lp)) for t, lp in pairs), key=lambda p: -p[1])[:k]


def chat_stop_ids(tokenizer) -> list[int]:
    """eos plus the end-of-turn token of common chat templates (``<|im_end|>`` for SmolLM2,
    ``<end_of_turn>`` for Gemma), which may differ from eos."""
    ids = {tokenizer.eos_token_id}
    for token in ("<|im_end|>", "<end_of_turn>", "<|eot_id|>"):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
            ids.add(token_id)
    return sorted(i for i in ids if i is not None)


def failed(prompt_tokens: int, error: str) -> Generation:
    """The placeholder for a sample whose request failed: the row survives, the job goes on."""
    return Generation(text="", prompt_tokens=prompt_tokens, completion_tokens=0, finished=False, error=error)


class TeacherEngine(Protocol):
    name: str

    def render(self, messages: list[dict], response_prefix: str = "") -> str:
        """Turn chat messages into the exact prompt text this model continues."""

    def generate(self, prompts: list[str], sampling: SamplingSettings) -> Batch:
        """``sampling.n`` generations for each prompt, in prompt order, with the call's stats."""

    def provenance(self) -> dict:
        """What to record in each candidate row about who wrote it (see ``provenance.py``)."""
