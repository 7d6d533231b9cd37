"""The public data types of the verifier: what is checked, the limits, and the verdict."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from distill_ray.verify.budget import WALL_FACTOR, WALL_SLACK_S, wall_cap  # noqa: F401  (timeout_s: see there)

KINDS = ("p3", "gsm8k", "asserts")
MAX_TIMEOUT_S = 600.0   # largest per-check timeout_s accepted
STATUSES = ("pass", "fail", "timeout", "error", "memory", "invalid", "answered")


@dataclass(frozen=True)
class Check:
    kind: str                       # "p3" | "gsm8k" | "asserts"
    program: str                    # candidate source: sol() for p3, solution() for gsm8k, functions for asserts
    sat: str = ""                   # p3: source of `def sat(x: T, ...)`
    ans_type: str = ""              # p3: "int", "List[int]", ...; empty: taken from sat's first annotation
    expected: float | None = None   # gsm8k: the expected number
    # gsm8k without an expected number: run the program and record the number it returns (status "answered",
    # never passed); the caller decides by other means (a vote) whether it is right.
    record_answer: bool = False
    tests: str = ""                 # asserts: assert lines, or HumanEval's `def check(candidate): ...`
    entry_point: str = ""           # asserts: if set, `check(<entry_point>)` runs after the tests code
    timeout_s: float | None = None  # this check's CPU budget (wall cap: wall_cap()); None: SandboxLimits.timeout_s
    # p3: sat comes from a curated source (P3, our puzzle families), not a model. It then runs in the worker's
    # persistent judge process (one fork per check instead of two); a model-written sat must leave this False.
    trusted_sat: bool = False


@dataclass(frozen=True)
class Verdict:
    passed: bool
    status: str          # one of STATUSES, see the package docstring
    answer: str | None   # canonical answer string (p3, gsm8k) when one was obtained, else None
    detail: str          # short human reason, <= 300 chars
    seconds: float       # wall time of this check


@dataclass(frozen=True)
class SandboxLimits:
    # CPU seconds of the candidate (top level + call) and every process it starts, wall clock capped at
    # wall_cap(timeout_s); p3's sat judge gets as much again; asserts: the candidate and the tests together
    timeout_s: float = 2.0
    memory_mb: int = 512            # RLIMIT_AS of each sandboxed process
    max_output_bytes: int = 65536   # stdout+stderr kept per check; the rest is read and discarded
    cpu_s: int = 0                  # RLIMIT_CPU seconds per process; 0 means int(timeout_s) + 2 (a backstop)
    file_size_mb: int = 16          # RLIMIT_FSIZE: largest file a candidate may write
    max_open_files: int = 64        # RLIMIT_NOFILE
    max_processes: int = 4          # RLIMIT_NPROC per sandbox uid (threads count): 1 process + a few threads
    max_answer_bytes: int = 16 << 20  # largest serialized answer or call result accepted
    tmpfs_mb: int = 64              # size of each worker's private /tmp, /var/tmp, /dev/shm (mount namespace)
    allow_unsafe: bool = False      # run even where candidates would keep root (no unprivileged uid possible)

    def cpu_limit(self) -> int:
        return self.cpu_s if self.cpu_s > 0 else int(self.timeout_s) + 2

    def to_dict(self) -> dict:
        return asdict(self)
