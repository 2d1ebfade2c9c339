"""precision=auto: bf16 where the hardware has bf16 matrix units, fp32 elsewhere, an explicit choice wins;
the choice reaches every step (sampling included) and every artifact key holds the resolved value."""

from pathlib import Path

import pyarrow as pa
import pytest
import torch

from flows.config import compose_config
from qrpo import precision
from qrpo.config.sections import typed_sections
from qrpo.sampling.base import SamplingParams, encode_prompts, sample_table
from qrpo.sampling.hf import HFSampler
from qrpo.sampling.pool import pool_key


@pytest.fixture
def cpu_bf16(monkeypatch):
    """Pretend the processor has (True) or lacks (False) bf16 matrix instructions."""
    def set_to(value: bool):
        monkeypatch.setattr(precision, "cpu_has_bf16_matmul", lambda: value)
    return set_to


@pytest.mark.parametrize("has_bf16, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_is_bf16_exactly_where_the_cpu_has_bf16_matmul(cpu_bf16, has_bf16, expected):
    cpu_bf16(has_bf16)
    assert precision.resolve("auto", "cpu") == expected


@pytest.mark.parametrize("has_bf16", [True, False])
def test_an_explicit_choice_wins_over_the_hardware(cpu_bf16, has_bf16):
    cpu_bf16(has_bf16)
    assert (precision.resolve("bf16", "cpu"), precision.resolve("fp32", "cpu"), precision.resolve("no", "cpu")) == ("bf16", "fp32", "fp32")


def test_auto_on_cuda_asks_the_gpu_and_on_other_devices_stays_fp32(monkeypatch, cpu_bf16):
    cpu_bf16(True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for supported, expected in ((True, "bf16"), (False, "fp32")):  # Ampere and later / older GPUs
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, s=supported, **k: s)
        assert precision.resolve("auto", "cuda") == expected
        assert precision.resolve("auto") == expected, "no device: CUDA when there is one"
    assert precision.resolve("auto", "meta") == "fp32"
    with pytest.raises(ValueError, match="precision='fp16' is not one of auto, bf16, fp32"):
        precision.resolve("fp16", "cpu")


def test_the_cpu_check_agrees_with_the_processor_flags():
    """torch's feature checks against the kernel's own list: AMX-BF16 or AVX512-BF16 <=> bf16 matmul."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo to compare with (not Linux)")
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.read_text().splitlines() if line.startswith("flags")), None)
    if flags is None:
        pytest.skip("/proc/cpuinfo lists no flags (not x86)")
    precision.cpu_has_bf16_matmul.cache_clear()
    assert precision.cpu_has_bf16_matmul() == bool({"amx_bf16", "avx512_bf16"} & set(flags))


def test_autocast_is_bf16_only_for_bf16():
    with precision.autocast("bf16", "cpu"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with precision.autocast("fp32", "cpu"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


@pytest.mark.parametrize("overrides, sampler, train", [
    ([], "auto", "auto"),
    (["precision=fp32"], "fp32", "fp32"),
    (["precision=bf16"], "bf16", "bf16"),
    (["precision=bf16", "train.mixed_precision=fp32"], "bf16", "fp32"),  # a per-step override wins
    (["sampler.precision=fp32"], "fp32", "auto"),
])
def test_the_run_precision_reaches_the_sampler_and_training_and_a_step_can_override_it(overrides, sampler, train):
    sections = typed_sections(compose_config(["experiment=smoke", *overrides]))
    assert (sections.sampler.precision, sections.train.mixed_precision) == (sampler, train)


def test_the_samples_key_holds_the_resolved_precision():
    source = {"step": "model", "key": "m"}
    keys = {p: pool_key(source, "d", "train", SamplingParams(max_new_tokens=4, precision=p), False) for p in ("fp32", "bf16")}
    assert keys["fp32"] != keys["bf16"]


class _HeadDtypes:
    """The dtypes the LM head produced while the context was open."""

    def __init__(self, model):
        self.model, self.dtypes = model, set()

    def __enter__(self):
        self.handle = self.model.lm_head.register_forward_hook(lambda m, i, out: self.dtypes.add(out.dtype))
        return self

    def __exit__(self, *exc):
        self.handle.remove()


PROMPTS = pa.table({"prompt_id": [f"p{i}" for i in range(4)], "prompt": [f"Count to {i}." + " Go." * i for i in range(4)]})


@pytest.mark.parametrize("choice, dtype", [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_sampling_runs_in_the_chosen_precision_over_fp32_weights_and_stays_batch_invariant(tiny_policy, choice, dtype):
    model, tokenizer = tiny_policy
    prompts = encode_prompts(tokenizer, PROMPTS)
    params = SamplingParams(max_new_tokens=10, seed=3, precision=choice)

    def rows(batch_size):
        table = sample_table(HFSampler(model, tokenizer, params, batch_size), prompts, range(3), shard_prompts=4)
        return sorted(table.select(["prompt_id", "sample_index", "completion_ids"]).to_pylist(),
                      key=lambda r: (r["prompt_id"], r["sample_index"]))

    with _HeadDtypes(model) as head:
        alone, together = rows(1), rows(12)
    assert head.dtypes == {dtype}
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert alone == together, "a completion must not depend on its batch neighbours in either precision"
