"""One Prefect task per pipeline step: load inputs, call one `qrpo` function, save the artifact.

A task receives the typed config sections it reads (qrpo.config.sections: `sampler: SamplerConfig`, `train: TrainConfig`,
`algorithm: AlgorithmConfig`, ...), never the whole config: the flow composes and validates the config once
and builds every section there (`flows.validate.validate` returns them). Then the artifact store, then its
inputs (artifact keys, numbers) and the MLflow `run_id`. An artifact key hashes a section as the config
composed it (`qrpo.config.sections.composed`), so it moves only when a value the step reads changes.

Each task returns a Prefect state whose data is the artifact key; a step whose artifact already
exists finishes as "Cached" without loading a model. Every task also logs the artifact's metrics to
the pipeline's MLflow run, cached or not, so each run records the full set.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from prefect import task, unmapped
from prefect.cache_policies import NONE
from prefect.states import Completed
from transformers import AutoTokenizer

from flows.termination import stop_if_terminated
from qrpo import data, evaluation, models, precision, sampling
from qrpo.data import regimes as training_data_lib
from qrpo.evaluation import report
from qrpo.training import logprobs, trainer
from qrpo.store.artifacts import Artifact, ArtifactStore, write_table
from qrpo.config.binding import build_algorithm, cache_section, declares, locate  # noqa: F401  (tasks.build_algorithm: the pipeline)
from qrpo.config.sections import (
    AlgorithmConfig, DatasetConfig, DistributedConfig, EvalConfig, ModelConfig, QuantileConfig, RegimeConfig, RewardConfig,
    SamplerConfig, TrainConfig, algorithm_section, composed,
)
from qrpo.config.sections import ExecutorConfig  # issue 20: where the shards of the data-parallel steps run
from qrpo.executor import steps as sharded  # issue 20: sample, score, ref_logps, eval_logps shard by shard (local or Ray)
from qrpo.store.shards import ArtifactRef, ShardFolder  # issue 20
LOCAL = ExecutorConfig()  # issue 20: a task called without an executor runs its shards in its own process
from qrpo.training.distributed import launch_training
from qrpo.training.ray_train import distributed_key  # issue 20: distributed.launcher enters the train key only when not accelerate
from qrpo.errors import InputError
from qrpo.evaluation import alpaca_eval as alpaca_eval_lib
from qrpo.evaluation import paired
from qrpo.evaluation.logratios import policy_and_ref_logps
from qrpo.rewards import build_reward, score_samples
from qrpo.store.tracking import RunLogger


def _finish(artifact: Artifact, cached: bool, run_id: str, prefix: str):
    RunLogger(run_id).metrics(artifact.manifest.get("metrics", {}), prefix=prefix)
    stop_if_terminated()  # the step's artifact is complete: a SIGTERM whose exception was dropped stops here
    return Completed(name="Cached" if cached else "Completed", data=artifact.key, message=str(artifact.path))


@task(cache_policy=NONE)
def prepare_model(model: ModelConfig, store: ArtifactStore, run_id: str):
    artifact, cached = store.get_or_build(
        "model", 2, cache_section("model", composed(model)), {}, lambda out, _: models.prepare_model(model, out)
    )
    return _finish(artifact, cached, run_id, "model/")


@task(cache_policy=NONE)
def load_dataset(dataset: DatasetConfig, store: ArtifactStore, run_id: str):
    digest = data.fingerprint(dataset)  # the data, not its path, is the key

    def build(out, _):
        table = data.load_prompts(dataset)
        write_table(table, out / "data.parquet")
        splits = table.column("split").to_pylist()
        return {"train_prompts": splits.count("train"), "eval_prompts": splits.count("eval")}

    subset = {**composed(dataset), "path": None, "data_files": None, "sha256": digest}
    artifact, cached = store.get_or_build("dataset", 2, subset, {}, build)
    return _finish(artifact, cached, run_id, "dataset/")


@task(cache_policy=NONE)
def sample(sampler: SamplerConfig, store: ArtifactStore, source: dict, dataset_key: str, split: str, num_samples: int, seed: int,
           max_new_tokens: int, run_id: str, name: str, executor: ExecutorConfig = LOCAL):
    """`num_samples` completions per prompt of `split` from `source` (the model artifact, or a trained
    policy), reusing any sampled pool that covers them (qrpo/sampling/pool.py): "Cached" when nothing
    was sampled. The train step draws at least `sampler.min_samples_per_prompt`."""
    params = sampling.SamplingParams(max_new_tokens=max_new_tokens, seed=seed, temperature=sampler.temperature, top_p=sampler.top_p,
                                     precision=precision.resolve(sampler.precision))
    model_path = store.require(source["step"], source["key"]).path / source.get("subdir", "")
    prompts = data.split(store.require("dataset", dataset_key).table(), split)

    def sample_range(indices, partial):
        if executor.runs("sample") == "ray":  # issue 20: the missing shards as Ray tasks; sample_split below reads them all
            sharded.sample_shards(executor, sampler, ArtifactRef.of(store, source["step"], source["key"], source.get("subdir", "")),
                                  params, prompts, indices, ShardFolder.of(store, partial), name=name)
        elif sampler.map_shards:
            shards = range(len(sampling.shard_ranges(prompts.num_rows, sampler.shard_prompts)))
            sample_shard.map(unmapped(sampler), unmapped(store), unmapped(str(model_path)), unmapped(dataset_key), unmapped(split),
                             unmapped(dataclasses.asdict(params)), unmapped([indices.start, indices.stop]),
                             unmapped(str(partial)), list(shards)).result()
        return sampling.sample_split(sampler, model_path, params, prompts, indices, partial, desc=name)

    pool = sampling.pool.pool_key(source, dataset_key, split, params, sampler.drop_truncated)
    artifact, sampled = sampling.pool.sample_with_reuse(
        store, pool, num_samples, prompts.column("prompt_id").to_pylist(), sample_range,
        at_least=sampler.min_samples_per_prompt if split == "train" else 0, drop_truncated=sampler.drop_truncated,
        covering=split == "train" and source["step"] == "model",  # training_data takes the first K + M itself
    )
    return _finish(artifact, not sampled, run_id, f"{name}/")


@task(cache_policy=NONE)
def sample_shard(sampler: SamplerConfig, store: ArtifactStore, model_path: str, dataset_key: str, split: str, params: dict,
                 indices: list[int], partial: str, shard: int):
    """One shard of a `sample` step (sampler.map_shards): loads the model once, writes the shard's checkpoint."""
    prompts = data.split(store.require("dataset", dataset_key).table(), split)
    sampling.sample_split(sampler, Path(model_path), sampling.SamplingParams(**params), prompts, range(*indices), Path(partial),
                          shards=[shard], desc=f"shard {shard}")


@task(cache_policy=NONE)
def score(reward: RewardConfig, store: ArtifactStore, samples_key: str, dataset_key: str, split: str, run_id: str,
          name: str | None = None, executor: ExecutorConfig = LOCAL):

    def build(out, partial):
        samples = store.require("samples", samples_key).table()
        rewards = sharded.score(executor, reward, samples, store.require("dataset", dataset_key).table(),  # issue 20: shards
                                ShardFolder.of(store, partial))
        write_table(samples.append_column("reward", pa.array(rewards)), out / "data.parquet")
        return {"reward_mean": float(rewards.mean()), "reward_std": float(rewards.std())}

    artifact, cached = store.get_or_build("rewards", 1, cache_section("reward", composed(reward)), {"samples": samples_key, "dataset": dataset_key}, build)
    return _finish(artifact, cached, run_id, f"{name or 'rewards_' + split}/")


@task(cache_policy=NONE)
def offline_samples(regime: RegimeConfig, store: ArtifactStore, model_key: str, dataset_key: str, train_samples_key: str,
                    run_id: str):
    """regime=offline: the dataset's own chosen/rejected completions, tokenised by the policy, as samples to score."""

    def build(out, _):
        tokenizer = AutoTokenizer.from_pretrained(store.require("model", model_key).path)
        samples = store.require("samples", train_samples_key).table()
        prompt_ids = dict(zip(samples.column("prompt_id").to_pylist(), samples.column("prompt_ids").to_pylist()))
        prompts = data.split(store.require("dataset", dataset_key).table(), "train")
        table = training_data_lib.offline_completions(
            prompts, prompt_ids, lambda text: tokenizer(text, add_special_tokens=False)["input_ids"],
            regime.chosen_column, regime.rejected_column, tokenizer.eos_token_id)
        write_table(table, out / "data.parquet")
        return {"completions": table.num_rows, "length_mean": float(np.mean(table.column("num_tokens").to_numpy()))}

    subset = {"offline": [regime.chosen_column, regime.rejected_column]}
    inputs = {"model": model_key, "dataset": dataset_key, "samples": train_samples_key}
    artifact, cached = store.get_or_build("samples", 1, subset, inputs, build)
    return _finish(artifact, cached, run_id, "offline_samples/")


@task(cache_policy=NONE)
def training_data(sampler: SamplerConfig, regime: RegimeConfig, quantiles: QuantileConfig, store: ArtifactStore, scored_key: str,
                  run_id: str, offline_scored_key: str | None = None):
    """The training table of the configured regime (pairs, or single completions) from scored samples."""
    ties = quantiles.ties

    def build(out, _):
        offline = training_data_lib.offline_pairs(store.require("rewards", offline_scored_key).table()) if offline_scored_key else None
        table, stats = training_data_lib.build_training_data(
            store.require("rewards", scored_key).table(), regime, sampler.num_train_samples, sampler.num_ref_samples, ties, offline)
        write_table(table, out / "data.parquet")
        return stats

    subset = {"regime": composed(regime), "num_train_samples": sampler.num_train_samples,
              "num_ref_samples": sampler.num_ref_samples, "ties": ties}
    inputs = {"rewards": scored_key, **({"offline_rewards": offline_scored_key} if offline_scored_key else {})}
    artifact, cached = store.get_or_build("training_data", 2, subset, inputs, build)
    with tempfile.TemporaryDirectory() as tmp:
        report.plot_training_quantiles(artifact.manifest["metrics"], Path(tmp) / "training_quantiles.png", regime.name)
        RunLogger(run_id).artifacts(Path(tmp), "training_data")
    return _finish(artifact, cached, run_id, "training_data/")


@task(cache_policy=NONE)
def ref_logps(train: TrainConfig, store: ArtifactStore, model_key: str, training_data_key: str, run_id: str,
              executor: ExecutorConfig = LOCAL):
    """log pi_ref of every completion of the training table, with the trainer's own log-prob function."""
    arithmetic = trainer.mixed_precision(train)

    def build(out, partial):
        table = store.require("training_data", training_data_key).table()
        sides = ("chosen", "rejected") if "chosen_ids" in table.column_names else ("",)
        columns = {f"{side}_ids" if side else "completion_ids": f"{side}_ref_logp" if side else "ref_logp" for side in sides}
        values = sharded.logps(executor, "ref_logps", ArtifactRef.of(store, "model", model_key), table, columns,  # issue 20: shards
                               arithmetic, ShardFolder.of(store, partial))
        metrics = {}
        for column in columns.values():
            table = table.append_column(column, values.column(column).combine_chunks())
            metrics[f"{column}_mean"] = float(np.mean(values.column(column).to_numpy()))
        write_table(table, out / "data.parquet")
        return metrics

    artifact, cached = store.get_or_build("ref_logps", 3, {"precision": arithmetic},
                                          {"model": model_key, "training_data": training_data_key}, build)
    return _finish(artifact, cached, run_id, "ref_logps/")


@task(cache_policy=NONE)
def train(algorithm: AlgorithmConfig, train: TrainConfig, distributed: DistributedConfig, store: ArtifactStore, model_key: str,
          table_step: str, table_key: str, run_id: str, executor: ExecutorConfig = LOCAL):
    """Train the policy on the training table (`ref_logps`, or `training_data` for reference-free methods),
    in this process or under `accelerate launch` with the configured topology; resumes from its checkpoints."""
    method = build_algorithm(algorithm)
    logger = RunLogger(run_id)

    def build(out, partial):
        model_dir, table = store.require("model", model_key).path, store.require(table_step, table_key)
        if distributed.launcher == "ray":  # issue 20: Ray Train's TorchTrainer on the cluster of executor.address
            from qrpo.training.ray_train import train_with_ray

            history = train_with_ray(distributed, executor, ArtifactRef.of(store, "model", model_key), ArtifactRef.of(store, table_step, table_key),
                                     composed(algorithm), composed(train), out, ShardFolder.of(store, partial))
        elif distributed.launches:
            history = launch_training(distributed, model_dir, table.path / "data.parquet", composed(algorithm),
                                      composed(train), out, checkpoint_dir=partial / "checkpoints")
        else:
            model, tokenizer = models.load_policy(model_dir)
            live = set()  # steps logged as they happened; a resumed run logs its restored steps at the end

            def log_step(step, record):
                logger.history([record], prefix="train/")
                live.add(step)

            history = trainer.train_policy(model, table.table(), method, train, tokenizer.pad_token_id,
                                           checkpoint_dir=partial / "checkpoints", on_step=log_step)
            logger.history([r for r in history if r["step"] not in live], prefix="train/")
            model.save_pretrained(out / "policy")
            tokenizer.save_pretrained(out / "policy")
        write_table(pa.Table.from_pylist(history), out / "history.parquet")
        last = history[-1]
        return {"final_loss": last["loss"], "steps": len(history), "tokens_per_s": last["tokens_per_s"]}

    subset = {"algorithm": composed(algorithm), "train": composed(train), "distributed": distributed_key(distributed),
              "precision": trainer.mixed_precision(train)}  # resolved: an "auto" run's key says which arithmetic it was
    artifact, cached = store.get_or_build("train", 3, subset, {"model": model_key, table_step: table_key}, build)
    if cached or distributed.launches:  # live runs logged every step as it happened
        logger.history(artifact.table("history").to_pylist(), prefix="train/")
    if hasattr(method, "optimum"):  # QRPO: the beta used (maybe from a KL budget) and its optimum pi*
        logger.metrics(method.optimum(), prefix="algorithm/")
    return _finish(artifact, cached, run_id, "train/")


@task(cache_policy=NONE)
def eval_logps(evals: EvalConfig, train: TrainConfig, store: ArtifactStore, model_key: str, train_key: str, scored_by_seed: dict,
               run_id: str, executor: ExecutorConfig = LOCAL):
    """The policy's scored eval samples (all seeds, one table with a `seed` column) with log pi and log pi_ref,
    in the precision of training's reference log-probs (`train.mixed_precision`)."""
    arithmetic = trainer.mixed_precision(train)

    def build(out, partial):
        tables = [store.require("rewards", key).table() for key in scored_by_seed.values()]
        samples = pa.concat_tables([t.append_column("seed", pa.array([int(seed)] * t.num_rows, pa.int64()))
                                    for seed, t in zip(scored_by_seed, tables)])
        table = sharded.policy_and_ref_logps(executor, ArtifactRef.of(store, "train", train_key, "policy"),  # issue 20: shards
                                             ArtifactRef.of(store, "model", model_key), samples, evals.batch_size, arithmetic,
                                             ShardFolder.of(store, partial))
        write_table(table, out / "data.parquet")
        return {"policy_logp_mean": float(np.mean(table.column("policy_logp").to_numpy())),
                "ref_logp_mean": float(np.mean(table.column("ref_logp").to_numpy()))}

    inputs = {"model": model_key, "train": train_key, **{f"rewards_seed{seed}": key for seed, key in scored_by_seed.items()}}
    artifact, cached = store.get_or_build("eval_logps", 2, {"precision": arithmetic}, inputs, build)
    return _finish(artifact, cached, run_id, "eval_logps/")


@task(cache_policy=NONE)
def evaluate(evals: EvalConfig, reward: RewardConfig, store: ArtifactStore, logps_key: str, eval_ref_key: str, dataset_key: str,
             run_id: str):
    """Metrics of the policy's samples against the reference's on the same eval prompts: reporting half
    under eval/..., selection half under eval_selection/... (and LeetCode pass rates when the reward
    declares `yields_pass_rates`, as the code_tests reward does)."""

    def build(out, _):
        policy, reference = store.require("eval_logps", logps_key).table(), store.require("rewards", eval_ref_key).table()
        metrics = evaluation.evaluate_halves(policy, reference, evals.split_seed, evals.lc_fit_on)
        if declares("reward", reward, "yields_pass_rates"):  # pass rates of the policy, and of pi_ref (ref_...) on the same problems
            problems = store.require("dataset", dataset_key).table()
            metrics.update(evaluation.leetcode_metrics(policy, problems, evals.split_seed))
            metrics.update({k.replace("/", "/ref_", 1): v for k, v in
                            evaluation.leetcode_metrics(reference, problems, evals.split_seed).items()})
        halves = evaluation.split_halves(policy.column("prompt_id").to_pylist(), evals.split_seed)
        table = (policy.drop_columns(["prompt_ids", "completion_ids"])
                 .append_column("half", pa.array([halves[p] for p in policy.column("prompt_id").to_pylist()]))
                 .append_column("ref_quantile", pa.array(evaluation.sample_quantiles(policy, reference))))
        write_table(table, out / "data.parquet")
        return metrics

    subset = {k: composed(evals).get(k) for k in ("split_seed", "lc_fit_on")} | {"reward_kind": composed(reward).get("kind")}
    inputs = {"eval_logps": logps_key, "eval_reference": eval_ref_key, "dataset": dataset_key}
    artifact, cached = store.get_or_build("eval", 3, subset, inputs, build)
    return _finish(artifact, cached, run_id, "")


@task(cache_policy=NONE)
def load_alpaca_eval(evals: EvalConfig, store: ArtifactStore, run_id: str):
    """AlpacaEval's instructions and baseline outputs as a prompt table (a `dataset` artifact the `sample` step reads)."""
    cfg = evals.alpaca
    path = Path(cfg.instructions).expanduser()
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else cfg.instructions  # a missing file: InputError below

    def build(out, _):
        table = alpaca_eval_lib.load_instructions(cfg.instructions, cfg.max_instances)
        write_table(table, out / "data.parquet")
        return {"instructions": table.num_rows}

    subset = {"alpaca_eval": digest, "max_instances": cfg.max_instances}
    artifact, cached = store.get_or_build("dataset", 1, subset, {}, build)
    return _finish(artifact, cached, run_id, "alpaca_eval_prompts/")


@task(cache_policy=NONE)
def alpaca_eval(evals: EvalConfig, store: ArtifactStore, samples_key: str, prompts_key: str, run_id: str):
    """The judge's verdicts on the policy's AlpacaEval outputs: eval/alpaca_eval_lc_win_rate, eval/alpaca_eval_win_rate."""
    cfg = evals.alpaca

    def build(out, _):
        metrics, annotations = alpaca_eval_lib.run_alpaca_eval(
            store.require("dataset", prompts_key).table(), store.require("samples", samples_key).table(), cfg)
        (out / "annotations.json").write_text(json.dumps(annotations, indent=1, default=str))
        return {f"eval/{k}": v for k, v in metrics.items()}

    subset = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("enabled", "max_new_tokens", "seed")}
    artifact, cached = store.get_or_build("alpaca_eval", 1, subset, {"samples": samples_key, "prompts": prompts_key}, build)
    return _finish(artifact, cached, run_id, "")


@task(cache_policy=NONE)
def make_report(algorithm: AlgorithmConfig, model: ModelConfig, dataset: DatasetConfig, reward: RewardConfig, store: ArtifactStore,
                train_key: str, eval_key: str, eval_ref_key: str, run_id: str, alpaca_key: str | None = None) -> dict:
    """Plots and a summary table, logged to the MLflow run; returns every evaluation metric (eval/..., eval_selection/...).
    The sections name the run: the method (`algorithm.label`), the model, the dataset and the reward."""
    evaluated, trained = store.require("eval", eval_key), store.require("train", train_key)
    metrics = dict(evaluated.manifest["metrics"])
    if alpaca_key:
        metrics.update(store.require("alpaca_eval", alpaca_key).manifest["metrics"])
    reporting = {k.removeprefix("eval/"): v for k, v in metrics.items() if k.startswith("eval/")}
    title = algorithm.label + f" on {model.name}"
    policy, reference = evaluated.table(), store.require("rewards", eval_ref_key).table()
    reporting_ids = set(policy.filter(pc.equal(policy.column("half"), "reporting")).column("prompt_id").to_pylist())
    on_reporting = lambda t: t.filter(pa.array([p in reporting_ids for p in t.column("prompt_id").to_pylist()]))  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        report.plot_training(trained.table("history"), folder / "training_curves.png", title, eval_points=reporting)
        report.plot_rewards(policy.column("reward").to_numpy(), reference.column("reward").to_numpy(),
                            folder / "eval_rewards.png", f"held-out reward: {title}")
        report.plot_reward_vs_kl([{**reporting, "label": algorithm.label}], folder / "reward_vs_kl.png",
                                 f"reward vs KL (reporting half): {title}")
        report.plot_reward_vs_length(on_reporting(policy), on_reporting(reference), folder / "reward_vs_length.png",
                                     f"reward vs length (reporting half): {title}")
        report.plot_quantile_histogram(policy.column("ref_quantile").to_numpy(), folder / "quantile_histogram.png",
                                       f"policy samples' reference quantiles: {title}")
        facts = {"model": model.name, "dataset": dataset.name, "reward": reward.name,
                 "algorithm": title, "train artifact": str(trained.path), "eval artifact": str(evaluated.path),
                 "reward gain (reporting half)": evaluation.gain_in_words(reporting)}
        (folder / "summary.md").write_text(report.summary_markdown(facts, metrics))
        paired.write_per_prompt(paired.per_prompt_table(policy), folder / "per_prompt.csv")  # for arm-vs-arm differences (flows/compare.py)
        RunLogger(run_id).artifacts(folder, "report")
    return metrics


def method_label(config: dict) -> str:
    """"DPO (β=0.1)", "QRPO (β=0.1, identity)", "SFT": the method a run trained, for titles and the summary."""
    return algorithm_section(config["algorithm"]).label
