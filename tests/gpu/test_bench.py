"""`make gpu-check`'s throughput line: the benchmark runs (CPU smoke size) and reports what it says."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_the_gpu_benchmark_reports_training_and_sampling_throughput_in_bf16():
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--small", "--device", "cpu"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    training, sampling = (json.loads(line) for line in run.stdout.splitlines())
    assert training["measure"] == "training" and training["precision"] == "bf16" and training["timed_steps"] == 3
    assert training["tokens_per_s"] > 0 and training["parameters"] > 10**6
    # 4 prompts x 2 samples x up to 16 new tokens
    assert sampling["measure"] == "sampling" and sampling["sequences"] == 8 and 8 <= sampling["new_tokens"] <= 128


def test_the_gpu_benchmark_refuses_a_missing_cuda_device_with_one_clear_line():
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "no CUDA device here" in run.stderr
