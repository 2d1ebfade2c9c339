"""The vLLM worker protocol, run for real (subprocess, Parquet files) against a stand-in `vllm` package
(tests/fixtures/fake_vllm) whose signatures are pinned to vLLM's documented API, so a worker that
passes a keyword or argument vLLM does not take fails here too; and against real vLLM where
$QRPO_VLLM_PYTHON names a python that has it (the stand-in's signatures checked against the real
ones, then, on a GPU: seed determinism, the prefix property, and vLLM's log-probs of the tokens it
sampled against transformers' log-probs of the same ids)."""

import ast
import importlib.util
import inspect
import json
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pyarrow as pa
import pytest

from qrpo.config.sections import ModelConfig, SamplerConfig
from qrpo.errors import InputError
from qrpo.sampling import SamplingParams, encode_prompts, load_tokenizer, row_seed, sample_table
from qrpo.sampling.vllm import WORKER, VLLMSampler

FAKE_VLLM = Path(__file__).resolve().parents[2] / "fixtures" / "fake_vllm"
PROMPTS = pa.table({"prompt_id": [f"p{i}" for i in range(3)], "prompt": [f"Question {i}?" for i in range(3)]})

# vLLM's documented offline API (the pins stated in the stand-in's docstring): vllm.SamplingParams fields
# present both in the v0.8.3 API docs and in vllm/sampling_params.py of post-0.11 main, with defaults
DOCUMENTED_SAMPLING_PARAMS = {
    "n": 1, "presence_penalty": 0.0, "frequency_penalty": 0.0, "repetition_penalty": 1.0, "temperature": 1.0,
    "top_p": 1.0, "top_k": 0, "min_p": 0.0, "seed": None, "stop": None, "stop_token_ids": None, "ignore_eos": False,
    "max_tokens": 16, "min_tokens": 0, "logprobs": None, "prompt_logprobs": None, "detokenize": True,
    "skip_special_tokens": True, "spaces_between_special_tokens": True, "include_stop_str_in_output": False,
    "logit_bias": None, "allowed_token_ids": None, "bad_words": None,
}
DOCUMENTED_GENERATE = {"prompts": "POSITIONAL_OR_KEYWORD", "sampling_params": "POSITIONAL_OR_KEYWORD",
                       "use_tqdm": "KEYWORD_ONLY", "lora_request": "KEYWORD_ONLY", "priority": "KEYWORD_ONLY"}
DOCUMENTED_LLM_INIT = ("tokenizer", "tokenizer_mode", "skip_tokenizer_init", "trust_remote_code", "tensor_parallel_size",
                       "dtype", "quantization", "revision", "tokenizer_revision", "seed", "gpu_memory_utilization",
                       "swap_space", "cpu_offload_gb", "enforce_eager", "disable_custom_all_reduce", "hf_token",
                       "hf_overrides", "mm_processor_kwargs", "compilation_config")  # keyword-only after `model`
DOCUMENTED_COMPLETION_OUTPUT = ("index", "text", "token_ids", "cumulative_logprob", "logprobs", "finish_reason", "stop_reason")
DOCUMENTED_REQUEST_OUTPUT = ("request_id", "prompt", "prompt_token_ids", "prompt_logprobs", "outputs", "finished")
DOCUMENTED_LOGPROB = ("logprob", "rank", "decoded_token")


def _stand_in():
    """The stand-in package, imported under another name (so it never shadows a real vllm here)."""
    spec = importlib.util.spec_from_file_location("fake_vllm_standin", FAKE_VLLM / "vllm" / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def test_the_stand_in_takes_exactly_vllms_documented_signatures():
    vllm = _stand_in()
    assert {f.name: f.default for f in fields(vllm.SamplingParams)} == DOCUMENTED_SAMPLING_PARAMS
    with pytest.raises(TypeError, match="unexpected keyword argument 'max_new_tokens'"):
        vllm.SamplingParams(max_new_tokens=8)  # HF's name, not vLLM's
    with pytest.raises(TypeError):
        vllm.SamplingParams(1)  # keyword-only: vLLM's positional field order is not an interface
    for bad, message in [({"top_p": 0.0}, "top_p must be in"), ({"n": 0}, "n must be at least 1"),
                         ({"max_tokens": 0}, "max_tokens must be at least 1"), ({"top_k": -2}, "top_k must be"),
                         ({"temperature": -1.0}, "temperature must be non-negative"),
                         ({"min_tokens": 5, "max_tokens": 4}, "min_tokens must be less than or equal to max_tokens")]:
        with pytest.raises(ValueError, match=message):
            vllm.SamplingParams(**bad)

    generate = inspect.signature(vllm.LLM.generate).parameters
    assert {k: v.kind.name for k, v in generate.items() if k != "self"} == DOCUMENTED_GENERATE
    init = inspect.signature(vllm.LLM.__init__).parameters
    assert init["model"].kind.name == "POSITIONAL_OR_KEYWORD"
    assert tuple(k for k, v in init.items() if v.kind.name == "KEYWORD_ONLY") == DOCUMENTED_LLM_INIT
    with pytest.raises(TypeError, match="EngineArgs.__init__\\(\\) got an unexpected keyword argument 'enable_prefix_cache'"):
        vllm.LLM("unused", enable_prefix_cache=True)  # refused before any model is loaded
    with pytest.raises(TypeError):
        vllm.LLM("unused", 2)  # tensor_parallel_size is keyword-only

    assert tuple(f.name for f in fields(vllm.CompletionOutput)) == DOCUMENTED_COMPLETION_OUTPUT
    assert tuple(f.name for f in fields(vllm.RequestOutput))[:6] == DOCUMENTED_REQUEST_OUTPUT
    assert tuple(f.name for f in fields(vllm.Logprob)) == DOCUMENTED_LOGPROB


def test_the_stand_in_generates_with_vllms_calling_convention(tiny_model_dir):
    vllm = _stand_in()
    llm = vllm.LLM(str(tiny_model_dir), seed=0)
    prompt = {"prompt_token_ids": [1, 2, 3]}
    with pytest.raises(TypeError):
        llm.generate([prompt], vllm.SamplingParams(max_tokens=3), False)  # use_tqdm is keyword-only
    with pytest.raises(TypeError, match="TokensPrompt"):
        llm.generate([{"prompt_ids": [1, 2, 3]}], vllm.SamplingParams(max_tokens=3), use_tqdm=False)
    with pytest.raises(ValueError, match="lengths of prompts and sampling_params must be the same"):
        llm.generate([prompt, prompt], [vllm.SamplingParams(max_tokens=3)], use_tqdm=False)
    params = vllm.SamplingParams(seed=5, max_tokens=4, logprobs=2, ignore_eos=True)
    (out,) = llm.generate([prompt], params, use_tqdm=False)
    (again,) = llm.generate(prompt, params, use_tqdm=False)  # a single prompt is accepted too
    assert out.prompt_token_ids == [1, 2, 3] and out.finished and len(out.outputs) == 1
    c = out.outputs[0]
    assert c.token_ids == again.outputs[0].token_ids and len(c.token_ids) == 4 and c.finish_reason == "length"
    assert len(c.logprobs) == 4 and all(t in position and len(position) <= 3 for t, position in zip(c.token_ids, c.logprobs))
    assert c.cumulative_logprob == pytest.approx(sum(p[t].logprob for t, p in zip(c.token_ids, c.logprobs)))
    assert llm.generate([prompt], vllm.SamplingParams(seed=5, max_tokens=4), use_tqdm=False)[0].outputs[0].logprobs is None


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
    assert set(calls[0]) - {"engine_args", "cuda_visible_devices", "ray_address"} == set(DOCUMENTED_SAMPLING_PARAMS)
    assert {(c["n"], c["temperature"], c["top_p"], c["top_k"], c["repetition_penalty"], c["max_tokens"]) for c in calls} == {(1, 1.0, 1.0, -1, 1.0, 6)}
    assert sorted(c["seed"] for c in calls) == sorted(row_seed(9, f"p{i}", k) for i in range(3) for k in range(4))
    assert calls[0]["engine_args"] == {"tensor_parallel_size": 1, "enable_prefix_caching": True}

    sampler, prompts = _sampler(tiny_model_dir, data_parallel_size=2)
    with sampler:
        together = sample_table(sampler, prompts, range(4), shard_prompts=3)
    assert together.to_pylist() == rows, "N=2 then 2..3 through one worker == N=4 at once through two"
    devices = {json.loads(line)["cuda_visible_devices"] for line in stand_in.read_text().splitlines()[12:]}
    assert devices == {"0", "1"}, "two data-parallel workers, one GPU each"


def test_vllms_own_ray_executor_settings_reach_the_engine_with_vllms_argument_names(tiny_model_dir, stand_in, monkeypatch):
    """sampler.pipeline_parallel_size / distributed_executor_backend go to vllm.LLM under EngineArgs' names (the stand-in
    refuses others, and backends outside vLLM's Literal); with the ray backend the worker gets RAY_ADDRESS (the cluster
    vLLM's ray.init joins) and no CUDA_VISIBLE_DEVICES split: Ray places vLLM's GPU workers, on any node."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    sampler, prompts = _sampler(tiny_model_dir, tensor_parallel_size=2, pipeline_parallel_size=2, distributed_executor_backend="ray",
                                ray_address="10.0.0.1:6379", data_parallel_size=2)
    with sampler:
        sample_table(sampler, prompts, range(1), shard_prompts=3)
    calls = [json.loads(line) for line in stand_in.read_text().splitlines()]
    assert {json.dumps(c["engine_args"], sort_keys=True) for c in calls} == {json.dumps(
        {"tensor_parallel_size": 2, "pipeline_parallel_size": 2, "distributed_executor_backend": "ray"}, sort_keys=True)}
    assert {(c["ray_address"], c["cuda_visible_devices"]) for c in calls} == {("10.0.0.1:6379", None)}
    sampler, prompts = _sampler(tiny_model_dir)  # the defaults add nothing to vLLM's own
    with sampler:
        sample_table(sampler, prompts, range(1), shard_prompts=3)
    assert json.loads(stand_in.read_text().splitlines()[-1])["engine_args"] == {"tensor_parallel_size": 1}
    with pytest.raises(InputError, match="sampler.distributed_executor_backend='rey' is not one of null, mp, ray, uni, external_launcher"):
        SamplerConfig(backend="vllm", distributed_executor_backend="rey").validate()


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


REAL_VLLM = _real_vllm_python()
needs_real_vllm = pytest.mark.skipif(
    REAL_VLLM is None, reason="real vLLM absent: set QRPO_VLLM_PYTHON to a python that imports vllm "
    f"(QRPO_VLLM_PYTHON={os.environ.get('QRPO_VLLM_PYTHON')!r})")
# head_dim 32 (vLLM's attention kernels refuse the head_dim 16 of tests/qrpo/conftest.py's TINY)
VLLM_TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
             "num_key_value_heads": 1, "max_position_embeddings": 256}
ENGINE_ARGS = {"enforce_eager": True, "dtype": "float32", "gpu_memory_utilization": 0.3, "max_model_len": 256}
LOGPROB_ATOL = 1e-3  # per token, float32 in both: vLLM's kernels vs transformers' eager attention
MAX_NEW = 8

_REAL_SIGNATURES = """
import dataclasses, inspect, json, sys
import vllm
from vllm.engine.arg_utils import EngineArgs
try:
    from vllm.logprobs import Logprob
except ImportError:  # before vllm/logprobs.py existed
    from vllm.sequence import Logprob
from vllm.outputs import CompletionOutput, RequestOutput
sp = vllm.SamplingParams
kinds = lambda f: {k: v.kind.name for k, v in inspect.signature(f).parameters.items()}
json.dump({"version": vllm.__version__,
           "sampling_params": {k: getattr(sp(), k) if not k.startswith("_") else None for k in sp.__struct_fields__},
           "llm_init": kinds(vllm.LLM.__init__), "generate": kinds(vllm.LLM.generate),
           "engine_args": [f.name for f in dataclasses.fields(EngineArgs)],
           "completion_output": [f.name for f in dataclasses.fields(CompletionOutput)],
           "request_output": list(kinds(RequestOutput.__init__)), "logprob": [f.name for f in dataclasses.fields(Logprob)]},
          open(sys.argv[1], "w"), default=repr)
"""

# vLLM itself, for the same rows the worker draws, with the log-probs of the sampled tokens
_REAL_LOGPROBS = """
import json, sys
from vllm import LLM, SamplingParams
spec = json.load(open(sys.argv[1]))
llm = LLM(model=spec["model"], **spec["engine_args"])
params = [SamplingParams(n=1, seed=seed, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=spec["max_tokens"], logprobs=0)
          for seed in spec["seeds"]]
outputs = llm.generate([{"prompt_token_ids": ids} for ids in spec["prompts"]], params, use_tqdm=False)
json.dump([{"token_ids": list(c.token_ids), "logprobs": [position[t].logprob for t, position in zip(c.token_ids, c.logprobs)],
            "cumulative_logprob": c.cumulative_logprob} for c in (o.outputs[0] for o in outputs)], open(sys.argv[2], "w"))
"""


@needs_real_vllm
def test_the_stand_ins_signatures_are_the_real_vllms(tmp_path):
    """Where vLLM is installed (no GPU needed): every name the stand-in accepts, the real one accepts,
    with the same parameter kinds and defaults, and every output attribute it has, the real one has."""
    out = tmp_path / "signatures.json"
    subprocess.run([REAL_VLLM, "-c", _REAL_SIGNATURES, str(out)], check=True, cwd=tmp_path, timeout=600)
    real, vllm = json.loads(out.read_text()), _stand_in()
    for name, default in DOCUMENTED_SAMPLING_PARAMS.items():
        assert name in real["sampling_params"], (real["version"], name)
        assert real["sampling_params"][name] in (default, -1 if name == "top_k" else default), (real["version"], name)
    assert {k: real["generate"].get(k) for k in DOCUMENTED_GENERATE} == DOCUMENTED_GENERATE, real["version"]
    assert all(real["llm_init"].get(k) == "KEYWORD_ONLY" for k in DOCUMENTED_LLM_INIT), (real["version"], real["llm_init"])
    assert vllm.ENGINE_ARGS <= set(real["engine_args"]), (real["version"], sorted(vllm.ENGINE_ARGS - set(real["engine_args"])))
    assert set(DOCUMENTED_COMPLETION_OUTPUT) <= set(real["completion_output"]), real["version"]
    assert set(DOCUMENTED_REQUEST_OUTPUT) <= set(real["request_output"]), real["version"]
    assert set(DOCUMENTED_LOGPROB) <= set(real["logprob"]), real["version"]


@pytest.fixture(scope="module")
def vllm_model_dir(tmp_path_factory):
    from qrpo.models import prepare_model

    out = tmp_path_factory.mktemp("vllm_tiny")
    prepare_model(ModelConfig(name="tiny", source="config", _target_="qrpo.models.TinyModel.load", architecture=VLLM_TINY, seed=0), out)
    return out


@pytest.fixture(scope="module")
def real_samples(vllm_model_dir):
    """The real worker, twice (two engines), sampler seed 1: N=4 then N=4 again in one engine; N=2 then
    indices 2..3 in a fresh one."""
    tokenizer = load_tokenizer(vllm_model_dir)
    prompts = encode_prompts(tokenizer, PROMPTS)

    def session(*index_ranges):
        cfg = SamplerConfig(backend="vllm", vllm_python=REAL_VLLM, vllm_engine_args=ENGINE_ARGS)
        with VLLMSampler(vllm_model_dir, tokenizer, SamplingParams(max_new_tokens=MAX_NEW, seed=1), cfg) as sampler:
            return [sample_table(sampler, prompts, r, shard_prompts=2).to_pylist() for r in index_ranges]

    four, four_again = session(range(4), range(4))
    two, rest = session(range(2), range(2, 4))
    return {"prompts": prompts, "four": four, "four_again": four_again, "two": two, "rest": rest}


def _key(rows):
    return sorted((r["prompt_id"], r["sample_index"], tuple(r["completion_ids"]), r["finish_reason"]) for r in rows)


@pytest.mark.slow
@pytest.mark.gpu
@needs_real_vllm
def test_real_vllm_same_seed_same_completions_and_the_prefix_property(real_samples):
    four = real_samples["four"]
    assert len(four) == 12 and {r["finish_reason"] for r in four} <= {"stop", "length"}
    assert all(r["num_tokens"] == len(r["completion_ids"]) <= MAX_NEW for r in four)
    assert _key(real_samples["four_again"]) == _key(four), "same seeds, same engine: the same completions"
    assert _key(real_samples["two"] + real_samples["rest"]) == _key(four), \
        "a fresh engine, same seed, N=2 then extended by 2..3: the same completions as N=4 at once"
    assert _key(real_samples["two"]) == _key([r for r in four if r["sample_index"] < 2]), "the first 2 of N=4 are the N=2"
    assert len({tuple(r["completion_ids"]) for r in four}) > 1, "each row's own seed: not one completion repeated"


@pytest.mark.slow
@pytest.mark.gpu
@needs_real_vllm
def test_real_vllm_samples_the_worker_tokens_with_the_log_probs_transformers_gives_them(real_samples, vllm_model_dir, tmp_path):
    """vLLM, asked for the worker's rows (same seeds, same engine arguments) with logprobs=0, returns
    the worker's token ids, and its log-prob of each sampled token equals transformers' log-prob of
    that id after the same prefix, within LOGPROB_ATOL."""
    import torch
    from transformers import AutoModelForCausalLM

    rows = [r for r in real_samples["four"] if r["sample_index"] < 2]
    spec = {"model": str(vllm_model_dir), "engine_args": ENGINE_ARGS, "max_tokens": MAX_NEW,
            "prompts": [r["prompt_ids"] for r in rows], "seeds": [row_seed(1, r["prompt_id"], r["sample_index"]) for r in rows]}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    subprocess.run([REAL_VLLM, "-c", _REAL_LOGPROBS, str(tmp_path / "spec.json"), str(tmp_path / "out.json")],
                   check=True, cwd=tmp_path, timeout=1800)
    vllm_out = json.loads((tmp_path / "out.json").read_text())
    assert [o["token_ids"] for o in vllm_out] == [r["completion_ids"] for r in rows], "the worker returned vLLM's samples"

    model = AutoModelForCausalLM.from_pretrained(vllm_model_dir, dtype=torch.float32).eval()
    worst = 0.0
    with torch.no_grad():
        for row, out in zip(rows, vllm_out):
            prompt, completion = row["prompt_ids"], out["token_ids"]
            logits = model(torch.tensor([prompt + completion])).logits[0, len(prompt) - 1:-1].float()
            hf = logits.log_softmax(-1).gather(1, torch.tensor(completion)[:, None])[:, 0]
            diff = (hf - torch.tensor(out["logprobs"], dtype=torch.float32)).abs().max().item()
            worst = max(worst, diff)
            assert diff <= LOGPROB_ATOL, (row["prompt_id"], row["sample_index"], hf.tolist(), out["logprobs"])
            if out["cumulative_logprob"] is not None:
                assert out["cumulative_logprob"] == pytest.approx(sum(out["logprobs"]), abs=1e-4)
    print(f"largest |vLLM - transformers| log-prob over {len(rows)} completions: {worst:.2e}")
