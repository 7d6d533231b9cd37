"""The verifier's two paths, for tests that run on both: the pure-Python reference and the C helper."""

from __future__ import annotations

import shutil

import pytest

from distill_ray.verify import pool


@pytest.fixture(params=["python", "native"])
def mode(request, monkeypatch):
    """``python``: DISTILL_RAY_VERIFY_NATIVE=0; ``native``: the C helper (skipped without a C compiler)."""
    if request.param == "python":
        monkeypatch.setenv("DISTILL_RAY_VERIFY_NATIVE", "0")
    elif not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler: only the pure-Python path exists here")
    else:
        monkeypatch.delenv("DISTILL_RAY_VERIFY_NATIVE", raising=False)   # a run of the suite with it set to 0
    monkeypatch.setattr(pool, "_NATIVE", [])   # build (or not) again under this setting
    return request.param
