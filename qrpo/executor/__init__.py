"""Where the shards of the data-parallel steps run: `executor=local|ray`.

Four steps are data parallel over rows: `sample` (prompts), `score`, `ref_logps` and `eval_logps` (samples or
training examples). Each of them now goes through one mechanism (`qrpo.executor.base.run_table_shards`,
and for sampling `qrpo.sampling.sample_shards` over `sample_table`'s own shard files; each family's shard
function lives beside the step it serves: `qrpo.rewards.ScoreShard`, `qrpo.training.logprobs.LogpShard`,
`qrpo.sampling.SampleShard`):

1. the rows are cut into shards by a fixed shard size (`executor.shard_rows`, `sampler.shard_prompts` for
   sampling), never by the number of workers, so no row depends on how many workers ran or where;
2. each missing shard is computed by a function of its rows and written atomically into the step's
   partial folder of the artifact store (`qrpo.store.shards.ShardFolder`); a shard already there is
   skipped, which is how a step that died resumes;
3. the shards are read back and concatenated in shard order: the step's artifact is then built as before
   (same keys, same manifest, same MLflow metrics).

Where step 2 runs is the executor:

- `LocalExecutor` (`executor=local`, the default): in the step's own process, shard after shard.
- `RayExecutor` (`executor=ray`, `qrpo/executor/ray.py`): one Ray task per missing shard, submitted from
  inside the step with `num_cpus`/`num_gpus` from `executor.cpus_per_shard`/`executor.gpus_per_shard` and
  `max_retries=executor.max_retries`, so a shard whose worker process or node died is redone on another
  (the rename in step 2 makes a half-written shard invisible and a shard done twice identical). A worker
  process keeps the model (sampler, reward model, policy) it loaded for the next shard of the step
  (`qrpo.executor.cache`), and drops it `executor.keep_model_s` seconds after its last one.

**Ray directly inside the step, not prefect-ray's task runner.** Prefect stays the orchestrator: the flow
run, its task graph, the artifact cache ("Cached" steps), the dispatch of steps to work pools and MLflow
are the same with `local` and `ray`; only the inside of a heavy step fans out. prefect-ray's
`RayTaskRunner` is a flow-wide task runner: it would send every task of the pipeline (light ones too)
to Ray, or need a subflow per step just to change runners, and each shard would be a Prefect task run
(API round trips and a database row per shard, thousands for a large sweep). Its retries are Prefect's,
not Ray's lineage-based re-execution when a node dies, and it has no notion of per-task GPUs or of a
model kept loaded in a worker process. It would also add a package pinned to Prefect releases (this
project pins Prefect 3.8) and put Prefect into a mechanism the library (`qrpo/`, no Prefect) owns.
Ray directly gives the shard its resources, retries on a lost worker, and reuses worker processes; the
step's Prefect task still succeeds or fails as one unit. `sampler.map_shards` (shards as mapped Prefect
tasks in one process) stays for local use.

The artifact store must be one store for the driver and every Ray worker: a local path on one machine (or
one volume mounted at the same path on every node), or S3 (`artifact_root=s3://...`): a worker resolves
models and shard folders by (root, step, key), never by the driver's paths (`qrpo.store.shards`).
"""

from __future__ import annotations

from qrpo.executor.base import Executor, LocalExecutor, ShardTask, run_table_shards
from qrpo.executor.choice import executor_for

__all__ = ["Executor", "LocalExecutor", "ShardTask", "executor_for", "run_table_shards"]
