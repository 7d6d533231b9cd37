"""prompt: few-shot chat messages and the response prefix for each problem (``prompts.py`` chooses and
renders the exemplars)."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa

from distill_ray.config import PromptConfig
from distill_ray.prompts import Exemplar, build_messages, choose_exemplars, response_prefix
from distill_ray.stages.base import LIGHT_TASK, BatchStage

READS = ("kind", "question", "family")
WRITES = {"messages": pa.string(),          # JSON list of chat messages (model-agnostic)
          "response_prefix": pa.string()}   # the answer's opening, appended after the rendered prompt


def build_prompts(batch: pd.DataFrame, exemplars: list[Exemplar], num_shots: int, strategy: str,
                  seed: int, retriever=None) -> pd.DataFrame:
    """Few-shot chat messages for each problem (``num_shots=0`` is the zero-shot student prompt)."""
    messages = []
    for kind, question, family in zip(batch["kind"], batch["question"], batch["family"]):
        shots = (choose_exemplars(exemplars, num_shots, strategy, seed, question, family, retriever)
                 if num_shots else [])
        messages.append(json.dumps(build_messages(kind, question, shots)))
    batch["messages"] = messages
    batch["response_prefix"] = [response_prefix(k, q) for k, q in zip(batch["kind"], batch["question"])]
    return batch


def build(prompt: PromptConfig, exemplars: list[Exemplar], seed: int) -> BatchStage:
    # A learned retriever is loaded (and its digest checked) here on the driver and shipped with the stage, so
    # workers need not see its directory.
    retriever = None
    if prompt.exemplars == "learned":
        from distill_ray.epr import load_retriever

        retriever = load_retriever(prompt.retriever)
    # Rendered inside the teacher's actors (milliseconds a batch beside its generation), which saves a Ray task and
    # an object-store trip per batch and a worker process competing with the model's load (teacher bench: see the
    # README); a learned retriever embeds every question, so that runs beside the pool, in tasks. As tasks
    # (before several teachers, or with a retriever) no CPU is reserved: string work that must never wait behind
    # the pools' reservations (see base.LIGHT_TASK).
    return BatchStage("prompt", reads=READS, writes=WRITES, fn=build_prompts, cpus=LIGHT_TASK,
                      fn_kwargs=dict(exemplars=exemplars, num_shots=prompt.num_shots, strategy=prompt.exemplars,
                                     seed=seed, retriever=retriever),
                      in_next_pool=retriever is None)
