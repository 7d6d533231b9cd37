"""Tests of the sandboxed verifier: the three check kinds, honest programs, and a corpus of hostile ones.

Most cases run as one batch on a shared 2-worker Verifier (module fixture), so the whole file takes seconds.
Every hostile case must end as anything but a pass, and leave no process behind.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import textwrap
import uuid

import pytest

from distill_ray.verify import Check, SandboxLimits, Verdict, Verifier, pool, verify_one
from tests.verify.procs import processes, sandbox_uids

TOKEN = uuid.uuid4().hex[:12]          # unique names for files a candidate tries to leave on the host
SECRET = "hunter2-" + TOKEN


def src(text: str) -> str:
    return textwrap.dedent(text).strip("\n") + "\n"


def gsm(program: str, expected: float = 42) -> Check:
    return Check("gsm8k", src(program), expected=expected)


def p3(program: str, sat: str = "def sat(x: int):\n    return x == 42\n", ans_type: str = "int") -> Check:
    return Check("p3", src(program), sat=src(sat), ans_type=ans_type)


def asserts(program: str, tests: str, entry_point: str = "") -> Check:
    return Check("asserts", src(program), tests=src(tests), entry_point=entry_point)


# Pids of every sandbox worker this module started (replacements included): another verifier on the same
# machine has its own uids, and its processes are none of these tests' business.
OUR_WORKERS: set[int] = set()


@pytest.fixture(scope="module", autouse=True)
def record_workers():
    """Note each worker's pid as it starts, so sandbox_processes() looks only at this module's sandboxes."""
    original = pool._Worker.__init__

    def recording_init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        OUR_WORKERS.add(self.proc.pid)

    pool._Worker.__init__ = recording_init
    yield
    pool._Worker.__init__ = original


def sandbox_processes() -> list[int]:
    """Pids of live (not zombie) processes running as a sandbox uid of one of this module's workers."""
    assert OUR_WORKERS, "no worker recorded: the check would look at nothing"
    uids = sandbox_uids(OUR_WORKERS)
    return [pid for pid, state, _, uid in processes() if uid in uids and state != "Z"]


@pytest.fixture(scope="module")
def listener():
    """A TCP server on the host's loopback that candidates try to reach."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    yield srv.getsockname()[1]
    srv.close()


def cases(port: int) -> dict[str, Check]:
    honest = {
        "gsm_pass": gsm("def solution():\n    return 6 * 7"),
        "gsm_float": gsm("def solution():\n    return 42.0"),
        "gsm_tolerance": gsm("def solution():\n    return 0.1 + 0.2", expected=0.3),
        "gsm_wrong": gsm("def solution():\n    return 41"),
        "gsm_bool": gsm("def solution():\n    return True", expected=1),
        "gsm_nan": gsm("def solution():\n    return float('nan')"),
        "gsm_no_solution": gsm("x = 42"),
        "p3_pass": p3("def sol():\n    return 42"),
        "p3_derived_type": p3("def sol():\n    return ['a', 'b']",
                              sat="def sat(s: List[str], n=2):\n    return len(s) == n", ans_type=""),
        "p3_wrong": p3("def sol():\n    return 41"),
        "p3_bool_for_int": p3("def sol():\n    return True", sat="def sat(x: int):\n    return x == 1"),
        "p3_tuple_for_list": p3("def sol():\n    return (1, 2)", sat="def sat(x: List[int]):\n    return sum(x) == 3",
                                ans_type="List[int]"),
        "p3_sat_raises": p3("def sol():\n    return 0", sat="def sat(x: int):\n    return 1 / x > 0"),
        "p3_sat_truthy": p3("def sol():\n    return 3", sat="def sat(x: int):\n    return x"),
        "p3_no_sat": p3("def sol():\n    return 1", sat="x = 1"),
        "p3_bad_type": p3("def sol():\n    return 1", ans_type="Dict[str, int]"),
        "asserts_pass": asserts("def add(a, b):\n    return a + b",
                                "assert add(1, 2) == 3\nassert add((1,), (2,)) == (1, 2)\nassert add([1], [2]) == [1, 2]"),
        "asserts_fail": asserts("def add(a, b):\n    return a - b", "assert add(1, 2) == 3"),
        "asserts_raises": asserts("def add(a, b):\n    return a / 0", "assert add(1, 2) == 3"),
        "asserts_check_pass": asserts("def inc(x):\n    return x + 1", "def check(candidate):\n    assert candidate(1) == 2",
                                      entry_point="inc"),
        "asserts_check_fail": asserts("def inc(x):\n    return x", "def check(candidate):\n    assert candidate(1) == 2",
                                      entry_point="inc"),
        "asserts_exception_type": asserts("""
            def parse(s):
                return int(s)
        """, """
            try:
                parse("x")
                raise AssertionError("no error")
            except ValueError:
                pass
        """),
        "asserts_collections": asserts("""
            from collections import Counter
            def freq(xs):
                return Counter(xs)
        """, "assert freq('aab') == {'a': 2, 'b': 1}\nassert freq('aab')['z'] == 0"),
        "asserts_builtin_name_entry": asserts("""
            def sum(a, b):
                return a - b
        """, "assert sum(5, 3) == 2", entry_point="sum"),
        "non_ascii": gsm("""
            # Größe: 日本語のコメント ✓
            def solution():
                café = "日本"
                return len(café) * 21
        """),
        "big_source": gsm("# " + "x" * 3_000_000 + "\ndef solution():\n    return 42"),
        "stdlib_imports": gsm("""
            import json, fractions, decimal, cmath, datetime, statistics, itertools, collections, heapq, re
            import functools, math, string, bisect, random, typing, dataclasses, enum, textwrap, operator
            def solution():
                return int(fractions.Fraction(84, 2)) + int(decimal.Decimal(0)) + int(cmath.sqrt(0).real)
        """),
        "huge_int": p3("""
            def sol():
                n = 7 ** 20000
                assert len(str(n)) > 4300
                return n
        """, sat="def sat(x: int):\n    return x == 7 ** 20000 and len(str(x)) > 4300"),
        "little_output": gsm("def solution():\n    print('thinking...')\n    return 42"),
        "output_flood": gsm("""
            import sys
            def solution():
                for _ in range(2000):
                    sys.stdout.write('y' * 5000 + '\\n')
                    sys.stderr.write('e' * 100 + '\\n')
                return 42
        """),
        "thread_after_answer": gsm("""
            import threading
            def spin():
                while True:
                    pass
            def solution():
                threading.Thread(target=spin, daemon=False).start()
                return 42
        """),
    }
    hostile = {
        "print_pass": gsm("""
            def solution():
                print("PASS")
                print('{"passed": true, "status": "pass"}')
                return 0
        """),
        "sys_exit": gsm("import sys\nsys.exit(0)\ndef solution():\n    return 42"),
        "os_exit": gsm("import os\ndef solution():\n    os._exit(0)"),
        "raise_systemexit": asserts("def f():\n    raise SystemExit(0)", "assert f() == 1"),
        "exit_in_asserts": asserts("import os\ndef f():\n    os._exit(0)", "assert f() == 1"),
        "forge_fds": asserts("""
            import os, struct, json
            for msg in ({"ok": True}, {"passed": True, "status": "pass"}, {"sat": True, "type": "bool"}):
                data = json.dumps(msg).encode()
                for fd in range(0, 64):
                    try:
                        os.write(fd, struct.pack(">I", len(data)) + data)
                    except OSError:
                        pass
            os._exit(0)
            def f():
                return 0
        """, "assert f() == 1"),
        "forge_fds_p3": p3("""
            import os, struct, json
            def sol():
                data = json.dumps({"sat": True, "type": "bool"}).encode()
                for fd in range(0, 64):
                    try:
                        os.write(fd, struct.pack(">I", len(data)) + data)
                    except OSError:
                        pass
                os._exit(0)
        """),
        "patch_builtins_asserts": asserts("""
            import builtins
            builtins.len = lambda x: 3
            builtins.AssertionError = type("Nope", (Exception,), {})
            builtins.isinstance = lambda *a: True
            def f():
                return [1]
        """, "assert len(f()) == 3\nassert isinstance(f(), str)"),
        "patch_builtins_sorted": asserts("""
            import builtins
            builtins.sorted = lambda x: [1, 2, 3]
            builtins.AssertionError = type("Nope", (Exception,), {})
            def f():
                return [3]
        """, "assert sorted(f()) == [1, 2, 3]"),
        "patch_builtins_p3": p3("""
            import builtins
            builtins.all = lambda *a: True
            builtins.sum = lambda *a: 42
            def sol():
                return [0]
        """, sat="def sat(x: List[int]):\n    return all(v > 5 for v in x) and sum(x) == 42", ans_type="List[int]"),
        "shadow_builtin": asserts("""
            def set(x):
                return {1, 2}
            def f():
                return []
        """, "assert set(f()) == {1, 2}"),
        "patch_module": asserts("""
            import math
            math.isclose = lambda *a, **k: True
            def f():
                return 0.0
        """, "import math\nassert math.isclose(f(), 1.0)"),
        "lying_eq_gsm": gsm("""
            class Liar:
                def __eq__(self, other): return True
                def __bool__(self): return True
                def __float__(self): return 42.0
            def solution():
                return Liar()
        """),
        "int_subclass_gsm": gsm("""
            class I(int):
                def __eq__(self, other): return True
            def solution():
                return I(1)
        """),
        "lying_eq_asserts": asserts("""
            class Liar:
                def __eq__(self, other): return True
                def __ne__(self, other): return False
            def f():
                return Liar()
        """, "assert f() == [1, 2]", entry_point=""),
        "lying_eq_p3": p3("""
            class Liar(int):
                def __eq__(self, other): return True
                def __bool__(self): return True
            def sol():
                return Liar(0)
        """),
        "trace_hook": asserts("""
            import sys
            def skip(frame, event, arg):
                frame.f_trace_lines = True
                return skip
            sys.settrace(skip)
            def f():
                return 0
        """, "assert f() == 1"),
        "frame_walk": gsm("""
            import sys, gc
            def solution():
                found = []
                f = sys._getframe()
                while f is not None:
                    found.extend(k for k in f.f_locals if 'expect' in k)
                    f = f.f_back
                for o in gc.get_objects():   # the check as a dict, or its JSON text, anywhere in memory?
                    if type(o) is dict and isinstance(o.get('expected'), (int, float)):
                        return o['expected']
                    if type(o) in (str, bytes) and ('98765' in o if type(o) is str else b'98765' in o):
                        return 1
                return -1
        """, expected=98765.4321),
        "infinite_loop": gsm("def solution():\n    while True:\n        pass"),
        "ignore_signals": gsm("""
            import signal
            for s in (signal.SIGTERM, signal.SIGINT, signal.SIGXCPU, signal.SIGHUP, signal.SIGALRM):
                signal.signal(s, signal.SIG_IGN)
            def solution():
                while True:
                    pass
        """),
        "sleep_forever": gsm("import time\ndef solution():\n    time.sleep(1000)"),
        "memory_bytes": gsm("def solution():\n    x = bytearray(4 * 1024 ** 3)\n    return 42"),
        "memory_list": gsm("def solution():\n    x = [0] * (10 ** 10)\n    return 42"),
        "fork_bomb": gsm("""
            import os
            def solution():
                n = 0
                for _ in range(64):
                    try:
                        if os.fork() == 0:
                            os.setsid()
                            while True:
                                try:
                                    os.fork()
                                except OSError:
                                    pass
                        n += 1
                    except OSError:
                        break
                return n
        """, expected=10 ** 6),
        "subprocess_spawn": gsm("""
            import subprocess
            def solution():
                subprocess.Popen(["sleep", "1000"], start_new_session=True)
                return 42
        """),
        "write_outside": gsm(f"""
            import os
            def solution():
                out = {{}}
                for path in ["/work/main/pwned-{TOKEN}", "/etc/pwned-{TOKEN}", "/tmp/pwned-{TOKEN}",
                             "/var/tmp/pwned-{TOKEN}", "/dev/shm/pwned-{TOKEN}", "local.txt"]:
                    try:
                        with open(path, "w") as f:
                            f.write("x")
                        out[path] = "ok"
                    except OSError as e:
                        out[path] = type(e).__name__
                print(out)
                return 0 if out["local.txt"] == "ok" and out["/work/main/pwned-{TOKEN}"] != "ok" and \\
                    out["/etc/pwned-{TOKEN}"] != "ok" else 1
        """, expected=0),
        "file_size_bomb": gsm("""
            def solution():
                with open("big", "wb") as f:
                    while True:
                        f.write(b"x" * 1 << 20)
        """),
        "env_and_secrets": p3(f"""
            import os
            def sol():
                seen = [repr(dict(os.environ))]
                for path in ["/proc/self/environ", "/proc/{os.getpid()}/environ", "/proc/1/environ",
                             "/proc/%d/environ" % os.getppid()]:
                    try:
                        seen.append(open(path, "rb").read().decode(errors="replace")[:300])
                    except OSError as e:
                        seen.append(type(e).__name__)
                try:
                    seen.append(repr(sorted(os.listdir("/root"))))
                except OSError as e:
                    seen.append(type(e).__name__)
                return seen
        """, sat="def sat(x: List[str]):\n    return False", ans_type="List[str]"),
        "network": p3(f"""
            import socket
            def sol():
                out = []
                for addr in [("127.0.0.1", {port}), ("1.1.1.1", 53)]:
                    try:
                        socket.create_connection(addr, timeout=0.5).close()
                        out.append("connected")
                    except OSError as e:
                        out.append(type(e).__name__)
                try:
                    socket.getaddrinfo("example.com", 80)
                    out.append("resolved")
                except OSError as e:
                    out.append(type(e).__name__)
                return out
        """, sat="def sat(x: List[str]):\n    return False", ans_type="List[str]"),
        "kill_parents": gsm("""
            import os, signal
            def solution():
                ppid = os.getppid()
                try:   # hidden where /proc shows a sandbox uid only its own processes: then the parent alone
                    with open(f"/proc/{ppid}/status") as f:
                        pppid = int(next(l for l in f if l.startswith("PPid:")).split()[1])
                except OSError:
                    pppid = ppid
                hits = 0
                for pid in {ppid, pppid}:
                    try:
                        os.kill(pid, signal.SIGKILL)
                        hits += 1
                    except OSError:
                        pass
                return hits
        """, expected=2),
    }
    assert not set(honest) & set(hostile)
    return {**honest, **hostile}


HOSTILE_NOT_PASS = [
    "print_pass", "sys_exit", "os_exit", "raise_systemexit", "exit_in_asserts", "forge_fds", "forge_fds_p3",
    "patch_builtins_asserts", "patch_builtins_sorted", "patch_builtins_p3", "shadow_builtin", "patch_module", "lying_eq_gsm",
    "int_subclass_gsm", "lying_eq_asserts", "lying_eq_p3", "trace_hook", "frame_walk", "infinite_loop",
    "ignore_signals", "sleep_forever", "memory_bytes", "memory_list", "fork_bomb", "file_size_bomb",
    "env_and_secrets", "network", "kill_parents",
]


@pytest.fixture(scope="module")
def verifier():
    os.environ["DISTILL_VERIFY_SECRET"] = SECRET   # must not reach any candidate
    v = Verifier(SandboxLimits(timeout_s=1.5), workers=2)
    yield v
    v.close()
    os.environ.pop("DISTILL_VERIFY_SECRET", None)


@pytest.fixture(scope="module")
def results(verifier, listener) -> dict[str, Verdict]:
    batch = cases(listener)
    verdicts = verifier.verify(list(batch.values()))
    return dict(zip(batch, verdicts))


# ------------------------------------------------------------------------------------------------ honest

@pytest.mark.parametrize("name,status,answer", [
    ("gsm_pass", "pass", "42"), ("gsm_float", "pass", "42"), ("gsm_tolerance", "pass", None),
    ("gsm_wrong", "fail", "41"), ("gsm_bool", "fail", "True"), ("gsm_nan", "fail", "nan"),
    ("gsm_no_solution", "error", None),
    ("p3_pass", "pass", "42"), ("p3_derived_type", "pass", "['a', 'b']"), ("p3_wrong", "fail", "41"),
    ("p3_bool_for_int", "fail", "True"), ("p3_tuple_for_list", "fail", "(1, 2)"), ("p3_sat_raises", "fail", "0"),
    ("p3_sat_truthy", "fail", "3"), ("p3_no_sat", "invalid", "1"), ("p3_bad_type", "invalid", None),
    ("asserts_pass", "pass", None), ("asserts_fail", "fail", None), ("asserts_raises", "fail", None),
    ("asserts_check_pass", "pass", None), ("asserts_check_fail", "fail", None),
    ("asserts_exception_type", "pass", None), ("asserts_collections", "pass", None),
    ("asserts_builtin_name_entry", "pass", None),
    ("non_ascii", "pass", "42"), ("big_source", "pass", "42"), ("stdlib_imports", "pass", "42"),
    ("huge_int", "pass", None), ("little_output", "pass", "42"), ("output_flood", "pass", "42"),
    ("thread_after_answer", "pass", "42"),
])
def test_kinds_and_honest_programs(results, name, status, answer):
    v = results[name]
    assert v.status == status, (name, v)
    assert v.passed == (status == "pass")
    if answer is not None:
        assert v.answer == answer
    assert len(v.detail) <= 300 and v.seconds > 0


def test_gsm8k_answers_are_canonical(results):
    assert results["gsm_pass"].answer == results["gsm_float"].answer == "42"
    assert results["gsm_tolerance"].answer == repr(0.1 + 0.2)


def test_thread_after_answer_does_not_wait_for_timeout(results):
    assert results["thread_after_answer"].seconds < 1.0


# ------------------------------------------------------------------------------------------------ hostile

@pytest.mark.parametrize("name", HOSTILE_NOT_PASS)
def test_hostile_never_passes(results, name):
    v = results[name]
    assert not v.passed and v.status != "pass", (name, v)


@pytest.mark.parametrize("name,statuses", [
    ("sys_exit", {"error"}), ("os_exit", {"error"}), ("raise_systemexit", {"fail", "error"}),
    ("exit_in_asserts", {"error"}), ("forge_fds", {"error"}), ("forge_fds_p3", {"error"}),
    ("patch_builtins_asserts", {"fail", "error"}), ("patch_builtins_sorted", {"fail"}), ("patch_builtins_p3", {"fail"}), ("shadow_builtin", {"fail"}),
    ("patch_module", {"fail"}), ("lying_eq_gsm", {"error"}), ("int_subclass_gsm", {"error"}),
    ("lying_eq_asserts", {"fail"}), ("lying_eq_p3", {"error"}), ("trace_hook", {"fail"}),
    ("infinite_loop", {"timeout"}), ("ignore_signals", {"timeout"}), ("sleep_forever", {"timeout"}),
    ("memory_bytes", {"memory"}), ("memory_list", {"memory"}), ("file_size_bomb", {"error"}),
])
def test_hostile_statuses(results, name, statuses):
    assert results[name].status in statuses, (name, results[name])


def test_expected_answer_never_enters_candidate(results):
    assert results["frame_walk"].answer == "-1"


def test_fork_bomb_is_stopped_and_cleaned_up(results, verifier):
    v = results["fork_bomb"]
    assert v.status in ("fail", "timeout"), v
    if verifier.protections["no_processes"].startswith("on"):
        assert v.status == "fail" and int(v.answer) < SandboxLimits().max_processes
    assert sandbox_processes() == []


def test_subprocess_cannot_outlive_check(results):
    assert results["subprocess_spawn"].status in ("pass", "error")   # either blocked or killed afterwards
    assert sandbox_processes() == []


def test_writes_stay_in_scratch(results, verifier):
    assert results["write_outside"].status == "pass", results["write_outside"]   # cwd writable, host dirs not
    for d in ("/work/main", "/etc", "/tmp", "/var/tmp", "/dev/shm"):
        assert not os.path.exists(f"{d}/pwned-{TOKEN}")


def test_environment_and_secrets_not_visible(results, verifier):
    v = results["env_and_secrets"]
    assert v.status == "fail" and v.answer
    assert SECRET not in v.answer and "PATH" not in v.answer and "HOME" not in v.answer
    if verifier.protections["uid_drop"].startswith("on"):
        # other processes' environ (the tests', init's, the zygote's): unreadable, or not even visible
        assert v.answer.count("PermissionError") + v.answer.count("FileNotFoundError") >= 3, v.answer
        assert ".gitconfig" not in v.answer and ".bashrc" not in v.answer


def test_no_network(results, verifier):
    if not verifier.protections["network"].startswith("on"):
        pytest.skip(verifier.protections["network"])
    v = results["network"]
    assert v.answer and "connected" not in v.answer and "resolved" not in v.answer, v.answer


def test_candidate_cannot_kill_verifier(results, verifier):
    if verifier.protections["uid_drop"].startswith("on"):
        assert results["kill_parents"].answer == "0"
    assert verifier.verify([gsm("def solution():\n    return 42")])[0].passed


def test_no_process_left_behind(results):
    assert sandbox_processes() == []


def test_cannot_delete_host_files(verifier):
    victim_dir = tempfile.mkdtemp(prefix="verify-victim-", dir="/var/lib" if os.access("/var/lib", os.W_OK) else None)
    victim = os.path.join(victim_dir, "precious.txt")
    try:
        with open(victim, "w") as f:
            f.write("keep me")
        os.chmod(victim_dir, 0o755)
        os.chmod(victim, 0o644)
        prog = f"""
            import os, shutil
            def solution():
                for attempt in (lambda: os.remove({victim!r}), lambda: shutil.rmtree({victim_dir!r}),
                                lambda: open({victim!r}, "w").write("gone")):
                    try:
                        attempt()
                    except OSError:
                        pass
                return 42
        """
        verdict = verifier.verify([gsm(prog)])[0]
        assert verdict.passed, verdict
        if verifier.protections["uid_drop"].startswith("on"):
            assert open(victim).read() == "keep me"
    finally:
        shutil.rmtree(victim_dir, ignore_errors=True)


def test_cpu_limit_without_wall_timeout():
    with Verifier(SandboxLimits(timeout_s=20, cpu_s=1)) as v:
        verdict = v.verify([gsm("def solution():\n    while True:\n        pass")])[0]
    assert verdict.status == "timeout" and "cpu" in verdict.detail and verdict.seconds < 10


def test_tmp_does_not_carry_over_between_checks():
    with Verifier(SandboxLimits(timeout_s=2), workers=1) as v:
        if not v.protections["private_tmp"].startswith("on"):
            pytest.skip(v.protections["private_tmp"])
        write = gsm(f"def solution():\n    open('/tmp/leak-{TOKEN}', 'w').write('42')\n    return 42")
        read = gsm(f"def solution():\n    return int(open('/tmp/leak-{TOKEN}').read())")
        first, second = v.verify([write, read])
    assert first.passed and second.status == "error"
    assert not os.path.exists(f"/tmp/leak-{TOKEN}")


def test_an_unlabelled_gsm8k_check_records_the_number_and_gives_no_verdict(verifier):
    def unlabelled(body):
        return Check("gsm8k", f"def solution():\n    {body}\n", record_answer=True)

    out = verifier.verify([unlabelled("return 6 * 2"), unlabelled("return 0"), unlabelled("return '12'"),
                           unlabelled("return float('nan')"), unlabelled("return undefined")])
    assert [(v.status, v.passed, v.answer) for v in out] == [
        ("answered", False, "12"), ("answered", False, "0"),   # any number, 0 included: recorded, never passed
        ("fail", False, None), ("fail", False, None),          # no finite number: nothing to vote with
        ("error", False, None)]


def test_invalid_checks(verifier):
    out = verifier.verify([Check("bogus", "x"), Check("p3", "def sol():\n    return 1"),
                           Check("gsm8k", "def solution():\n    return 1")])
    assert [v.status for v in out] == ["invalid"] * 3


def test_worker_death_is_recovered(verifier):
    verifier._workers[0].proc.kill()
    verifier._workers[0].proc.wait()
    out = verifier.verify([gsm("def solution():\n    return 42")] * 4)
    assert all(v.passed for v in out)


def test_verify_one():
    assert verify_one(gsm("def solution():\n    return 42")).passed


# ------------------------------------------------------------------------------------------------ real data

def test_real_p3_puzzles(shared_data, verifier):
    puzzles = json.loads((shared_data / "p3" / "puzzles.json").read_text())
    by_name = {p["name"]: p for p in puzzles}
    chosen, seen_types = [], set()
    for p in puzzles:    # a spread of answer types among the quick puzzles
        if p["sol_bodies"] and p["weight"] <= 1 and (p["ans_type"] not in seen_types or len(chosen) < 10):
            seen_types.add(p["ans_type"])
            chosen.append(p)
        if len(chosen) >= 10 and len(seen_types) >= 6:
            break
    chosen += [by_name[n] for n in ("FivePowers:0", "BoxVolume:1") if n in by_name]   # > 4300-digit ints
    checks = [Check("p3", p["sol_header"] + "\n" + p["sol_bodies"][0], sat=p["sat"], ans_type=p["ans_type"])
              for p in chosen]
    with Verifier(SandboxLimits(timeout_s=5), workers=2) as v:
        out = v.verify(checks)
        wrong = v.verify([Check("p3", "def sol():\n    return 0", sat=chosen[0]["sat"], ans_type=chosen[0]["ans_type"]),
                          Check("p3", chosen[1]["sol_header"] + "\n    return None", sat=chosen[1]["sat"],
                                ans_type=chosen[1]["ans_type"])])
    assert [v.status for v in out] == ["pass"] * len(checks), [(p["name"], v) for p, v in zip(chosen, out)]
    assert not any(v.passed for v in wrong)


def test_real_humaneval_and_mbpp(shared_data, verifier):
    he = [json.loads(line) for line in (shared_data / "humaneval" / "HumanEval.jsonl").open()][:6]
    mbpp = [json.loads(line) for line in (shared_data / "mbpp" / "mbpp.jsonl").open()][10:16]
    good = [Check("asserts", r["prompt"] + r["canonical_solution"], tests=r["test"], entry_point=r["entry_point"])
            for r in he]
    good += [Check("asserts", r["code"], tests=r["test_setup_code"] + "\n" + "\n".join(r["test_list"])) for r in mbpp]
    bad = [Check("asserts", r["prompt"] + "    return None\n", tests=r["test"], entry_point=r["entry_point"])
           for r in he]
    out = verifier.verify(good + bad)
    assert all(v.passed for v in out[:len(good)]), out[:len(good)]
    assert not any(v.passed for v in out[len(good):])
