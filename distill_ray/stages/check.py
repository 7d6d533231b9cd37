"""check: ``sat(sol())`` in the sandbox for every live puzzle row (``judge_puzzles``, run by the verifier actor
every pipeline uses, ``stages/verify.VerifierActor``).

Trusted (procedural) rows go in batches of ``trusted_batch`` per sandboxed process (``synth/batchcheck.py``;
1: one P3 check each); teacher rows get a P3 check each plus a triviality check (``sat`` of the answer type's
default must not be True). Rejects become ``verify_<status>`` or ``trivial``.
"""

from __future__ import annotations

import pandas as pd

from distill_ray.stages.base import ActorStage
from distill_ray.stages.generate import PUZZLE_COLUMNS
from distill_ray.stages.verify import VerifierActor
from distill_ray.synth.config import PuzzleJobConfig
from distill_ray.synth.teacher import default_answer

READS = ("sat", "sol", "ans_type", "trusted", "reject", "detail")
WRITES = {c: PUZZLE_COLUMNS[c] for c in ("reject", "detail")}


def judge_puzzles(verifier, batch: pd.DataFrame, trusted_batch: int = 32) -> pd.DataFrame:
    """The ``VerifierActor`` judge of puzzle rows: live rows are checked, failures become ``reject``s."""
    live = [i for i, r in enumerate(batch["reject"]) if not r]
    trusted = [i for i in live if batch["trusted"].iat[i]]
    untrusted = [i for i in live if not batch["trusted"].iat[i]]
    single = _batched(verifier, batch, trusted, trusted_batch) if trusted_batch > 1 else trusted
    reject, detail = batch["reject"].tolist(), batch["detail"].tolist()
    verdicts = verifier.verify([_check(batch, i) for i in single + untrusted]
                               + [_check(batch, i, trivial=True) for i in untrusted])
    for i, v in zip(single + untrusted, verdicts):
        if not v.passed:
            reject[i], detail[i] = f"verify_{v.status}", v.detail
    for i, v in zip(untrusted, verdicts[len(single) + len(untrusted):]):
        if v.passed and not reject[i]:
            reject[i], detail[i] = "trivial", "sat accepts the default value of its answer type"
    batch["reject"], batch["detail"] = reject, detail
    return batch


def _batched(verifier, batch: pd.DataFrame, rows: list[int], size: int) -> list[int]:
    """Verify ``rows`` in groups of ``size``; return the rows of groups that did not all pass (to check one by one)."""
    from distill_ray.synth.batchcheck import batch_check

    groups = [rows[k:k + size] for k in range(0, len(rows), size)]
    checks = [batch_check([(batch["sat"].iat[i], batch["sol"].iat[i], batch["ans_type"].iat[i]) for i in g],
                          verifier.limits.timeout_s) for g in groups]
    verdicts = verifier.verify(checks) if checks else []
    return [i for g, v in zip(groups, verdicts) if not v.passed for i in g]


def _check(batch: pd.DataFrame, i: int, trivial: bool = False):
    from distill_ray.verify import Check

    # Our families' sat is trusted: judged in the worker's persistent judge process (one fork per check instead of
    # two). A teacher-written sat, and the triviality check of one, take the untrusted path.
    program = f"def sol():\n    return {default_answer(batch['ans_type'].iat[i])}" if trivial else batch["sol"].iat[i]
    return Check("p3", program, sat=batch["sat"].iat[i], ans_type=batch["ans_type"].iat[i],
                 trusted_sat=bool(batch["trusted"].iat[i]) and not trivial)


def build(cfg: PuzzleJobConfig) -> ActorStage:
    # 0.25 CPU: the sandbox processes are not counted; what the actor itself does is light.
    return ActorStage("check", reads=READS, writes=WRITES, cls=VerifierActor,
                      init_kwargs=dict(limits=dict(timeout_s=cfg.timeout_s, memory_mb=cfg.memory_mb),
                                       workers=cfg.verify_workers, judge=judge_puzzles,
                                       trusted_batch=cfg.trusted_batch),
                      actors=cfg.verify_actors, cpus_per_actor=0.25, batch_size=cfg.verify_batch, memory_gib=0.5,
                      resources=cfg.verify_resources)
