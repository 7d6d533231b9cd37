"""transformers generation: batched, left-padded, n samples per prompt; HF directories and GGUF files.

The prompt is prefilled once and its KV cache copied to the n samples: ``generate(num_return_sequences=n)``
would repeat every prompt n times before prefill, and with few-shot prompts (~300 tokens) and short answers
(~10 tokens) prefill is most of the work.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from distill_ray.models import resolve_model
from distill_ray.prompts import render
from distill_ray.teachers.base import Generation, SamplingSettings


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
        self.stop_ids = self._stop_token_ids()

    def _stop_token_ids(self) -> list[int]:
        # Chat models end a turn with their own token (<|im_end|> for SmolLM2), which may differ from eos.
        ids = {self.tokenizer.eos_token_id}
        for token in ("<|im_end|>", "<end_of_turn>", "<|eot_id|>"):
            token_id = self.tokenizer.convert_tokens_to_ids(token)
            if isinstance(token_id, int) and token_id != self.tokenizer.unk_token_id:
                ids.add(token_id)
        return sorted(i for i in ids if i is not None)

    def render(self, messages: list[dict], response_prefix: str = "") -> str:
        return render(self.tokenizer, messages, response_prefix)

    @torch.inference_mode()
    def generate(self, prompts: list[str], sampling: SamplingSettings) -> list[list[Generation]]:
        if not prompts:
            return []
        batch = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        batch = batch.to(self.device)
        torch.manual_seed(sampling.seed)
        cache = self._prefill_shared(batch, sampling.n) if self.share_prefill else None
        ids = batch["input_ids"].repeat_interleave(sampling.n, dim=0)
        mask = batch["attention_mask"].repeat_interleave(sampling.n, dim=0)
        output = self.model.generate(
            input_ids=ids,
            attention_mask=mask,
            cache=cache,
            do_sample=sampling.temperature > 0,
            temperature=sampling.temperature if sampling.temperature > 0 else None,
            top_p=sampling.top_p if sampling.temperature > 0 else None,
            top_k=None,
            max_new_tokens=sampling.max_new_tokens,
            eos_token_id=self.stop_ids,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        prompt_len = ids.shape[1]
        prompt_tokens = batch["attention_mask"].sum(dim=1).tolist()
        new_tokens = output[:, prompt_len:]
        results: list[list[Generation]] = []
        for i, prompt_tokens_i in enumerate(prompt_tokens):
            rows = new_tokens[i * sampling.n : (i + 1) * sampling.n]
            results.append([self._decode(row, prompt_tokens_i) for row in rows])
        return results

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

    def _decode(self, tokens: torch.Tensor, prompt_tokens: int) -> Generation:
        ids = tokens.tolist()
        length = len(ids)
        finished = False
        for pos, token in enumerate(ids):
            if token in self.stop_ids:
                length, finished = pos, True
                break
        text = self.tokenizer.decode(ids[:length], skip_special_tokens=True)
        return Generation(text=text, prompt_tokens=prompt_tokens, completion_tokens=length, finished=finished)
