"""The per-batch steps of the puzzle job: procedural generation, sandboxed verification, dedupe keys.

Every row carries ``reject`` ("" while alive, else the reason it was dropped), so that every row reaches the
sink and every row's fate is counted; nothing is filtered out on the way.
"""

from __future__ import annotations

import pandas as pd

from distill_ray.synth.teacher import ROW_COLUMNS, default_answer
from distill_ray.tasks.puzzles import SEED_STRIDE, generate_puzzle


def procedural_rows(batch: pd.DataFrame, families: list[str], difficulties: list[int], seed: int,
                    chunk_size: int, done: frozenset, scope: str | None = None,
                    threshold: float = 0.85) -> pd.DataFrame:
    """Seeds (``id`` column of ``ray.data.range``) to puzzles; seeds of chunks already written are skipped.

    Seed s picks family ``families[s % F]`` and difficulty ``difficulties[(s // F) % D]``, so every prefix of
    the seeds mixes all families and difficulties. With ``scope`` set, the dedupe keys are added here too
    (in these parallel tasks rather than in the one sink, which would otherwise be the bottleneck).
    """
    rows = []
    nf, nd = len(families), len(difficulties)
    for s in batch["id"].tolist():
        chunk = s // chunk_size
        if chunk in done:
            continue
        family, difficulty = families[s % nf], difficulties[(s // nf) % nd]
        p = generate_puzzle(family, seed * SEED_STRIDE + s, difficulty)
        rows.append((f"{family}/d{difficulty}/s{p.seed}", chunk, family, family, difficulty, p.ans_type, p.sat,
                     p.sol, True, "", ""))
    frame = pd.DataFrame(rows, columns=ROW_COLUMNS)
    return add_keys(frame, scope, threshold) if scope else frame


def prompt_rows(batch: pd.DataFrame, procedural_chunks: int, prompts_per_chunk: int, done: frozenset) -> pd.DataFrame:
    """Teacher prompt indices (``id`` of ``ray.data.range``) with their chunk; prompts of written chunks skipped."""
    prompts = [p for p in batch["id"].tolist() if procedural_chunks + p // prompts_per_chunk not in done]
    return pd.DataFrame({"prompt": prompts, "chunk": [procedural_chunks + p // prompts_per_chunk for p in prompts]})


class PuzzleVerifier:
    """Ray Data actor: ``sat(sol())`` in the sandbox for every live row. Trusted (procedural) rows go in
    batches of ``trusted_batch`` per sandboxed process (``batchcheck``; 1: one P3 check each); teacher rows get
    a P3 check each plus a triviality check (``sat`` of the answer type's default must not be True).
    Rejects become ``verify_<status>`` or ``trivial``."""

    def __init__(self, limits: dict, workers: int, trusted_batch: int = 32):
        from distill_ray.verify import SandboxLimits, Verifier

        self.verifier = Verifier(SandboxLimits(**limits), workers=workers)
        self.timeout_s = self.verifier.limits.timeout_s
        self.trusted_batch = trusted_batch

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        live = [i for i, r in enumerate(batch["reject"]) if not r]
        trusted = [i for i in live if batch["trusted"].iat[i]]
        untrusted = [i for i in live if not batch["trusted"].iat[i]]
        single = self._batched(batch, trusted) if self.trusted_batch > 1 else trusted
        reject, detail = batch["reject"].tolist(), batch["detail"].tolist()
        verdicts = self.verifier.verify([_check(batch, i) for i in single + untrusted]
                                        + [_check(batch, i, trivial=True) for i in untrusted])
        for i, v in zip(single + untrusted, verdicts):
            if not v.passed:
                reject[i], detail[i] = f"verify_{v.status}", v.detail
        for i, v in zip(untrusted, verdicts[len(single) + len(untrusted):]):
            if v.passed and not reject[i]:
                reject[i], detail[i] = "trivial", "sat accepts the default value of its answer type"
        batch["reject"], batch["detail"] = reject, detail
        return batch

    def _batched(self, batch: pd.DataFrame, rows: list[int]) -> list[int]:
        """Verify ``rows`` in groups; return the rows of groups that did not all pass (to check one by one)."""
        from distill_ray.synth.batchcheck import batch_check

        groups = [rows[k:k + self.trusted_batch] for k in range(0, len(rows), self.trusted_batch)]
        checks = [batch_check([(batch["sat"].iat[i], batch["sol"].iat[i], batch["ans_type"].iat[i]) for i in g],
                              self.timeout_s) for g in groups]
        verdicts = self.verifier.verify(checks) if checks else []
        return [i for g, v in zip(groups, verdicts) if not v.passed for i in g]


def _check(batch: pd.DataFrame, i: int, trivial: bool = False):
    from distill_ray.verify import Check

    # Our families' sat is trusted: judged in the worker's persistent judge process (one fork per check instead of
    # two). A teacher-written sat, and the triviality check of one, take the untrusted path.
    program = f"def sol():\n    return {default_answer(batch['ans_type'].iat[i])}" if trivial else batch["sol"].iat[i]
    return Check("p3", program, sat=batch["sat"].iat[i], ans_type=batch["ans_type"].iat[i],
                 trusted_sat=bool(batch["trusted"].iat[i]) and not trivial)


def add_keys(batch: pd.DataFrame, scope: str, threshold: float) -> pd.DataFrame:
    """Dedupe keys of live rows: ``exact_key`` always, ``band_keys`` for rows in the near-duplicate scope.
    Computed where rows are made, before verification: keys of rows that later fail are simply unused."""
    maker = _maker(threshold)
    exact, bands = [], []
    for sat, source, reject in zip(batch["sat"], batch["source"], batch["reject"]):
        alive = not reject
        exact.append(maker.exact_key(sat) if alive else 0)
        bands.append(maker.band_keys(sat) if alive and near_scope(source, scope) else [])
    batch["exact_key"] = exact
    batch["band_keys"] = bands
    return batch


_MAKERS: dict = {}


def _maker(threshold: float):
    """One KeyMaker per process and threshold (building one draws the MinHash permutations)."""
    from distill_ray.synth.dedupe import KeyMaker

    if threshold not in _MAKERS:
        _MAKERS[threshold] = KeyMaker(threshold)
    return _MAKERS[threshold]


def near_scope(source: str, scope: str) -> bool:
    return scope == "all" or source == "teacher"

