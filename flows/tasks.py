"""One Prefect task per pipeline step: load the inputs, call one `qrpo` function, save the artifact.

The step contract: a task takes the typed config sections it reads (qrpo.config.sections: `sampler:
SamplerConfig`, `train: TrainConfig`, ...; never the whole config), the artifact store, its inputs (artifact
keys) and the MLflow `run_id`. Unless the step's artifact exists already, it loads its inputs from the store
and calls the step's library function once, which writes the artifact's files into the folder it is given
and returns its metrics; the store commits the folder under a key that hashes the step, its version, the config the step reads (`composed`: as the
config composed it) and its inputs' keys, so the key moves only when something the step reads changes.

One name per step everywhere: the task, the artifact folder (`$QRPO_HOME/artifacts/<step>/`), the library
function, the MLflow metric prefix (`<step>/`, or `<step>/<instance>/` for a step that runs several times in
a run: `sample/train/`, `score/eval_reference/`) and the key in the run's summary. Evaluation metrics keep
their documented names: `eval/...` (the reporting half) and `eval_selection/...`.

Each task returns a Prefect state whose data is the artifact key; a step whose artifact already exists
finishes as "Cached" without loading a model. Every task also logs the artifact's metrics to the run,
cached or not, so each run records the full set.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from prefect import task, unmapped
from prefect.cache_policies import NONE
from prefect.states import Completed

from flows.termination import stop_if_terminated
from qrpo import data, evaluation, models, precision, rewards, sampling
from qrpo.config.binding import build_algorithm, declares
from qrpo.config.sections import (
    AlgorithmConfig, DatasetConfig, DistributedConfig, EvalConfig, ExecutorConfig, ModelConfig, QuantileConfig, RegimeConfig,
    RewardConfig, SamplerConfig, TrainConfig, composed,
)
from qrpo.data import regimes
from qrpo.evaluation import alpaca_eval as alpaca_eval_lib
from qrpo.evaluation import gain_in_words, logratios
from qrpo.evaluation import report as report_lib
from qrpo.store.artifacts import Artifact, ArtifactStore
from qrpo.store.shards import ArtifactRef, ShardFolder
from qrpo.store.tracking import RunLogger
from qrpo.training import launch, logprobs, trainer
from qrpo.training.ray_train import distributed_key

LOCAL = ExecutorConfig()  # a heavy step called without the run's executor runs its shards in its own process


def _finish(artifact: Artifact, cached: bool, run_id: str, prefix: str, images: bool = False):
    logger = RunLogger(run_id)
    logger.metrics(artifact.manifest.get("metrics", {}), prefix=prefix)
    if images:  # the artifact's plots, beside its metrics in MLflow
        for image in artifact.path.glob("*.png"):
            logger.client.log_artifact(run_id, str(image), prefix.rstrip("/"))
    stop_if_terminated()  # the step's artifact is complete: a SIGTERM whose exception was dropped stops here
    return Completed(name="Cached" if cached else "Completed", data=artifact.key, message=str(artifact.path))


def _step(instance: str | None, step: str) -> str:
    """The step's name in metric prefixes and the summary: `sample/train`, or `train` for a single-instance step."""
    return f"{step}/{instance}" if instance else step


@task(cache_policy=NONE)
def prepare_model(model: ModelConfig, store: ArtifactStore, run_id: str):
    artifact, cached = store.get_or_build("prepare_model", 3, composed(model), {}, lambda out, _: models.prepare_model(model, out))
    return _finish(artifact, cached, run_id, "prepare_model/")


@task(cache_policy=NONE)
def load_dataset(dataset: DatasetConfig, store: ArtifactStore, run_id: str):
    artifact, cached = store.get_or_build("load_dataset", data.LOAD_DATASET_VERSION, data.load_dataset_request(dataset), {},
                                          lambda out, _: data.load_dataset(dataset, out))
    return _finish(artifact, cached, run_id, "load_dataset/")


@task(cache_policy=NONE, task_run_name="sample/{instance}")
def sample(sampler: SamplerConfig, store: ArtifactStore, source: dict, dataset_key: str, split: str, num_samples: int, seed: int,
           max_new_tokens: int, run_id: str, instance: str, prompts_step: str = "load_dataset", executor: ExecutorConfig = LOCAL):
    """`num_samples` completions per prompt of `split` from `source` (the prepared model, or a trained policy),
    reusing any sampled pool that covers them (qrpo/sampling/pool.py): "Cached" when nothing was sampled.
    The prompts are the `prompts_step` artifact `dataset_key` (`load_dataset`, or `load_alpaca_eval`)."""
    params = sampling.SamplingParams(max_new_tokens=max_new_tokens, seed=seed, temperature=sampler.temperature, top_p=sampler.top_p,
                                     precision=precision.resolve(sampler.precision))
    model_path = ArtifactRef.of(store, source["step"], source["key"], source.get("subdir", "")).path
    prompts = data.split(store.require(prompts_step, dataset_key).table(), split)

    def map_shards(indices: range, partial: Path, shards: int) -> None:  # sampler.map_shards: shards as mapped Prefect tasks
        sample_shard.map(unmapped(sampler), unmapped(store), unmapped(str(model_path)), unmapped(prompts_step), unmapped(dataset_key),
                         unmapped(split), unmapped(dataclasses.asdict(params)), unmapped([indices.start, indices.stop]),
                         unmapped(str(partial)), list(range(shards))).result()

    artifact, sampled = sampling.sample(sampler, store, source, dataset_key, prompts, split, num_samples, params,
                                        map_shards=map_shards if sampler.map_shards else None, desc=f"sample/{instance}",
                                        executor=executor)
    return _finish(artifact, not sampled, run_id, f"sample/{instance}/")


@task(cache_policy=NONE)
def sample_shard(sampler: SamplerConfig, store: ArtifactStore, model_path: str, prompts_step: str, dataset_key: str, split: str,
                 params: dict, indices: list[int], partial: str, shard: int):
    """One shard of a `sample` step (sampler.map_shards): loads the model once, writes the shard's checkpoint."""
    prompts = data.split(store.require(prompts_step, dataset_key).table(), split)
    sampling.sample_split(sampler, Path(model_path), sampling.SamplingParams(**params), prompts, range(*indices), Path(partial),
                          shards=[shard], desc=f"shard {shard}")


@task(cache_policy=NONE, task_run_name="score/{instance}")
def score(reward: RewardConfig, store: ArtifactStore, samples_key: str, dataset_key: str, run_id: str, instance: str,
          samples_step: str = "sample", prompts_step: str = "load_dataset", executor: ExecutorConfig = LOCAL):
    """The `reward` of every sample of a `sample` (or `offline_samples`) artifact."""
    artifact, cached = store.get_or_build("score", 2, composed(reward), {samples_step: samples_key, prompts_step: dataset_key},
                                          lambda out, partial: rewards.score(reward, store.require(samples_step, samples_key).table(),
                                                                             store.require(prompts_step, dataset_key).table(), out,
                                                                             ShardFolder.of(store, partial), executor))
    return _finish(artifact, cached, run_id, f"score/{instance}/")


@task(cache_policy=NONE)
def offline_samples(regime: RegimeConfig, store: ArtifactStore, model_key: str, dataset_key: str, samples_key: str, run_id: str):
    """regime=offline: the dataset's own chosen/rejected completions, tokenised by the policy, as samples to score."""
    def build(out: Path, _) -> dict:
        prompts = data.split(store.require("load_dataset", dataset_key).table(), "train")
        return regimes.offline_samples(regime, prompts, store.require("sample", samples_key).table(),
                                       store.require("prepare_model", model_key).path, out)

    subset = {"offline": [regime.chosen_column, regime.rejected_column]}
    inputs = {"prepare_model": model_key, "load_dataset": dataset_key, "sample": samples_key}
    artifact, cached = store.get_or_build("offline_samples", 2, subset, inputs, build)
    return _finish(artifact, cached, run_id, "offline_samples/")


@task(cache_policy=NONE)
def training_data(sampler: SamplerConfig, regime: RegimeConfig, quantiles: QuantileConfig, store: ArtifactStore, scored_key: str,
                  run_id: str, offline_scored_key: str | None = None):
    """The training table of the configured regime (pairs, or single completions) from scored samples."""
    def build(out: Path, _) -> dict:
        offline = store.require("score", offline_scored_key).table() if offline_scored_key else None
        return regimes.training_data(regime, sampler.num_train_samples, sampler.num_ref_samples, quantiles.ties,
                                     store.require("score", scored_key).table(), offline, out)

    subset = {"regime": composed(regime), "num_train_samples": sampler.num_train_samples,
              "num_ref_samples": sampler.num_ref_samples, "ties": quantiles.ties}
    inputs = {"score": scored_key, **({"offline_score": offline_scored_key} if offline_scored_key else {})}
    artifact, cached = store.get_or_build("training_data", 3, subset, inputs, build)
    return _finish(artifact, cached, run_id, "training_data/", images=True)


@task(cache_policy=NONE)
def ref_logps(train: TrainConfig, store: ArtifactStore, model_key: str, training_data_key: str, run_id: str,
              executor: ExecutorConfig = LOCAL):
    """log pi_ref of every completion of the training table, in the trainer's own arithmetic."""
    arithmetic = trainer.mixed_precision(train)
    artifact, cached = store.get_or_build("ref_logps", 4, {"precision": arithmetic},
                                          {"prepare_model": model_key, "training_data": training_data_key},
                                          lambda out, partial: logprobs.ref_logps(
                                              ArtifactRef.of(store, "prepare_model", model_key),
                                              store.require("training_data", training_data_key).table(), arithmetic, out,
                                              ShardFolder.of(store, partial), executor))
    return _finish(artifact, cached, run_id, "ref_logps/")


@task(cache_policy=NONE)
def train(algorithm: AlgorithmConfig, train: TrainConfig, distributed: DistributedConfig, store: ArtifactStore, model_key: str,
          table_step: str, table_key: str, run_id: str, executor: ExecutorConfig = LOCAL):
    """Train the policy on the training table (`ref_logps`, or `training_data` for reference-free methods), in
    this process, in the processes `distributed` launches, or on Ray Train's workers; resumes from its checkpoints."""
    logger = RunLogger(run_id)
    live = set()  # steps logged as they happened; a resumed or launched run logs the rest at the end

    def log_step(step: int, record: dict) -> None:
        logger.history([record], prefix="train/")
        live.add(step)

    def build(out: Path, partial: Path) -> dict:
        return launch.train(algorithm, train, distributed, ArtifactRef.of(store, "prepare_model", model_key),
                             ArtifactRef.of(store, table_step, table_key), out, ShardFolder.of(store, partial), log_step, executor)

    subset = {"algorithm": composed(algorithm), "train": composed(train), "distributed": distributed_key(distributed),
              "precision": trainer.mixed_precision(train)}  # resolved: an "auto" run's key says which arithmetic it was
    artifact, cached = store.get_or_build("train", 4, subset, {"prepare_model": model_key, table_step: table_key}, build)
    logger.history([r for r in artifact.table("history").to_pylist() if r["step"] not in live], prefix="train/")
    method = build_algorithm(algorithm)
    if hasattr(method, "optimum"):  # QRPO: the beta used (maybe from a KL budget) and its optimum pi*
        logger.metrics(method.optimum(), prefix="algorithm/")
    return _finish(artifact, cached, run_id, "train/")


@task(cache_policy=NONE)
def eval_logps(evals: EvalConfig, train: TrainConfig, store: ArtifactStore, model_key: str, train_key: str, scored_by_seed: dict,
               run_id: str, executor: ExecutorConfig = LOCAL):
    """The policy's scored eval samples (all seeds, one table with a `seed` column) with log pi and log pi_ref,
    in the arithmetic of training's reference log-probs (`train.mixed_precision`)."""
    arithmetic = trainer.mixed_precision(train)
    def build(out: Path, partial: Path) -> dict:
        tables = {seed: store.require("score", key).table() for seed, key in scored_by_seed.items()}
        return logratios.eval_logps(ArtifactRef.of(store, "train", train_key, "policy"), ArtifactRef.of(store, "prepare_model", model_key),
                                    tables, evals.batch_size, arithmetic, out, ShardFolder.of(store, partial), executor)

    inputs = {"prepare_model": model_key, "train": train_key, **{f"score_seed{seed}": key for seed, key in scored_by_seed.items()}}
    artifact, cached = store.get_or_build("eval_logps", 3, {"precision": arithmetic}, inputs, build)
    return _finish(artifact, cached, run_id, "eval_logps/")


@task(cache_policy=NONE)
def evaluate(evals: EvalConfig, reward: RewardConfig, store: ArtifactStore, logps_key: str, eval_ref_key: str, dataset_key: str,
             run_id: str):
    """Metrics of the policy's samples against the reference's on the same eval prompts (eval/..., and
    eval_selection/... for the selection half; LeetCode pass rates when the reward declares `yields_pass_rates`)."""
    pass_rates = declares("reward", reward, "yields_pass_rates")

    def build(out: Path, _) -> dict:
        problems = store.require("load_dataset", dataset_key).table() if pass_rates else None
        return evaluation.evaluate(store.require("eval_logps", logps_key).table(), store.require("score", eval_ref_key).table(),
                                     evals.split_seed, evals.lc_fit_on, problems, out)

    subset = {k: composed(evals).get(k) for k in ("split_seed", "lc_fit_on")} | {"pass_rates": pass_rates}
    inputs = {"eval_logps": logps_key, "score_eval_reference": eval_ref_key, "load_dataset": dataset_key}
    artifact, cached = store.get_or_build("evaluate", 5, subset, inputs, build)
    return _finish(artifact, cached, run_id, "")


@task(cache_policy=NONE)
def load_alpaca_eval(evals: EvalConfig, store: ArtifactStore, run_id: str):
    """AlpacaEval's instructions and baseline outputs as a prompt table (the `sample` step reads it)."""
    cfg = evals.alpaca
    path = Path(cfg.instructions).expanduser()
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else cfg.instructions  # a missing file: InputError below
    artifact, cached = store.get_or_build("load_alpaca_eval", 2, {"alpaca_eval": digest, "max_instances": cfg.max_instances}, {},
                                          lambda out, _: alpaca_eval_lib.load_alpaca_eval(cfg, out))
    return _finish(artifact, cached, run_id, "load_alpaca_eval/")


@task(cache_policy=NONE)
def alpaca_eval(evals: EvalConfig, store: ArtifactStore, samples_key: str, prompts_key: str, run_id: str):
    """The judge's verdicts on the policy's AlpacaEval outputs: eval/alpaca_eval_lc_win_rate, eval/alpaca_eval_win_rate."""
    cfg = evals.alpaca
    subset = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("enabled", "max_new_tokens", "seed")}
    artifact, cached = store.get_or_build("alpaca_eval", 2, subset, {"sample": samples_key, "load_alpaca_eval": prompts_key},
                                          lambda out, _: alpaca_eval_lib.alpaca_eval(store.require("load_alpaca_eval", prompts_key).table(),
                                                                                     store.require("sample", samples_key).table(), cfg, out))
    return _finish(artifact, cached, run_id, "")


@task(cache_policy=NONE)
def report(algorithm: AlgorithmConfig, model: ModelConfig, dataset: DatasetConfig, reward: RewardConfig, store: ArtifactStore,
           train_key: str, evaluate_key: str, eval_ref_key: str, run_id: str, alpaca_key: str | None = None) -> dict:
    """Plots, a summary table and the per-prompt means (an artifact like any step's, so an identical re-run draws
    nothing), logged to the MLflow run under report/; returns every evaluation metric (eval/..., eval_selection/...)."""
    evaluated = store.require("evaluate", evaluate_key)
    metrics = dict(evaluated.manifest["metrics"])
    inputs = {"train": train_key, "evaluate": evaluate_key, "score": eval_ref_key}
    if alpaca_key:
        metrics.update(store.require("alpaca_eval", alpaca_key).manifest["metrics"])
        inputs["alpaca_eval"] = alpaca_key
    reporting = {k.removeprefix("eval/"): v for k, v in metrics.items() if k.startswith("eval/")}
    facts = {"model": model.name, "dataset": dataset.name, "reward": reward.name, "train artifact": store.url_of("train", train_key),
             "evaluate artifact": store.url_of("evaluate", evaluate_key), "reward gain (reporting half)": gain_in_words(reporting)}
    artifact, _ = store.get_or_build("report", 1, {"label": algorithm.label, **facts}, inputs,
                                     lambda out, _: report_lib.report(algorithm.label, facts, metrics,
                                                                      store.require("train", train_key).table("history"),
                                                                      evaluated.table(), store.require("score", eval_ref_key).table(), out))
    RunLogger(run_id).artifact_files(artifact.path, "report")
    return metrics
