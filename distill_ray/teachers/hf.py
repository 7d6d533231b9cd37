"""transformers generation: batched, left-padded, n samples per prompt; HF directories and GGUF files.

The prompt is prefilled once and its KV cache copied to the n samples: ``generate(num_return_sequences=n)``
would repeat every prompt n times before prefill, and with few-shot prompts (~300 tokens) and short answers
(~10 tokens) prefill is most of the work.

Top-k logprobs (``SamplingSettings.top_k_logprobs``) come from the model's **raw** next-token distribution
(log-softmax of the logits, before temperature and top-p): that is the teacher's distribution a token-level
student matches, independent of how we sampled. To see raw logits, temperature and top-p are applied by our
own warpers placed after the recorder (transformers appends custom processors after its own); the warpers
are the same ones, in the same order, that ``generate(temperature=, top_p=)`` would build, so samples do
not change when logprobs are asked for.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from transformers import (AutoModelForCausalLM, AutoTokenizer, LogitsProcessor, LogitsProcessorList,
                          TemperatureLogitsWarper, TopPLogitsWarper)

from distill_ray.models import resolve_model
from distill_ray.prompts import render
from distill_ray.teachers.base import Batch, Generation, SamplingSettings, chat_stop_ids
from distill_ray.teachers.provenance import engine_provenance


class TopKRecorder(LogitsProcessor):
    """Records, at each decoding step, the top-k log-probabilities of the scores it is handed (placed
    first, those are the raw logits); returns the scores unchanged."""

    def __init__(self, k: int):
        self.k = k
        self.steps: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, input_ids, scores):
        values, ids = torch.log_softmax(scores.float(), dim=-1).topk(self.k, dim=-1)
        self.steps.append((ids.cpu(), values.cpu()))
        return scores

    def row(self, index: int, length: int) -> list[list[tuple[int, float]]]:
        return [list(zip(ids[index].tolist(), values[index].tolist())) for ids, values in self.steps[:length]]


class HFEngine:
    def __init__(self, model: str, device: str = "cpu", torch_threads: int | None = None,
                 share_prefill: bool = True):
        if torch_threads:
            torch.set_num_threads(torch_threads)
        path = resolve_model(model)
        self.name = model
        self.device = device
        self.share_prefill = share_prefill
        self.tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(path).to(device).eval()
        self.stop_ids = chat_stop_ids(self.tokenizer)

    def render(self, messages: list[dict], response_prefix: str = "") -> str:
        return render(self.tokenizer, messages, response_prefix)

    def load_weights(self, state_dict: dict) -> None:
        """Replace the model's weights (a ``state_dict`` of the same architecture, e.g. the trainer's)."""
        self.model.load_state_dict(state_dict)

    def provenance(self) -> dict:
        return engine_provenance("hf", self.name, "transformers")

    def generate(self, prompts: list[str], sampling: SamplingSettings) -> Batch:
        start = time.perf_counter()
        rows = self._generate(prompts, sampling) if prompts else []
        return Batch.of(rows, time.perf_counter() - start)

    @staticmethod
    def _processors(sampling: SamplingSettings) -> tuple[LogitsProcessorList, TopKRecorder | None]:
        recorder = TopKRecorder(sampling.top_k_logprobs) if sampling.top_k_logprobs > 0 else None
        processors = LogitsProcessorList([recorder] if recorder else [])
        if sampling.temperature > 0:
            if sampling.temperature != 1.0:
                processors.append(TemperatureLogitsWarper(sampling.temperature))
            if sampling.top_p < 1.0:
                processors.append(TopPLogitsWarper(sampling.top_p))
        return processors, recorder

    @torch.inference_mode()
    def _generate(self, prompts: list[str], sampling: SamplingSettings) -> list[list[Generation]]:
        batch = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        batch = batch.to(self.device)
        torch.manual_seed(sampling.seed)
        cache = self._prefill_shared(batch, sampling.n) if self.share_prefill else None
        ids = batch["input_ids"].repeat_interleave(sampling.n, dim=0)
        mask = batch["attention_mask"].repeat_interleave(sampling.n, dim=0)
        processors, recorder = self._processors(sampling)
        output = self.model.generate(
            input_ids=ids,
            attention_mask=mask,
            cache=cache,
            do_sample=sampling.temperature > 0,
            temperature=None,  # 1.0 default: our warpers (above) do temperature and top-p
            top_p=None,
            top_k=None,
            logits_processor=processors,
            max_new_tokens=sampling.max_new_tokens,
            eos_token_id=self.stop_ids,
            pad_token_id=self.tokenizer.pad_token_id,
            **({"stop_strings": list(sampling.stop), "tokenizer": self.tokenizer} if sampling.stop else {}),
        )
        prompt_len = ids.shape[1]
        prompt_tokens = batch["attention_mask"].sum(dim=1).tolist()
        new_tokens = output[:, prompt_len:]
        results: list[list[Generation]] = []
        for i, prompt_tokens_i in enumerate(prompt_tokens):
            rows = new_tokens[i * sampling.n : (i + 1) * sampling.n]
            results.append([self._decode(row, prompt_tokens_i, recorder, i * sampling.n + j, sampling.stop)
                            for j, row in enumerate(rows)])
        return results

    @torch.inference_mode()
    def score(self, prompts: list[str], completions: list[list[int]], top_k: int) -> list[tuple]:
        """This model's top-k next-token log-probabilities at every position of each completion (token ids in
        this model's vocabulary), given the prompt: one ``(ids [L, k] int64, logprobs [L, k] float32)`` pair of
        numpy arrays per completion, L its length; position ``j`` is the distribution that token ``j`` was
        drawn from. Raw distribution, like ``top_k_logprobs``. One forward pass per batch, no generation."""
        if not prompts:
            return []
        prompt_ids = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        sequences = [p + list(c) for p, c in zip(prompt_ids, completions)]
        width = max(len(s) for s in sequences)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(s)) + s for s in sequences], device=self.device)
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in sequences], device=self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        longest = max((len(c) for c in completions), default=0)
        if longest == 0:
            return [(np.zeros((0, top_k), np.int64), np.zeros((0, top_k), np.float32)) for _ in completions]
        # Left padding: every completion ends at the last column; logit i predicts token i + 1.
        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False,
                            logits_to_keep=longest + 1).logits[:, :-1].float()
        values, top = torch.log_softmax(logits, dim=-1).topk(top_k, dim=-1)
        return [(top[i, longest - len(c):].cpu().numpy(), values[i, longest - len(c):].cpu().numpy())
                for i, c in enumerate(completions)]

    def _prefill_shared(self, batch, n: int):
        """KV cache of every prompt but its last token, computed once and repeated n times; ``generate``
        then feeds only the last prompt token before sampling."""
        ids, mask = batch["input_ids"][:, :-1], batch["attention_mask"][:, :-1]
        if ids.shape[1] == 0:
            return None
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: real tokens start at position 0
        cache = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                           logits_to_keep=1).past_key_values
        cache.batch_repeat_interleave(n)
        return cache

    def _decode(self, tokens: torch.Tensor, prompt_tokens: int, recorder: TopKRecorder | None,
                index: int, stop: tuple[str, ...] = ()) -> Generation:
        ids = tokens.tolist()
        length = len(ids)
        finished = False
        for pos, token in enumerate(ids):
            if token in self.stop_ids:
                length, finished = pos, True
                break
        text = self.tokenizer.decode(ids[:length], skip_special_tokens=True)
        if stop and any(s in text for s in stop):
            # generate stopped this row on the token that completed a stop string; padding follows. (Rows without
            # one, e.g. those that ran to max_new_tokens, need no token-by-token search.)
            length, finished = self._stop_string_length(ids, length, stop) or (length, finished)
            text = _cut_at_stop(self.tokenizer.decode(ids[:length], skip_special_tokens=True), stop)
        logprobs = recorder.row(index, length) if recorder else None
        return Generation(text=text, prompt_tokens=prompt_tokens, completion_tokens=length, finished=finished,
                          logprobs=logprobs, token_ids=ids[:length])

    def _stop_string_length(self, ids: list[int], limit: int, stop: tuple[str, ...]) -> tuple[int, bool] | None:
        """(tokens up to and including the one that completed a stop string, True), or None if none did."""
        for pos in range(limit):
            text = self.tokenizer.decode(ids[:pos + 1], skip_special_tokens=True)
            if any(s in text for s in stop):
                return pos + 1, True
        return None


def _cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    cuts = [text.index(s) for s in stop if s in text]
    return text[:min(cuts)] if cuts else text
