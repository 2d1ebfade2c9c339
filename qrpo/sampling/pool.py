"""Reuse of samples across runs: a *pool* is every `sample` artifact that differs only in N.

A pool key hashes everything that determines a completion except the count: the model (or trained
policy) artifact, the prompt table and split, the seed, max_new_tokens, temperature, top_p and
drop_truncated. The artifact holding N samples per prompt is `sample/<pool key>-n<N:05d>/`.
Because completions are a prefix property (qrpo/sampling/base.py), a request for N

- finds `<pool>-n<N>` itself: nothing to do;
- else finds a finished `<pool>-n<N'>` with N' >= N: writes `<pool>-n<N>` from its first N samples
  per prompt, without sampling;
- else finds the largest `<pool>-n<N''>` with N'' < N: samples indices N''..N-1 only and writes all N
  (extends, never redraws);
- else samples 0..N-1.

When it has to sample, it draws up to max(N, at_least) (`sampler.min_samples_per_prompt`), so that a
sweep over the number of reference samples samples its largest need once. Returns (artifact, sampled).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from qrpo.store.artifacts import Artifact, ArtifactStore, artifact_key, write_table
from qrpo.sampling.base import SamplingParams

STEP = "sample"
VERSION = 3  # 3: hf bf16 samples made batch-invariant (padded_width), were batch-dependent

# sample_range(indices, partial_dir) -> samples table of those indices for every prompt of the split
SampleRange = Callable[[range, object], pa.Table]


def pool_key(source: dict, dataset_key: str, split: str, params: SamplingParams, drop_truncated: bool) -> str:
    config = {"split": split, "seed": params.seed, "max_new_tokens": params.max_new_tokens,
              "temperature": params.temperature, "top_p": params.top_p, "drop_truncated": drop_truncated,
              "precision": params.precision}
    return artifact_key(STEP, VERSION, config, {"source": f"{source['step']}/{source['key']}/{source.get('subdir', '')}",
                                                "dataset": dataset_key})


def samples_key(pool: str, n: int) -> str:
    return f"{pool}-n{n:05d}"


def available(store: ArtifactStore, pool: str) -> dict[int, str]:
    """{N: key} of the finished artifacts of this pool."""
    found = {}
    for key in store.keys(STEP, f"{pool}-n"):
        suffix = key[len(pool) + 2:]
        if suffix.isdigit():
            found[int(suffix)] = key
    return found


def prefix(table: pa.Table, n: int) -> pa.Table:
    """The first n samples of every prompt."""
    return table.filter(pc.less(table.column("sample_index"), n))


def _ordered(table: pa.Table, prompt_order: list[str]) -> pa.Table:
    """Rows by prompt (in prompt-table order), then sample index."""
    position = {p: i for i, p in enumerate(prompt_order)}
    keys = np.array([position[p] for p in table.column("prompt_id").to_pylist()], dtype=np.int64)
    order = np.lexsort((table.column("sample_index").to_numpy(), keys))
    return table.take(pa.array(order))


def metrics(table: pa.Table, num_prompts: int, n: int, drop_truncated: bool) -> dict:
    """completions, truncated (hit max_new_tokens, kept or not), dropped, length_mean, finished_fraction."""
    truncated_kept = int(pc.sum(pc.invert(table.column("finished"))).as_py() or 0)
    dropped = num_prompts * n - table.num_rows if drop_truncated else 0
    lengths = table.column("num_tokens").to_numpy()
    return {"completions": table.num_rows, "samples_per_prompt": n, "truncated": truncated_kept + dropped,
            "dropped": dropped, "length_mean": float(lengths.mean()) if len(lengths) else 0.0,
            "finished_fraction": float(np.mean(table.column("finished").to_numpy(zero_copy_only=False))) if len(lengths) else 0.0}


def sample_with_reuse(
    store: ArtifactStore,
    pool: str,
    n: int,
    prompt_ids: list[str],
    sample_range: SampleRange,
    *,
    at_least: int = 0,
    drop_truncated: bool = False,
    covering: bool = False,
) -> tuple[Artifact, bool]:
    """The `sample` artifact with n samples per prompt (see the module docstring); (artifact, sampled).

    `covering=True` accepts the pool's largest artifact with at least n samples per prompt as it is,
    for a consumer that takes its own prefix (the train split: the training_data step reads the first
    K + M samples): a sweep over M then samples *and scores* one artifact, its largest need."""
    found = available(store, pool)
    if covering and found and max(found) >= n:
        return store.require(STEP, found[max(found)]), False
    if n in found:
        return store.require(STEP, found[n]), False
    larger = [m for m in found if m > n]
    if larger:
        source = store.require(STEP, found[min(larger)])
        return _write(store, pool, n, prefix(source.table(), n), len(prompt_ids), drop_truncated, derived_from=source.key), False

    target = max(n, at_least)
    smaller = [m for m in found if m < n]
    start = max(smaller) if smaller else 0
    key = samples_key(pool, target)
    new = sample_range(range(start, target), store.partial_dir(STEP, key))
    if drop_truncated:
        new = new.filter(new.column("finished"))
    if start:
        new = pa.concat_tables([store.require(STEP, found[start]).table(), new])
    table = _ordered(new, prompt_ids)
    artifact = _write(store, pool, target, table, len(prompt_ids), drop_truncated,
                      extended_from=found[start] if start else None)
    if target != n and not covering:
        artifact = _write(store, pool, n, prefix(table, n), len(prompt_ids), drop_truncated, derived_from=artifact.key)
    return artifact, True


def _write(store: ArtifactStore, pool: str, n: int, table: pa.Table, num_prompts: int, drop_truncated: bool,
           **provenance) -> Artifact:
    key = samples_key(pool, n)
    metadata = {"version": VERSION, "pool": pool, "num_samples": n,
                "metrics": metrics(table, num_prompts, n, drop_truncated),
                **{k: v for k, v in provenance.items() if v is not None}}
    with store.write(STEP, key, metadata) as out:
        write_table(table, out / "data.parquet")
    return store.require(STEP, key)
