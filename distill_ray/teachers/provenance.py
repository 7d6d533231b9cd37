"""Provenance every engine shares: who wrote a candidate, with which settings, and the stage contract
(one row per prompt in, ``n`` candidate rows out).

Every engine reports the same ``provenance()`` keys, so a row from vLLM, transformers or a hosted API is
traceable in the same way; secrets (API keys) are never part of it.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version

import pyarrow as pa

from distill_ray.teachers.base import Batch, SamplingSettings

# The columns ``candidate_columns`` adds to each candidate row, with their Arrow types (besides the teacher's
# name, which the teacher stage adds).
CANDIDATE_COLUMNS = {
    "prompt": pa.string(), "sample_index": pa.int64(), "completion": pa.string(), "finished": pa.bool_(),
    "prompt_tokens": pa.int64(), "completion_tokens": pa.int64(), "gen_seconds": pa.float64(),
    "gen_error": pa.string(), "logprobs": pa.string(),
    "engine": pa.string(), "engine_model": pa.string(), "engine_version": pa.string(), "sampling": pa.string(),
}


def package_version(package: str) -> str:
    try:
        return f"{package}=={version(package)}"
    except PackageNotFoundError:
        return f"{package} (not installed)"


def engine_provenance(engine: str, model: str, package: str, **extra: str) -> dict:
    """``engine`` kind, the ``model`` it serves (a name, path or server-side model id), the library
    version that generated, plus engine-specific strings (e.g. the server's base URL)."""
    return {"engine": engine, "engine_model": str(model), "engine_version": package_version(package), **extra}


def logprobs_json(logprobs) -> str | None:
    """Per-token top-k logprobs as compact JSON (``[[[id, logprob], ...], ...]``): one Parquet column of
    strings stays schema-stable whether or not logprobs were asked for."""
    if logprobs is None:
        return None
    return json.dumps([[[tid, round(lp, 6)] for tid, lp in token] for token in logprobs], separators=(",", ":"))


def candidate_columns(prompts: list[str], batch: Batch, sampling: SamplingSettings, provenance: dict) -> dict:
    """Flatten ``generate``'s result into the n candidate rows per prompt, prompt-major (the order of
    ``batch_df.index.repeat(n)``). ``gen_seconds`` spreads the call's time over its rows, so summing it over
    a dataset gives the engines' busy time."""
    flat = [(prompt, i, g) for prompt, row in zip(prompts, batch) for i, g in enumerate(row)]
    per_row = batch.stats.seconds / max(len(flat), 1)
    columns = {
        "prompt": [p for p, _, _ in flat],
        "sample_index": [i for _, i, _ in flat],
        "completion": [g.text for _, _, g in flat],
        "finished": [g.finished for _, _, g in flat],
        "prompt_tokens": [g.prompt_tokens for _, _, g in flat],
        "completion_tokens": [g.completion_tokens for _, _, g in flat],
        "gen_seconds": [per_row] * len(flat),
        "gen_error": [g.error for _, _, g in flat],   # a request that failed after its retries
        "logprobs": [logprobs_json(g.logprobs) for _, _, g in flat],
        "sampling": [json.dumps(asdict(sampling), sort_keys=True)] * len(flat),
    }
    for key, value in provenance.items():
        columns[key] = [value] * len(flat)
    return columns
