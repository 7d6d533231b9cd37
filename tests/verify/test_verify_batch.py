"""The batched path of the verifier (p3/gsm8k checks run end to end in the forker) and per-check timeouts."""

from __future__ import annotations

import pytest

from distill_ray.verify import Check, SandboxLimits, Verifier

LOOP = "def solution():\n    while True:\n        pass\n"


def test_mixed_batch_order_and_per_check_timeouts():
    checks = []
    for i in range(30):
        r = i % 5
        if r == 0:
            checks.append(Check("gsm8k", f"def solution():\n    return {i}\n", expected=i))
        elif r == 1:
            checks.append(Check("p3", f"def sol():\n    return {i}\n", sat=f"def sat(x: int):\n    return x == {i}\n"))
        elif r == 2:
            checks.append(Check("asserts", "def f(x):\n    return x * 2\n", tests=f"assert f({i}) == {2 * i}\n"))
        elif r == 3:
            checks.append(Check("gsm8k", LOOP, expected=1, timeout_s=0.2))
        else:
            checks.append(Check("p3", "def sol():\n    return 1\n", sat="def sat(x: int):\n    return x == 2\n"))
    with Verifier(SandboxLimits(timeout_s=5), workers=2) as v:
        out = v.verify(checks)
    for i, verdict in enumerate(out):
        want = {0: "pass", 1: "pass", 2: "pass", 3: "timeout", 4: "fail"}[i % 5]
        assert verdict.status == want, (i, verdict)
        if i % 5 == 3:
            assert verdict.seconds < 2, verdict   # its own 0.2 s, not the Verifier's 5 s


def test_wrong_type_is_failed_without_running_sat():
    hang = "def sat(x: int):\n    while True:\n        pass\n"
    with Verifier(SandboxLimits(timeout_s=3), workers=1) as v:
        wrong, right = v.verify([Check("p3", "def sol():\n    return 'a'\n", sat=hang),
                                 Check("p3", "def sol():\n    return 1\n", sat=hang, timeout_s=0.3)])
    assert wrong.status == "fail" and "type" in wrong.detail and wrong.seconds < 2
    assert right.status == "timeout" and "sat" in right.detail


def test_bad_timeout_is_invalid():
    with Verifier(SandboxLimits(timeout_s=2), workers=1) as v:
        out = v.verify([Check("gsm8k", "def solution():\n    return 1\n", expected=1, timeout_s=-1),
                        Check("gsm8k", "def solution():\n    return 1\n", expected=1, timeout_s="1"),
                        Check("gsm8k", "def solution():\n    return 1\n", expected=1, timeout_s=1)])
    assert [x.status for x in out] == ["invalid", "invalid", "pass"]


def test_forker_death_is_recovered():
    import os
    import signal
    import time
    with Verifier(SandboxLimits(timeout_s=2), workers=1) as v:
        worker = v._workers[0].proc.pid
        kids = open(f"/proc/{worker}/task/{worker}/children").read().split()
        assert kids
        for k in kids:
            os.kill(int(k), signal.SIGKILL)
        time.sleep(0.1)
        first = v.verify([Check("gsm8k", "def solution():\n    return 1\n", expected=1)])
        # The worker notices its dead forker before running the chunk, hands it back and exits; the check runs on a
        # fresh worker with a fresh forker (issue 17: no "forker died" verdict for a check that never ran).
        assert first[0].passed, first
        assert v._workers[0].proc.pid != worker
        later = v.verify([Check("gsm8k", "def solution():\n    return 1\n", expected=1)] * 3)
    assert all(x.passed for x in later), later


def test_scratch_dir_is_emptied_or_replaced_between_checks():
    """The forker reuses one scratch dir (the candidates' cwd): nothing a candidate leaves or does to it reaches
    the next candidate, even when it renames the dir away or makes it unreadable."""
    write = Check("gsm8k", "def solution():\n    open('left.txt', 'w').write('7')\n    import os\n"
                           "    os.mkdir('sub')\n    open('sub/x', 'w').write('1')\n    return 7\n", expected=7)
    read = Check("gsm8k", "import os\ndef solution():\n    return len(os.listdir('.'))\n", expected=0)
    rename = Check("gsm8k", "import os\ndef solution():\n    open('kept', 'w').write('1')\n"
                            "    os.rename(os.getcwd(), os.getcwd() + '-moved')\n    return 1\n", expected=1)
    chmod = Check("gsm8k", "import os\ndef solution():\n    open('kept', 'w').write('1')\n"
                           "    os.chmod('.', 0)\n    return 1\n", expected=1)
    with Verifier(SandboxLimits(timeout_s=3), workers=1) as v:
        out = v.verify([write, read, rename, read, chmod, read, write, read])
    assert [x.status for x in out] == ["pass"] * 8, out


def test_zygote_death_mid_batch_is_recovered():
    """The zygote that forks a batch's candidates dies: the check it was running ends as an error (never a
    pass), the rest of the batch is run by a fresh zygote."""
    import os
    import signal
    import threading
    import time
    slow = Check("gsm8k", "import time\ndef solution():\n    time.sleep(0.05)\n    return 1\n", expected=1)
    with Verifier(SandboxLimits(timeout_s=3), workers=1) as v:
        worker = v._workers[0].proc.pid
        forker = int(open(f"/proc/{worker}/task/{worker}/children").read().split()[0])
        killed = []

        def kill_zygote():
            time.sleep(0.3)   # the 30 checks take >= 1.5 s: the batch is under way
            for pid in open(f"/proc/{forker}/task/{forker}/children").read().split():
                os.kill(int(pid), signal.SIGKILL)
                killed.append(pid)

        t = threading.Thread(target=kill_zygote)
        t.start()
        out = v.verify([slow] * 30)
        t.join()
        again = v.verify([slow] * 3)
    assert killed
    assert all(x.status in ("pass", "error") for x in out) and sum(x.status == "error" for x in out) <= 1, out
    assert sum(x.passed for x in out) >= 29 and all(x.passed for x in again)


def test_worker_stays_small_and_candidates_keep_site_packages():
    """Every candidate fork copies the worker's memory (see batch.py): no `site`, no tempfile/shutil (zlib, bz2,
    lzma) in it; candidates still import installed packages and may call exit() as with `site`."""
    import json
    import subprocess
    import sys
    from distill_ray.verify import pool
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); sys.path += sys.argv[2:]; "
             "import distill_ray.verify.worker; import json; print(json.dumps(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-I", "-S", "-c", probe, pool._ROOT, *pool._site_dirs()],
                          capture_output=True, text=True, env={}, timeout=60)
    loaded = set(json.loads(done.stdout))
    assert not loaded & {"site", "tempfile", "shutil", "zlib", "bz2", "lzma", "ast"}, loaded
    installed = "import pytest\ndef solution():\n    return len(pytest.__name__)\n"
    quitting = "def solution():\n    exit(3)\n"
    with Verifier(SandboxLimits(timeout_s=5), workers=1) as v:
        out = v.verify([Check("gsm8k", installed, expected=6), Check("gsm8k", quitting, expected=3)])
    assert out[0].passed, out[0]
    assert out[1].status == "error" and "SystemExit" in out[1].detail, out[1]


def test_leftover_processes_are_gone_before_the_next_candidate():
    """A candidate's detached processes are killed and reaped before the next candidate starts: they would
    otherwise count against its RLIMIT_NPROC (4 tasks per sandbox uid) and make its own fork fail."""
    leave = Check("gsm8k", "import subprocess\ndef solution():\n    for _ in range(3):\n"
                           "        subprocess.Popen(['sleep', '1000'], start_new_session=True)\n    return 3\n",
                  expected=3)
    fork = Check("gsm8k", "import os\ndef solution():\n    pids = [os.fork() for _ in range(2)]\n"
                          "    if 0 in pids:\n        os._exit(0)\n    for p in pids:\n        os.waitpid(p, 0)\n"
                          "    return 2\n", expected=2)
    with Verifier(SandboxLimits(timeout_s=5), workers=1) as v:
        if not v.protections["uid_drop"].startswith("on"):
            pytest.skip("RLIMIT_NPROC per sandbox uid needs root")
        out = v.verify([leave, fork] * 6)
    assert [x.status for x in out] == ["pass"] * 12, out


def test_shared_log_is_not_mapped_in_candidates():
    """The log a watching zygote shares with the forker (64 MiB, MAP_SHARED) is never mapped in a candidate, so no
    candidate can write a record for another check."""
    from distill_ray.verify.watching_zygote import Log
    maps = ("def solution():\n    n = 0\n    for line in open('/proc/self/maps'):\n"
            "        lo, hi = (int(x, 16) for x in line.split()[0].split('-'))\n"
            f"        n += hi - lo == {Log.SIZE}\n    return n\n")
    with Verifier(SandboxLimits(timeout_s=5), workers=1) as v:
        if not v.protections["native_fork"].startswith("on"):
            pytest.skip("no C helper: no watching zygote")
        out = v.verify([Check("gsm8k", maps, expected=0)] * 3)
    assert all(x.passed for x in out), out


def test_answers_beyond_the_log_room_start_a_fresh_zygote():
    """Four 12 MB answers do not fit one watching zygote's 64 MiB log together: it stops when the next answer might
    not fit, and a fresh zygote runs the rest; every answer arrives whole."""
    size = 12_000_000
    sat = f"def sat(s: str):\n    return len(s) == {size} and s[-1] == 'y'\n"
    big = Check("p3", f"def sol():\n    return 'x' * {size - 1} + 'y'\n", sat=sat, trusted_sat=True)
    with Verifier(SandboxLimits(timeout_s=20, max_answer_bytes=30 << 20), workers=1) as v:
        out = v.verify([big] * 4)
    assert all(x.passed for x in out), out


def test_records_decode_like_the_forker_replies():
    from distill_ray.verify import records
    ok = records.RECORD.pack(0, records.OK, 0, 14, 99, 0.5, 10, 3) + b'{"ok": [1]}'[:10] + b"out"
    assert records.replies(ok)[0]["why"].startswith("bad message")   # a frame body that is not JSON
    good = b'{"ok":[1]}'
    two = (records.RECORD.pack(0, records.OK, 0, len(good), 99, 0.5, len(good), 4) + good + b"tail"
           + records.RECORD.pack(1, records.TOO_LARGE, 9, 500, 99, 0.1, 0, 0))
    first, second = records.replies(two)
    assert first == {"msg": {"ok": [1]}, "why": "ok", "status": 0, "tail": "tail", "seconds": 0.5}
    assert second["msg"] is None and "500 bytes exceeds the 99-byte cap" in second["why"]
    assert len(records.replies(two[:-1])) == 1   # a record cut short is not read
    assert records.replies(records.error(3, "zygote died")) == [{"error": "zygote died", "seconds": 0.0}]


def test_answer_text_is_the_capped_repr_fast_or_walked():
    """A verdict's answer is repr(answer) capped at ANSWER_CHARS: small answers take repr directly, big lists and
    huge ints are walked (never turned whole into text); both give the same text where both apply."""
    from distill_ray.verify import checks
    values = [[99, 1, 1], 5, -3, 2 ** 300, "x" * 300, "ab", None, True, 1.5, float("nan"), [1.0, "a", None, True],
              ["x" * 200] * 10, list(range(64)), list(range(65)), [[1]], [], "é\n", list(range(10 ** 5))]
    for value in values:
        assert checks.answer_text(value) == repr(value)[:checks.ANSWER_CHARS], repr(value)[:50]
    huge = 2 ** 5000
    assert checks.answer_text(huge).startswith("<int of 5001 bits: 0x")
    assert checks.answer_text([huge]).startswith("[<int of 5001 bits")


def test_exceptions_are_reported_the_same_from_c_and_python():
    """A candidate's exception is reported as [type name, str(exc)[:200]] whether the C helper runs the program
    (zygote.c: run_program) or Python does; a __str__ that raises gives '<unprintable>'."""
    programs = {
        "plain": "def solution():\n    raise ValueError('x' * 500)\n",
        "unprintable": "class Boom(Exception):\n    def __str__(self):\n        raise RuntimeError\n"
                       "def solution():\n    raise Boom()\n",
        "at_import": "import no_such_module_here\ndef solution():\n    return 1\n",
        "no_entry": "def other():\n    return 1\n",
        "not_callable": "solution = 3\n",
    }
    checks = [Check("gsm8k", p, expected=1) for p in programs.values()]
    with Verifier(SandboxLimits(timeout_s=5), workers=1) as v:
        out = dict(zip(programs, v.verify(checks)))
    assert all(x.status == "error" for x in out.values()), out
    assert out["plain"].detail == "ValueError: " + "x" * 200
    assert out["unprintable"].detail == "Boom: <unprintable>"
    assert out["at_import"].detail.startswith("ModuleNotFoundError: No module named 'no_such_module_here'")
    assert out["no_entry"].detail == out["not_callable"].detail == "NameError: the program defines no solution()"
