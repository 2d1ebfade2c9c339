"""Sampling completions: one contract (`base`), three backends (`hf`, `vllm`, `openai`, chosen by
`sampler.backend` and built by the class method `sampler._target_` names, conf/sampler/*.yaml), and
reuse of sampled pools across runs (`pool`)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pyarrow as pa

from qrpo.config.binding import build
from qrpo.config.sections import SamplerConfig
from qrpo.sampling.base import (
    SAMPLES_SCHEMA, Completion, Prompt, Sampler, SamplingParams, encode_prompts, row_seed, sample_table, shard_ranges,
)
from qrpo.sampling import pool
from qrpo.sampling.hf import HFSampler, sample_completions

__all__ = ["SAMPLES_SCHEMA", "Completion", "HFSampler", "Prompt", "Sampler", "SamplingParams", "build_sampler",
           "encode_prompts", "load_tokenizer", "pool", "row_seed", "sample_completions", "sample_split", "sample_table",
           "shard_ranges"]


def load_tokenizer(model_path: Path):
    """The policy's tokenizer (its chat template encodes the prompts for every backend)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def build_sampler(cfg: SamplerConfig, model_path: Path, params: SamplingParams, tokenizer=None) -> Sampler:
    """The sampler `sampler._target_` names (built-in: SAMPLER_TARGETS[sampler.backend]) for the model in `model_path`."""
    return build("sampler", cfg, Path(model_path), params, tokenizer or load_tokenizer(model_path))


def sample_split(
    cfg: SamplerConfig,
    model_path: Path,
    params: SamplingParams,
    prompts: pa.Table,
    indices: range,
    checkpoint_dir: Path | None = None,
    shards: Sequence[int] | None = None,
    desc: str = "sampling",
) -> pa.Table:
    """Samples `indices` of every prompt in the prompt table with the configured backend, checkpointed
    per shard; the model is loaded only if some shard is missing."""
    tokenizer = load_tokenizer(model_path)
    return sample_table(lambda: build_sampler(cfg, model_path, params, tokenizer), encode_prompts(tokenizer, prompts),
                        indices, shard_prompts=cfg.shard_prompts, checkpoint_dir=checkpoint_dir, shards=shards, desc=desc)
