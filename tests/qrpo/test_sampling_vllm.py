"""The vLLM worker protocol, run for real (subprocess, Parquet files) against a stand-in `vllm` package
(tests/fixtures/fake_vllm); and against real vLLM where $QRPO_VLLM_PYTHON names a python that has it."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from qrpo.config import SamplerConfig
from qrpo.sampling import SamplingParams, encode_prompts, load_tokenizer, row_seed, sample_table
from qrpo.sampling.vllm import WORKER, VLLMSampler

FAKE_VLLM = Path(__file__).resolve().parents[1] / "fixtures" / "fake_vllm"
PROMPTS = pa.table({"prompt_id": [f"p{i}" for i in range(3)], "prompt": [f"Question {i}?" for i in range(3)]})


@pytest.fixture
def stand_in(monkeypatch, tmp_path):
    """The worker's environment: only the stand-in vllm on its path (not this repository)."""
    monkeypatch.setenv("PYTHONPATH", str(FAKE_VLLM))
    log = tmp_path / "vllm_calls.jsonl"
    monkeypatch.setenv("FAKE_VLLM_LOG", str(log))
    return log


def _sampler(model_dir, **cfg):
    tokenizer = load_tokenizer(model_dir)
    cfg = SamplerConfig(backend="vllm", vllm_python=sys.executable, **cfg)
    return VLLMSampler(model_dir, tokenizer, SamplingParams(max_new_tokens=6, seed=9), cfg), encode_prompts(tokenizer, PROMPTS)


def test_the_worker_imports_only_the_standard_library_pyarrow_and_vllm():
    tree = ast.parse(WORKER.read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported - set(sys.stdlib_module_names) == {"pyarrow", "vllm"}


def test_protocol_against_the_stand_in_n_samples_exact_parameters_extension_and_data_parallel(tiny_model_dir, stand_in):
    sampler, prompts = _sampler(tiny_model_dir, vllm_engine_args={"enable_prefix_caching": True})
    with sampler:
        first = sample_table(sampler, prompts, range(2), shard_prompts=2)
        rest = sample_table(sampler, prompts, range(2, 4), shard_prompts=2)  # the same worker, a second request
    table = pa.concat_tables([first, rest]).sort_by([("prompt_id", "ascending"), ("sample_index", "ascending")])
    rows = table.to_pylist()
    assert [(r["prompt_id"], r["sample_index"]) for r in rows] == [(f"p{i}", k) for i in range(3) for k in range(4)]
    assert all(r["finish_reason"] in ("stop", "length") and r["num_tokens"] == len(r["completion_ids"]) <= 6 for r in rows)
    calls = [json.loads(line) for line in stand_in.read_text().splitlines()]
    assert len(calls) == 12
    assert {(c["n"], c["temperature"], c["top_p"], c["top_k"], c["repetition_penalty"], c["max_tokens"]) for c in calls} == {(1, 1.0, 1.0, -1, 1.0, 6)}
    assert sorted(c["seed"] for c in calls) == sorted(row_seed(9, f"p{i}", k) for i in range(3) for k in range(4))
    assert calls[0]["engine_args"] == {"tensor_parallel_size": 1, "enable_prefix_caching": True}

    sampler, prompts = _sampler(tiny_model_dir, data_parallel_size=2)
    with sampler:
        together = sample_table(sampler, prompts, range(4), shard_prompts=3)
    assert together.to_pylist() == rows, "N=2 then 2..3 through one worker == N=4 at once through two"
    devices = {json.loads(line)["cuda_visible_devices"] for line in stand_in.read_text().splitlines()[12:]}
    assert devices == {"0", "1"}, "two data-parallel workers, one GPU each"


def test_a_crashing_worker_raises_with_its_error(tiny_model_dir, stand_in, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM_CRASH", "1")
    sampler, prompts = _sampler(tiny_model_dir)
    with pytest.raises(RuntimeError, match=r"vLLM worker .* exited with code 1:(.|\n)*CUDA out of memory \(stand-in crash\)"):
        with sampler:
            sample_table(sampler, prompts, range(2), shard_prompts=2)


def _real_vllm_python():
    python = os.environ.get("QRPO_VLLM_PYTHON")
    if not python:
        return None
    ok = subprocess.run([python, "-c", "import vllm"], capture_output=True).returncode == 0
    return python if ok else None


@pytest.mark.slow
@pytest.mark.gpu
@pytest.mark.skipif(_real_vllm_python() is None, reason="real vLLM absent: set QRPO_VLLM_PYTHON to a python that imports vllm")
def test_real_vllm_worker_samples_n_per_prompt(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    cfg = SamplerConfig(backend="vllm", vllm_python=_real_vllm_python(), vllm_engine_args={"enforce_eager": True})
    with VLLMSampler(tiny_model_dir, tokenizer, SamplingParams(max_new_tokens=6, seed=1), cfg) as sampler:
        table = sample_table(sampler, encode_prompts(tokenizer, PROMPTS), range(3), shard_prompts=2)
    assert table.num_rows == 9 and set(table.column("finish_reason").to_pylist()) <= {"stop", "length"}
