"""The shard functions of the four data-parallel steps, and the calls the pipeline's tasks make.

Each shard function is a small picklable object holding what its shards read (a table, artifact
references, typed config sections) and computing one shard of rows with the same library function the
step used before in one piece (`score_samples`, `batched_sequence_logps`, `sample_table`), the model taken
from the worker's cache (`qrpo.executor.cache`). Models are addressed by `ArtifactRef`, so a Ray worker
on another node loads them from its own view of the artifact store.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from qrpo.config.sections import ExecutorConfig, RewardConfig, SamplerConfig, composed
from qrpo.executor import cache
from qrpo.executor.base import executor_for, run_table_shards
from qrpo.store.shards import ArtifactRef, ShardFolder


# --- score ------------------------------------------------------------------------------------------


@dataclass
class ScoreShard:
    reward: RewardConfig
    samples: pa.Table  # prompt_id, completion
    prompts: pa.Table

    def __call__(self, rows: range) -> pa.Table:
        from qrpo.rewards import build_reward, score_samples

        key = "reward:" + json.dumps(composed(self.reward), sort_keys=True, default=str)
        with cache.hold(key, lambda: build_reward(self.reward)) as reward:
            values = score_samples(reward, self.samples.slice(rows.start, len(rows)), self.prompts)
        return pa.table({"reward": pa.array(np.asarray(values, dtype=np.float64))})


def score(executor: ExecutorConfig | None, reward: RewardConfig, samples: pa.Table, prompts: pa.Table,
          folder: ShardFolder) -> np.ndarray:
    """The reward of every sample (float64 [N]), shard by shard (`executor.shard_rows` samples each)."""
    shard_rows = executor.shard_rows if executor is not None else ExecutorConfig().shard_rows
    table = run_table_shards(samples.num_rows, shard_rows, ScoreShard(reward, samples.select(["prompt_id", "completion"]), prompts),
                             folder, executor_for(executor, "score"), name="score")
    return table.column("reward").to_numpy()


# --- ref_logps, eval_logps --------------------------------------------------------------------------


@dataclass
class LogpShard:
    """log pi(y|x) under one model of the completions in `columns` (completion column -> output column)."""

    model: ArtifactRef
    table: pa.Table  # prompt_ids and the completion columns
    columns: dict[str, str]
    precision: str
    batch_size: int = 16
    desc: str = "log-probs"

    def __call__(self, rows: range) -> pa.Table:
        from qrpo import models
        from qrpo.training import logprobs

        part = self.table.slice(rows.start, len(rows))
        prompts = part.column("prompt_ids").to_pylist()
        out = {}
        with cache.hold(f"policy:{self.model.root}/{self.model.step}/{self.model.key}/{self.model.subdir}",
                        lambda: models.load_policy(self.model.path)) as (model, tokenizer):
            for source, column in self.columns.items():
                out[column] = pa.array(logprobs.batched_sequence_logps(
                    model, prompts, part.column(source).to_pylist(), tokenizer.pad_token_id, self.batch_size,
                    f"{self.desc} {column}", precision=self.precision), pa.float64())
        return pa.table(out)


def logps(executor: ExecutorConfig | None, step: str, model: ArtifactRef, table: pa.Table, columns: dict[str, str],
          precision: str, folder: ShardFolder, batch_size: int = 16, prefix: str = "shard") -> pa.Table:
    """The log-prob columns (`columns`: completion column -> output column) of every row of `table`, shard by shard,
    one column after the other (a pair table: the chosen side, then the rejected side).

    The shards are cut from the rows in length order (stable, as `batched_sequence_logps` orders them), so
    with `shard_rows` a multiple of `batch_size` every shard's batches are the batches the whole column would
    have had: a row's value (which the padding and the other rows of its batch move in the last bits) is the
    same for any such shard size, and the same as computed in one piece."""
    shard_rows = executor.shard_rows if executor is not None else ExecutorConfig().shard_rows
    prompt_lengths = pc.list_value_length(table.column("prompt_ids")).to_numpy()
    out = {}
    for source, column in columns.items():
        order = np.argsort(prompt_lengths + pc.list_value_length(table.column(source)).to_numpy(), kind="stable")
        needed = table.select(["prompt_ids", source]).take(order)
        shard_prefix = prefix if len(columns) == 1 else f"{prefix}-{column}"
        ordered = run_table_shards(table.num_rows, shard_rows, LogpShard(model, needed, {source: column}, precision, batch_size, step),
                                   folder, executor_for(executor, step), prefix=shard_prefix, name=step)
        out[column] = ordered.column(column).take(np.argsort(order))  # back to the table's row order
    return pa.table(out)


def policy_and_ref_logps(executor: ExecutorConfig | None, policy: ArtifactRef, reference: ArtifactRef, samples: pa.Table,
                         batch_size: int, precision: str, folder: ShardFolder) -> pa.Table:
    """`samples` with policy_logp and ref_logp (as qrpo.evaluation.logratios.policy_and_ref_logps), one model
    per pass over the shards, so a worker holds one model at a time."""
    for column, model in (("policy_logp", policy), ("ref_logp", reference)):
        values = logps(executor, "eval_logps", model, samples, {"completion_ids": column}, precision, folder, batch_size,
                       prefix=column)
        samples = samples.append_column(column, values.column(column).combine_chunks())
    return samples


# --- sample ------------------------------------------------------------------------------------------


class _LazyPrompts(Sequence):
    """The prompt table's rows, chat-templated only when a shard reads them (a shard encodes its own prompts)."""

    def __init__(self, tokenizer, prompts: pa.Table):
        self.tokenizer, self.prompts, self.done = tokenizer, prompts, {}

    def __len__(self):
        return self.prompts.num_rows

    def __getitem__(self, i):
        from qrpo.sampling import encode_prompts

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
        from qrpo.sampling import SamplingParams, build_sampler, load_tokenizer, sample_table
        from qrpo.sampling.base import shard_file, shard_ranges

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
    from qrpo.sampling.base import shard_file, shard_ranges

    plan = shard_ranges(prompts.num_rows, sampler.shard_prompts)
    missing = [s for s, rows in enumerate(plan) if not folder.exists(shard_file(folder.local, rows, indices).name)]
    if missing:
        executor_for(executor, "sample").map(SampleShard(sampler, model, asdict(params), prompts, indices, folder), missing,
                                             name=name)
    folder.pull()
