"""``benchmarks/gpu_check.py`` (the trainer's GPU path, prepared for a GPU machine) stays runnable: on CPU it
takes the same steps with gloo instead of NCCL."""

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_the_gpu_check_passes_on_cpu():
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--steps", "3"], cwd=REPO, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})
    checks = [line for line in done.stdout.splitlines() if line.startswith("gpu_check:")]
    assert done.returncode == 0 and checks[-1] == "gpu_check: ok", done.stdout[-3000:] + done.stderr[-3000:]
    assert sum(": ok (" in line for line in checks) == 6          # 3 checks x ZeRO-2 and ZeRO-3
