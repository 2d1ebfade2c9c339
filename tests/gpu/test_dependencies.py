"""The GPU checks run where only torch, transformers, accelerate, peft, pyarrow and numpy are installed."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# installed here, absent from a typical GPU image: the checks must neither import nor need them
ABSENT_ON_GPU_IMAGES = ["prefect", "hydra", "omegaconf", "mlflow", "scipy", "datasets", "matplotlib", "alpaca_eval", "vllm"]


@pytest.mark.slow
def test_the_gpu_checks_pass_with_the_orchestration_and_science_stacks_unimportable():
    """Runs tests/gpu/test_devices.py in a child where importing any of ABSENT_ON_GPU_IMAGES raises
    ImportError (sys.modules[name] = None), without third-party pytest plugins (Hydra ships one)."""
    here = Path(__file__).parent
    child = textwrap.dedent(f"""
        import sys
        for name in {ABSENT_ON_GPU_IMAGES!r}:
            sys.modules[name] = None
        import pytest
        sys.exit(pytest.main(["-q", "-x", "-p", "no:cacheprovider", {str(here / "test_devices.py")!r}]))
    """)
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "PYTHONPATH": str(here.parents[1])}
    run = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "error" not in run.stdout.lower()
