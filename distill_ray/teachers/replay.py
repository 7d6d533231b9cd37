"""``replay``: a **benchmark** engine. It generates nothing: it serves completions that already exist, so the
pipeline's own overhead (Ray Data, prompt, extract, verify, vote, Parquet) can be measured at millions of
prompts on CPU, without a model. Never use its rows to train a student.

What it serves (``model``):
- a dataset directory written by ``distill-ray generate`` (its ``part-*.parquet`` shards): for each prompt the
  completions recorded for the same question, in recorded ``sample_index`` order, cycling when ``n`` exceeds
  them (``teacher=`` keeps one teacher's rows of a multi-teacher dataset);
- ``references``: each problem's own ``reference``, cut after the response prefix exactly as a teacher's
  completion is, so extract and verify pass it. The problems are loaded like the run loads them: ``task`` is
  the run's ``task`` section, ``task_seed`` its ``seed``, ``pool_size`` its ``prompt.pool_size`` (the exemplar
  pool is carved off the train split first; loading more problems than the run is harmless).

``wrong_fraction`` (both modes): that share of samples, drawn from ``sampling.seed`` and the question, serve
another problem's completion instead (right format, wrong problem), so the verifier and the vote see failures
and disagreement. It fails unless both problems share an answer, and needs at least two problems.

Keying: the engine sees only rendered prompts, so ``render`` keeps the chat messages as JSON (like the
``openai`` engine without a tokenizer) and ``generate`` keys each prompt by a 64-bit hash of its question (the
last user message). The question, unlike the prompt text, does not depend on the exemplars or chat template
of the run that recorded the dataset, so any dataset replays under any prompt settings. The index is a sorted
int64 array of keys with each key's start and count in one Arrow string array of completions (24 bytes per
problem plus the text, no Python object per completion): a binary search per prompt, O(1) per served sample.
A prompt whose question is not indexed raises ``KeyError``. ``prompt_style: plain`` is not supported (the
plain prompt text is not rendered here and carries no unambiguous question).

Honest stats: ``prompt_tokens`` and ``completion_tokens`` are **whitespace-separated word counts** (there is
no tokenizer), ``logprobs`` and ``token_ids`` are None, ``finished`` is the recorded one (True for
references). Temperature, top-p, ``max_new_tokens`` and stop strings are ignored: completions are served
verbatim. No torch import, no model loading.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from distill_ray.teachers.base import Batch, Generation, SamplingSettings
from distill_ray.teachers.provenance import engine_provenance

REFERENCES = "references"


def question_key(question: str) -> int:
    """64-bit hash of a question (stable across processes, unlike ``hash``); collisions among 10^6 problems
    have a probability of about 3e-8."""
    return int.from_bytes(hashlib.blake2b(question.encode(), digest_size=8).digest(), "little", signed=True)


class CompletionIndex:
    """Completions grouped by question key: sorted unique keys, each with a slice of ``texts``."""

    def __init__(self, keys: np.ndarray, texts: pa.Array, finished: np.ndarray, rank: np.ndarray):
        order = np.lexsort((rank, keys))   # by key, then recorded sample order
        self.texts = texts.take(pa.array(order))
        self.finished = finished[order]
        self.keys, self.starts, self.counts = np.unique(keys[order], return_index=True, return_counts=True)

    def __len__(self) -> int:
        return len(self.keys)

    def slot(self, key: int) -> int | None:
        i = int(np.searchsorted(self.keys, np.int64(key)))
        return i if i < len(self.keys) and self.keys[i] == key else None

    def sample(self, slot: int, j: int) -> tuple[str, bool]:
        """The slot's j-th completion, cycling over those recorded."""
        row = int(self.starts[slot] + j % self.counts[slot])
        return self.texts[row].as_py(), bool(self.finished[row])


class ReplayEngine:
    def __init__(self, model: str, teacher: str | None = None, task: dict | None = None, task_seed: int = 0,
                 pool_size: int | None = None, wrong_fraction: float = 0.0):
        if not 0.0 <= wrong_fraction <= 1.0:
            raise ValueError(f"wrong_fraction must be in [0, 1], got {wrong_fraction}")
        self.name = model
        self.wrong_fraction = wrong_fraction
        if model == REFERENCES:
            self.index = reference_index(load_task_problems(task or {}, task_seed, pool_size))
        else:
            self.index = recorded_index(model, teacher)

    # --- the engine interface ------------------------------------------------------------------------

    def render(self, messages: list[dict], response_prefix: str = "") -> str:
        return json.dumps({"messages": messages, "response_prefix": response_prefix})

    def provenance(self) -> dict:
        return engine_provenance("replay", self.name, "distill-ray")

    def generate(self, prompts: list[str], sampling: SamplingSettings) -> Batch:
        start = time.perf_counter()
        rows = [self._samples(prompt, sampling) for prompt in prompts]
        return Batch.of(rows, time.perf_counter() - start)

    # --- serving -------------------------------------------------------------------------------------

    def _samples(self, prompt: str, sampling: SamplingSettings) -> list[Generation]:
        question = prompt_question(prompt)
        key = question_key(question)
        slot = self.index.slot(key)
        if slot is None:
            raise KeyError(f"replay engine {self.name!r} has no completion for the question "
                           f"{question[:80]!r} (a dataset of other problems, or references "
                           "loaded with another task, task_seed or pool_size than the run's?)")
        rng = random.Random(f"{sampling.seed}:{key}") if self.wrong_fraction else None
        prompt_tokens = len(prompt.split())
        samples = []
        for j in range(sampling.n):
            source = self._wrong_slot(slot, rng) if rng and rng.random() < self.wrong_fraction else slot
            text, finished = self.index.sample(source, j)
            samples.append(Generation(text=text, prompt_tokens=prompt_tokens, completion_tokens=len(text.split()),
                                      finished=finished))
        return samples

    def _wrong_slot(self, slot: int, rng: random.Random) -> int:
        """Another problem's slot (the same one when there is only one problem)."""
        others = len(self.index) - 1
        return (slot + 1 + rng.randrange(others)) % len(self.index) if others else slot


def prompt_question(prompt: str) -> str:
    """The question of a prompt rendered by ``ReplayEngine.render``: its last message."""
    try:
        return json.loads(prompt)["messages"][-1]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise ValueError("the replay engine serves only prompts it rendered itself (teacher prompt_style "
                         f"'chat'); got {prompt[:80]!r}") from None


# --- building the index ------------------------------------------------------------------------------

def recorded_index(directory: str, teacher: str | None = None) -> CompletionIndex:
    """The candidate rows of a ``distill-ray generate`` dataset, keyed by question; one shard read at a time,
    keeping only keys, completions, ``finished`` and ``sample_index`` (never the repeated question text)."""
    from distill_ray.shards import ShardSet

    if not Path(directory).is_dir():
        raise FileNotFoundError(f"replay: {directory!r} is neither 'references' nor a dataset directory")
    columns = ["question", "sample_index", "completion", "finished"] + (["teacher"] if teacher else [])
    keys, texts, finished, rank = [], [], [], []
    for _, table in ShardSet(directory).iter_tables(columns):
        if teacher:
            table = table.filter(pc.equal(table["teacher"], teacher))
        keys.append(_keys(table["question"].to_pylist()))
        texts.append(table["completion"].combine_chunks().cast(pa.large_string()))
        finished.append(table["finished"].to_numpy(zero_copy_only=False).astype(bool))
        rank.append(table["sample_index"].to_numpy(zero_copy_only=False))
    if not keys or not sum(map(len, keys)):
        of = f" of teacher {teacher!r}" if teacher else ""
        raise ValueError(f"replay: {directory!r} holds no candidate rows{of}")
    return CompletionIndex(np.concatenate(keys), pa.concat_arrays(texts), np.concatenate(finished),
                           np.concatenate(rank))


def _keys(questions: list[str]) -> np.ndarray:
    """One key per row; each distinct question hashed once (a dataset repeats it for each of its n rows)."""
    memo = {q: question_key(q) for q in set(questions)}
    return np.fromiter((memo[q] for q in questions), np.int64, len(questions))


def load_task_problems(task: dict, task_seed: int, pool_size: int | None) -> list[dict]:
    """Train and eval problems as the run loads them (``workflow.load_task``), exemplar pool included
    (``pool_size`` None: the config's default)."""
    from distill_ray.config import PromptConfig, TaskConfig
    from distill_ray.tasks import load_problems

    t = TaskConfig(**task)
    pool_size = PromptConfig().pool_size if pool_size is None else pool_size
    train, eval_ = load_problems(t.source, num_train=t.num_train + pool_size, num_eval=t.num_eval, seed=task_seed,
                                 path=t.path, difficulty=t.difficulty,
                                 families=t.families if t.source in ("puzzles", "p3") else None,
                                 max_question_chars=t.max_question_chars)
    return train + eval_


def reference_index(problems: list[dict]) -> CompletionIndex:
    """Each problem's reference as a teacher's completion (one per problem; a problem without a reference
    gets an empty completion, which fails)."""
    texts = pa.array([reference_completion(p) for p in problems], pa.large_string())
    return CompletionIndex(_keys([p["question"] for p in problems]), texts, np.ones(len(problems), bool),
                           np.zeros(len(problems), np.int64))


def reference_completion(problem: dict) -> str:
    """The reference without the response prefix the prompt already ends with (the prompt stage's own
    ``response_prefix``), so that ``extract_program(prefix, completion)`` rebuilds the reference."""
    from distill_ray.prompts import response_prefix

    prefix, reference = response_prefix(problem["kind"], problem["question"]), problem["reference"]
    return reference[len(prefix):] if reference.startswith(prefix) else reference
