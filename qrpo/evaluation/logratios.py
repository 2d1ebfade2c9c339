"""log pi(y|x) and log pi_ref(y|x) of the policy's own samples, for the KL estimators.

Both are computed on the exact sampled token ids (prompt_ids, completion_ids), one model in memory
at a time.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from qrpo import models
from qrpo.training import logprobs

if TYPE_CHECKING:  # annotations only: the shard folder and the executor are imported where a step runs
    from qrpo.config.sections import ExecutorConfig
    from qrpo.store.shards import ArtifactRef, ShardFolder


def policy_and_ref_logps(policy_dir: Path, ref_dir: Path, samples: pa.Table, batch_size: int = 16,
                         precision: str = "fp32") -> pa.Table:
    """`samples` with two more columns: policy_logp and ref_logp (float64, summed over completion tokens),
    both in `precision` (qrpo.precision: the arithmetic the reference log-probs of training used)."""
    prompt_ids, completion_ids = samples.column("prompt_ids").to_pylist(), samples.column("completion_ids").to_pylist()
    for column, path in (("policy_logp", policy_dir), ("ref_logp", ref_dir)):
        model, tokenizer = models.load_policy(path)
        values = logprobs.batched_sequence_logps(model, prompt_ids, completion_ids, tokenizer.pad_token_id, batch_size, column,
                                                   precision=precision)
        samples = samples.append_column(column, pa.array(values))
        del model
    return samples


def policy_and_ref_logps_by_shard(executor: ExecutorConfig | None, policy: ArtifactRef, reference: ArtifactRef, samples: pa.Table,
                                  batch_size: int, precision: str, folder: ShardFolder) -> pa.Table:
    """`samples` with policy_logp and ref_logp (as `policy_and_ref_logps`), one model
    per pass over the shards, so a worker holds one model at a time."""
    for column, model in (("policy_logp", policy), ("ref_logp", reference)):
        values = logprobs.logps_by_shard(executor, "eval_logps", model, samples, {"completion_ids": column}, precision, folder, batch_size,
                       prefix=column)
        samples = samples.append_column(column, values.column(column).combine_chunks())
    return samples


def eval_logps(policy: "ArtifactRef", reference: "ArtifactRef", scored_by_seed: dict[str, pa.Table], batch_size: int,
               precision: str, out: Path, shards: "ShardFolder", executor: "ExecutorConfig | None" = None) -> dict:
    """The `eval_logps` step: the policy's scored eval samples of every seed in one table (a `seed` column)
    with log pi (the trained `policy`) and log pi_ref (the prepared `reference`), into `out/data.parquet`,
    computed shard by shard into `shards` wherever `executor` runs them; returns both means."""
    from qrpo.store.artifacts import write_table

    samples = pa.concat_tables([t.append_column("seed", pa.array([int(seed)] * t.num_rows, pa.int64()))
                                for seed, t in scored_by_seed.items()])
    table = policy_and_ref_logps_by_shard(executor, policy, reference, samples, batch_size, precision, shards)
    write_table(table, out / "data.parquet")
    return {"policy_logp_mean": float(np.mean(table.column("policy_logp").to_numpy())),
            "ref_logp_mean": float(np.mean(table.column("ref_logp").to_numpy()))}
