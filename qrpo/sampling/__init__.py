"""Sampling completions: one contract (`base`), three backends (`hf`, `vllm`, `openai`, each built by the class
method `sampler._target_` names, conf/sampler/*.yaml; `sampler.backend` says which keys apply), reuse of
sampled pools across runs (`pool`), and the `sample` step (`sample`)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import pyarrow as pa

from qrpo.config.binding import build
from qrpo.config.sections import ExecutorConfig, SamplerConfig, composed
from qrpo.store.artifacts import Artifact, ArtifactStore
from qrpo.sampling.base import (
    SAMPLES_SCHEMA, Completion, Prompt, Sampler, SamplingParams, encode_prompts, row_seed, sample_table, shard_file, shard_ranges,
)
from qrpo.sampling import pool
from qrpo.sampling.hf import HFSampler, sample_completions
from qrpo.store.shards import ArtifactRef, ShardFolder

__all__ = ["SAMPLES_SCHEMA", "Completion", "HFSampler", "Prompt", "Sampler", "SamplingParams", "build_sampler",
           "encode_prompts", "load_tokenizer", "pool", "row_seed", "sample", "sample_completions", "sample_split", "sample_table",
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
    """The sampler `sampler._target_` names, for the model in `model_path`."""
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


class _LazyPrompts(Sequence):
    """The prompt table's rows, chat-templated only when a shard reads them (a shard encodes its own prompts)."""

    def __init__(self, tokenizer, prompts: pa.Table):
        self.tokenizer, self.prompts, self.done = tokenizer, prompts, {}

    def __len__(self):
        return self.prompts.num_rows

    def __getitem__(self, i):
        if i not in self.done:
            self.done[i] = encode_prompts(self.tokenizer, self.prompts.slice(i, 1))[0]
        return self.done[i]


@dataclass
class SampleShard:
    """One shard of a `sample` step: `sample_table` for that shard, checkpointed under sample_table's own
    file name (the same files an in-process run writes and resumes from)."""

    sampler: SamplerConfig
    model: ArtifactRef
    params: dict
    prompts: pa.Table
    indices: range
    folder: ShardFolder

    def __call__(self, shard: int) -> None:
        from qrpo.executor import cache

        params = SamplingParams(**self.params)

        def load():
            path = self.model.path
            tokenizer = load_tokenizer(path)
            return tokenizer, build_sampler(self.sampler, path, params, tokenizer)

        key = "sampler:" + json.dumps([composed(self.sampler), vars(self.model), self.params], sort_keys=True, default=str)
        file = shard_file(self.folder.local, shard_ranges(self.prompts.num_rows, self.sampler.shard_prompts)[shard], self.indices)
        if self.folder.exists(file.name):
            return
        with cache.hold(key, load) as (tokenizer, sampler):
            sample_table(sampler, _LazyPrompts(tokenizer, self.prompts), self.indices, shard_prompts=self.sampler.shard_prompts,
                         checkpoint_dir=self.folder.local, shards=[shard], desc=f"shard {shard}")
        self.folder.publish(file.name)


def sample_shards(executor: ExecutorConfig, sampler: SamplerConfig, model: ArtifactRef, params, prompts: pa.Table,
                  indices: range, folder: ShardFolder, name: str = "sample") -> None:
    """Compute the missing shards of a `sample` step on the executor; afterwards `sample_split` over the same
    folder reads them all (no model loaded)."""
    from qrpo.executor.choice import executor_for

    plan = shard_ranges(prompts.num_rows, sampler.shard_prompts)
    missing = [s for s, rows in enumerate(plan) if not folder.exists(shard_file(folder.local, rows, indices).name)]
    if missing:
        executor_for(executor, "sample").map(SampleShard(sampler, model, asdict(params), prompts, indices, folder), missing,
                                             name=name)
    folder.pull()


def sample(cfg: SamplerConfig, store: ArtifactStore, source: dict, dataset_key: str, prompts: pa.Table, split: str, num_samples: int,
           params: SamplingParams, map_shards: Callable[[range, Path, int], None] | None = None, desc: str = "sampling",
           executor: ExecutorConfig | None = None) -> tuple[Artifact, bool]:
    """The `sample` step: `num_samples` completions of every prompt of `prompts` (the `split` rows of the
    prompt artifact `dataset_key`) from the model `source` ({step, key, subdir}: the prepared model or a
    trained policy), reusing any sampled pool that covers them (`pool.sample_with_reuse`); returns (the
    `sample` artifact, whether anything was sampled). The train split draws at least
    `cfg.min_samples_per_prompt`. The shards still missing are sampled first where `executor` runs them
    (executor=ray: as Ray tasks), or by `map_shards(indices, partial, shards)` (e.g. as mapped Prefect tasks);
    they land in the step's partial folder as checkpoints, which the sampling here then only reads."""
    model = ArtifactRef.of(store, source["step"], source["key"], source.get("subdir", ""))

    def sample_range(indices: range, partial: Path) -> pa.Table:
        if executor is not None and executor.runs("sample") == "ray":
            sample_shards(executor, cfg, model, params, prompts, indices, ShardFolder.of(store, partial), name=desc)
        elif map_shards is not None:
            map_shards(indices, partial, len(shard_ranges(prompts.num_rows, cfg.shard_prompts)))
        return sample_split(cfg, model.path, params, prompts, indices, partial, desc=desc)

    key = pool.pool_key(source, dataset_key, split, params, cfg.drop_truncated)
    return pool.sample_with_reuse(
        store, key, num_samples, prompts.column("prompt_id").to_pylist(), sample_range,
        at_least=cfg.min_samples_per_prompt if split == "train" else 0, drop_truncated=cfg.drop_truncated,
        covering=split == "train" and source["step"] == "prepare_model",  # training_data takes the first K + M itself
    )
