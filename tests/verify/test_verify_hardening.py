"""Issue 17: no candidate can crash, stall or poison the verifier, or the checks beside it.

One test (or more) per class of attack found by an adversarial corpus: text that is not valid UTF-8, trusted code
recursing on candidate data, answers that are costly to decode, processes left at exit, honest checks that shared
a batch with a hostile one.
"""

from __future__ import annotations

import io
import json
import os

import pytest

from distill_ray.verify import Check, SandboxLimits, Verifier
from distill_ray.verify.jsonl import main
from tests.verify.procs import processes

SURROGATE_PROGRAMS = {   # each puts a lone surrogate into text the verifier reports
    "exception": Check("gsm8k", "def solution():\n    raise ValueError('\\ud800 bad')\n", expected=1),
    "exception_type": Check("gsm8k", "def solution():\n    raise type('E\\udc80', (Exception,), {})('x')\n",
                            expected=1),
    "answer": Check("p3", "def sol():\n    return '\\udcff'\n", sat="def sat(s: str):\n    return s == 'x'\n"),
    "gsm_answer": Check("gsm8k", "def solution():\n    return '\\udcff'\n", expected=1),
    "test_message": Check("asserts", "def f():\n    return 1\n", tests="assert f() == 2, '\\ud800'\n"),
    "sat_message": Check("p3", "def sol():\n    return 1\n",
                         sat="def sat(x: int):\n    assert x == 2, '\\udfff'\n    return True\n"),
    "honest": Check("gsm8k", "def solution():\n    return 1\n", expected=1),
}


@pytest.fixture(scope="module")
def verifier():
    v = Verifier(SandboxLimits(timeout_s=2), workers=2)
    yield v
    v.close()


def _utf8_ok(text) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


# ------------------------------------------------------------------ 1. text that is not valid UTF-8

def test_verdict_text_is_always_valid_utf8(verifier):
    out = dict(zip(SURROGATE_PROGRAMS, verifier.verify(list(SURROGATE_PROGRAMS.values()))))
    for name, v in out.items():
        assert _utf8_ok(v.detail) and (v.answer is None or _utf8_ok(v.answer)), (name, v)
        assert len(v.detail) <= 300
    assert out["honest"].passed and not any(v.passed for k, v in out.items() if k != "honest")
    assert "\\ud800" in out["exception"].detail   # escaped, not dropped
    assert out["test_message"].status == "fail" and out["sat_message"].status == "fail"


def test_verdict_text_fits_arrow_and_parquet(verifier, tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    out = verifier.verify(list(SURROGATE_PROGRAMS.values()))
    table = pa.table({"answer": [v.answer for v in out], "detail": [v.detail for v in out]})
    pq.write_table(table, tmp_path / "verdicts.parquet")
    assert pq.read_table(tmp_path / "verdicts.parquet").num_rows == len(out)


def test_cli_survives_surrogates(tmp_path):
    """The CLI writes one verdict per record, exit 0, even when the text (or an id) holds lone surrogates."""
    records = [{"id": name, **_record(c)} for name, c in SURROGATE_PROGRAMS.items()]
    records.append({"id": "\ud800-id", "kind": "gsm8k", "program": "def solution():\n    return 1\n", "expected": 1})
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))   # ASCII: surrogates as \u escapes
    dst = tmp_path / "out.jsonl"
    err = io.StringIO()
    assert main([str(src), "--output", str(dst), "--workers", "1"], stderr=err) == 0
    out = [json.loads(line) for line in dst.read_text(encoding="utf-8").splitlines()]
    assert [o["id"] for o in out] == [r["id"] for r in records]
    assert [o["status"] for o in out][-2:] == ["pass", "pass"]


def _record(c: Check) -> dict:
    rec = {"kind": c.kind, "program": c.program}
    if c.kind == "p3":
        rec["sat"] = c.sat
    elif c.kind == "gsm8k":
        rec["expected"] = c.expected
    else:
        rec["tests"] = c.tests
    return rec


# ------------------------------------------------------------------ 2. trusted code recursing on candidate data

DEEP_REPORT = """
import os, struct
def {entry}():
    body = b'{{"ok":' + b'[' * 100000 + b']' * 100000 + b'}}'
    os.write(3, struct.pack('>I', len(body)) + body)
    os._exit(0)
"""
DIR_CHAIN = """
import os
def solution():
    for top in ({where!r},):
        os.chdir(top)
        for _ in range(1500):
            os.mkdir('d')
            os.chdir('d')
    return 1
"""
HONEST_GSM = Check("gsm8k", "def solution():\n    return 7\n", expected=7)
HONEST_P3 = Check("p3", "def sol():\n    return 7\n", sat="def sat(x: int):\n    return x == 7\n")
EMPTY_CWD_AND_TMP = Check("gsm8k", "import os\ndef solution():\n    return len(os.listdir('.')) + len([n for n in "
                          "os.listdir('/tmp') if not os.path.samefile('/tmp/' + n, '.')])\n", expected=0)


def _interleaved(hostile: list[Check], honest: list[Check]) -> list[Check]:
    """honest, hostile, honest, hostile, ..., honest: every hostile check shares its batch with honest ones."""
    out = list(honest)
    for k, h in enumerate(hostile):
        out.insert(2 * k + 1, h)
    return out


@pytest.mark.parametrize("trusted", [False, True])
def test_deeply_nested_report_is_that_checks_error(trusted):
    sat = "def sat(x: int):\n    return x == 7\n"
    hostile = [Check("p3", DEEP_REPORT.format(entry="sol"), sat=sat, trusted_sat=trusted),
               Check("gsm8k", DEEP_REPORT.format(entry="solution"), expected=1)]
    honest = [HONEST_GSM, HONEST_P3, HONEST_GSM]
    with Verifier(SandboxLimits(timeout_s=5), workers=1) as v:
        worker = v._workers[0].proc.pid
        out = v.verify(_interleaved(hostile, honest))
        assert v._workers[0].proc.pid == worker   # nothing died
    assert [x.status for x in out[1::2]] == ["error", "error"], out
    assert all("nested too deeply" in x.detail for x in out[1::2]), out
    assert all(x.passed for x in out[0::2]), out


@pytest.mark.parametrize("where", [".", "/tmp"])
def test_deep_directory_chain_is_removed(where):
    """A 1,500-deep chain of dirs left in the scratch dir or the private /tmp: shutil.rmtree would raise
    RecursionError (ignore_errors or not) in the forker; it is removed, and the next candidate finds both empty."""
    with Verifier(SandboxLimits(timeout_s=10), workers=1) as v:
        if where == "/tmp" and not v.protections["private_tmp"].startswith("on"):
            pytest.skip(v.protections["private_tmp"])
        worker = v._workers[0].proc.pid
        out = v.verify([HONEST_GSM, Check("gsm8k", DIR_CHAIN.format(where=where), expected=1), EMPTY_CWD_AND_TMP,
                        HONEST_P3])
        assert v._workers[0].proc.pid == worker
    assert all(x.passed for x in out), out


def test_deep_directory_chain_removal_is_iterative(tmp_path):
    from distill_ray.verify import sandbox
    fd = os.open(tmp_path, os.O_RDONLY)
    for _ in range(1200):   # deeper than the recursion limit, and than PATH_MAX (names of 8 chars)
        os.mkdir("dddddddd", dir_fd=fd)
        os.symlink("/etc", "link", dir_fd=fd)
        nxt = os.open("dddddddd", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = nxt
    os.close(fd)
    sandbox.rmtree(str(tmp_path / "dddddddd"))
    assert os.listdir(tmp_path) == ["link"] and os.path.isdir("/etc")


# ------------------------------------------------------------------ 4. answers costly to decode or print

def test_costly_answers_are_refused_quickly_and_spare_their_neighbours():
    """Answers within the byte cap that cost seconds of trusted CPU each (100 ints of 10^5 digits: quadratic
    decimal conversion; 16.5 MB of empty lists) are refused on their bytes, before any object is built."""
    report = "import os, struct\ndef {entry}():\n    body = {body}\n    os.write(3, struct.pack('>I', len(body)) + body)\n"
    big_ints = report.replace("{body}", "b'{{\"ok\":[' + b','.join([b'7' * 100_000] * 100) + b']}}'")
    lists = report.replace("{body}", "b'{{\"ok\":[' + b','.join([b'[]'] * 5_500_000) + b']}}'")
    sat = "def sat(x: List[int]):\n    return True\n"
    hostile = []
    for program in (big_ints, lists):
        hostile += [Check("gsm8k", program.format(entry="solution"), expected=1),
                    Check("p3", program.format(entry="sol"), sat=sat, trusted_sat=True),
                    Check("p3", program.format(entry="sol"), sat=sat)]
    hostile *= 2
    honest = [HONEST_GSM, HONEST_P3] * 7
    with Verifier(SandboxLimits(timeout_s=10), workers=1) as v:
        out = v.verify(_interleaved(hostile, honest))
    # Refused on their bytes (before: ~3 s of trusted CPU each, and the honest checks queued behind them
    # timed out as "worker stopped answering"). No wall-clock bound: the machine may be shared.
    refused = out[1:2 * len(hostile):2]
    assert all(x.status == "error" and "bad message" in x.detail for x in refused), refused
    assert all(x.passed for x in out[0::2]), out


def test_decoder_bounds():
    from distill_ray.verify import codec
    import sys
    sys.set_int_max_str_digits(0)
    try:
        for bad in (b"[" * 400 + b"]" * 400, b"[" + b",".join([b"[]"] * 600_000) + b"]",
                    b"[" + b",".join([b"7" * 100_000] * 2) + b"]", b"[" + b"7" * 100_001 + b"]"):
            with pytest.raises(ValueError):
                codec.loads_untrusted(bad)
        ok = [b"[" * 300 + b"]" * 300, b'["' + b"[" * 1000 + b'"]', b"[" + b",".join([b"12345"] * 400_000) + b"]",
              b"[" + b"7" * 100_000 + b"]", b'{"t":"tuple","v":[1,"\\"[",2]}']
        for good in ok:
            assert codec.loads_untrusted(good) == json.loads(good)
    finally:
        sys.set_int_max_str_digits(4300)


# ------------------------------------------------------------------ 7. leftovers at exit

LEFTOVERS = r"""
import ctypes, os, sys
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)   # PR_SET_CHILD_SUBREAPER: whatever the verifier orphans comes back to us
from distill_ray.verify import Check, SandboxLimits, Verifier
v = Verifier(SandboxLimits(timeout_s=2), workers=2)
sat = "def sat(x: int):\n    return x == 7\n"
out = v.verify([Check("gsm8k", "def solution():\n    return 7\n", expected=7),
                Check("p3", "def sol():\n    return 7\n", sat=sat, trusted_sat=True),
                Check("p3", "def sol():\n    return 7\n", sat=sat),
                Check("asserts", "def f():\n    return 7\n", tests="assert f() == 7\n"),
                Check("gsm8k", "import subprocess\ndef solution():\n    subprocess.Popen(['sleep', '100'], "
                               "start_new_session=True)\n    return 7\n", expected=7)] * 3)
assert all(x.passed for x in out), out
v.close()
me = str(os.getpid())
left = []
for pid in os.listdir("/proc"):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        continue
    if fields[1] == me:   # fields: state, ppid, ...
        left.append((pid, fields[0]))
print(left)
"""


def test_close_leaves_no_child_behind():
    """After Verifier.close(), no process it started is left (alive, or exited and unreaped) as a child of the
    caller, even one that makes itself the subreaper of what it starts (as a container's init does)."""
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", LEFTOVERS], capture_output=True, text=True, timeout=120, cwd=root)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout


# ------------------------------------------------------------------ 8. collateral

def test_checks_beside_a_crashed_forker_get_their_own_verdicts():
    """The forker dies while a batch runs (here: killed from outside while a slow candidate runs). Its honest
    neighbours, run or not yet run, get their own verdicts; the check it was running runs again, alone."""
    import signal
    import threading
    import time
    slow = Check("gsm8k", "import time\ndef solution():\n    time.sleep(1.5)\n    return 1\n", expected=2)
    checks = [HONEST_GSM] * 3 + [slow] + [HONEST_GSM] * 36   # 40 checks, 1 worker: one chunk of 10 holds them
    with Verifier(SandboxLimits(timeout_s=5), workers=1) as v:
        worker = v._workers[0].proc.pid
        forker = int(open(f"/proc/{worker}/task/{worker}/children").read().split()[0])
        killer = threading.Thread(target=_kill_when_sleeping, args=(forker, worker))
        killer.start()
        out = v.verify(checks)
        killer.join()
    assert out[3].status == "fail", out[3]   # it ran again (alone), and gave its own verdict
    assert all(x.passed for i, x in enumerate(out) if i != 3), [x for x in out if not x.passed]


def _kill_when_sleeping(forker: int, worker: int) -> None:
    """SIGKILL the forker once a candidate of this worker has been running for a while (the slow one)."""
    import signal
    import time
    from distill_ray.verify.sandbox import UID_BASE
    uid, seen = UID_BASE + 3 * worker, {}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for pid, _, _, process_uid in processes():
            if process_uid == uid:
                seen.setdefault(pid, time.monotonic())
                if time.monotonic() - seen[pid] > 0.3:
                    os.kill(forker, signal.SIGKILL)
                    return
        time.sleep(0.02)


# ------------------------------------------------------------------ 3. the uid-wide kill

KILL_LOOP = r"""
import os, sys
from distill_ray.verify import native, sandbox
uid = int(sys.argv[1])
sandbox.NATIVE = native.load(native.build()) if sys.argv[2] == "native" else None
if sys.argv[2] == "native" and sandbox.NATIVE is None:
    print("no C helper")
    sys.exit(0)
victim = os.fork()
if victim == 0:
    os.setresuid(uid, uid, uid)
    os.setsid()
    import time
    time.sleep(60)
    os._exit(0)
print("ready", flush=True)
sys.stdin.readline()
for _ in range(1000):
    sandbox.kill_uid(uid)
_, status = os.waitpid(victim, 0)
print("victim killed" if os.WIFSIGNALED(status) else "victim lived", flush=True)
"""


@pytest.mark.parametrize("helper", ["native", "python"])
def test_uid_wide_kill_never_runs_as_the_uid(helper):
    """While killing a sandbox uid's processes, the killing process never takes that uid (a process of that uid,
    e.g. a candidate's helper in a session of its own, could then SIGSTOP or SIGKILL it): watched from outside."""
    import subprocess
    import sys
    if os.geteuid() != 0:
        pytest.skip("needs root (sandbox uids)")
    from distill_ray.verify.sandbox import UID_BASE
    uid = UID_BASE + 3 * os.getpid() + 7
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = subprocess.Popen([sys.executable, "-c", KILL_LOOP, str(uid), helper], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, cwd=root)
    first = p.stdout.readline()
    if first.startswith("no C helper"):
        p.wait()
        pytest.skip("no C helper")
    assert first.startswith("ready")
    p.stdin.write("go\n")
    p.stdin.flush()
    uids = set()
    while p.poll() is None:
        try:
            with open(f"/proc/{p.pid}/status") as f:
                uids.add(tuple(next(line for line in f if line.startswith("Uid:")).split()[1:]))
        except (OSError, StopIteration):
            pass
    assert p.stdout.read().strip() == "victim killed"
    assert uids == {("0", "0", "0", "0")}, uids
