"""One Prefect task per pipeline step: load inputs, call one `qrpo` function, save the artifact.

Each task returns a Prefect state whose data is the artifact key; a step whose artifact already
exists finishes as "Cached" without loading a model. Every task also logs the artifact's metrics to
the pipeline's MLflow run, cached or not, so each run records the full set.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from prefect import task, unmapped
from prefect.cache_policies import NONE
from prefect.states import Completed

from qrpo import data, evaluation, logprobs, models, report, sampling, trainer, training_data
from qrpo.algorithms import Algorithm
from qrpo.artifacts import Artifact, ArtifactStore, write_table
from qrpo.config import (
    DatasetConfig, EvalConfig, ModelConfig, QuantileConfig, RewardConfig, SamplerConfig, TrainConfig, build_section,
)
from qrpo.errors import InputError
from qrpo.rewards import build_reward, score_samples
from qrpo.tracking import RunLogger


def build_algorithm(section: dict) -> Algorithm:
    try:
        return instantiate(section)
    except InstantiationException as err:
        cause = err.__cause__ or err
        raise InputError(f"algorithm ({section.get('_target_')}): {cause}") from None


def _store(config: dict) -> ArtifactStore:
    return ArtifactStore(config.get("artifact_root"))


def _finish(artifact: Artifact, cached: bool, run_id: str, prefix: str):
    RunLogger(run_id).metrics(artifact.manifest.get("metrics", {}), prefix=prefix)
    return Completed(name="Cached" if cached else "Completed", data=artifact.key, message=str(artifact.path))


@task(cache_policy=NONE)
def prepare_model(config: dict, run_id: str):
    cfg = build_section(ModelConfig, config["model"])
    artifact, cached = _store(config).get_or_build(
        "model", 2, config["model"], {}, lambda out, _: models.prepare_model(cfg, out)
    )
    return _finish(artifact, cached, run_id, "model/")


@task(cache_policy=NONE)
def load_dataset(config: dict, run_id: str):
    cfg = build_section(DatasetConfig, config["dataset"])
    digest = data.fingerprint(cfg)  # the data, not its path, is the key

    def build(out, _):
        table = data.load_prompts(cfg)
        write_table(table, out / "data.parquet")
        splits = table.column("split").to_pylist()
        return {"train_prompts": splits.count("train"), "eval_prompts": splits.count("eval")}

    subset = {**config["dataset"], "path": None, "data_files": None, "sha256": digest}
    artifact, cached = _store(config).get_or_build("dataset", 2, subset, {}, build)
    return _finish(artifact, cached, run_id, "dataset/")


@task(cache_policy=NONE)
def sample(config: dict, source: dict, dataset_key: str, split: str, num_samples: int, seed: int, max_new_tokens: int,
           run_id: str, name: str):
    """`num_samples` completions per prompt of `split` from `source` (the model artifact, or a trained
    policy), reusing any sampled pool that covers them (qrpo/sampling/pool.py): "Cached" when nothing
    was sampled. The train step draws at least `sampler.min_samples_per_prompt`."""
    cfg = build_section(SamplerConfig, config["sampler"])
    store = _store(config)
    params = sampling.SamplingParams(max_new_tokens=max_new_tokens, seed=seed, temperature=cfg.temperature, top_p=cfg.top_p)
    model_path = store.require(source["step"], source["key"]).path / source.get("subdir", "")
    prompts = data.split(store.require("dataset", dataset_key).table(), split)

    def sample_range(indices, partial):
        if cfg.map_shards:
            shards = range(len(sampling.shard_ranges(prompts.num_rows, cfg.shard_prompts)))
            sample_shard.map(unmapped(config), unmapped(str(model_path)), unmapped(dataset_key), unmapped(split),
                             unmapped(dataclasses.asdict(params)), unmapped([indices.start, indices.stop]),
                             unmapped(str(partial)), list(shards)).result()
        return sampling.sample_split(cfg, model_path, params, prompts, indices, partial, desc=name)

    pool = sampling.pool.pool_key(source, dataset_key, split, params, cfg.drop_truncated)
    artifact, sampled = sampling.pool.sample_with_reuse(
        store, pool, num_samples, prompts.column("prompt_id").to_pylist(), sample_range,
        at_least=cfg.min_samples_per_prompt if split == "train" else 0, drop_truncated=cfg.drop_truncated,
    )
    return _finish(artifact, not sampled, run_id, f"{name}/")


@task(cache_policy=NONE)
def sample_shard(config: dict, model_path: str, dataset_key: str, split: str, params: dict, indices: list[int],
                 partial: str, shard: int):
    """One shard of a `sample` step (sampler.map_shards): loads the model once, writes the shard's checkpoint."""
    cfg = build_section(SamplerConfig, config["sampler"])
    prompts = data.split(_store(config).require("dataset", dataset_key).table(), split)
    sampling.sample_split(cfg, Path(model_path), sampling.SamplingParams(**params), prompts, range(*indices), Path(partial),
                          shards=[shard], desc=f"shard {shard}")


@task(cache_policy=NONE)
def score(config: dict, samples_key: str, dataset_key: str, split: str, run_id: str):
    cfg = build_section(RewardConfig, config["reward"])
    store = _store(config)

    def build(out, _):
        samples = store.require("samples", samples_key).table()
        rewards = score_samples(build_reward(cfg), samples, store.require("dataset", dataset_key).table())
        write_table(samples.append_column("reward", pa.array(rewards)), out / "data.parquet")
        return {"reward_mean": float(rewards.mean()), "reward_std": float(rewards.std())}

    artifact, cached = store.get_or_build("rewards", 1, config["reward"], {"samples": samples_key, "dataset": dataset_key}, build)
    return _finish(artifact, cached, run_id, f"rewards_{split}/")


@task(cache_policy=NONE)
def build_quantile_table(config: dict, scored_key: str, run_id: str):
    sampler = build_section(SamplerConfig, config["sampler"])
    ties = build_section(QuantileConfig, config["quantiles"]).ties
    store = _store(config)

    def build(out, _):
        pairs, stats = training_data.build_training_pairs(store.require("rewards", scored_key).table(), sampler.num_train_samples, ties)
        write_table(pairs, out / "data.parquet")
        return stats

    subset = {"num_train_samples": sampler.num_train_samples, "ties": ties}
    artifact, cached = store.get_or_build("pairs", 1, subset, {"rewards": scored_key}, build)
    return _finish(artifact, cached, run_id, "pairs/")


@task(cache_policy=NONE)
def reference_logps(config: dict, model_key: str, pairs_key: str, run_id: str):
    store = _store(config)

    def build(out, _):
        model, tokenizer = models.load_policy(store.require("model", model_key).path)
        pairs = store.require("pairs", pairs_key).table()
        prompts = pairs.column("prompt_ids").to_pylist()
        columns = {}
        for side in ("chosen", "rejected"):
            columns[f"{side}_ref_logp"] = logprobs.batched_sequence_logps(
                model, prompts, pairs.column(f"{side}_ids").to_pylist(), tokenizer.pad_token_id, desc=f"ref log-probs {side}"
            )
        for name, values in columns.items():
            pairs = pairs.append_column(name, pa.array(values))
        write_table(pairs, out / "data.parquet")
        return {name.replace("_ref_logp", "_ref_logp_mean"): float(v.mean()) for name, v in columns.items()}

    artifact, cached = store.get_or_build("ref_logps", 1, {}, {"model": model_key, "pairs": pairs_key}, build)
    return _finish(artifact, cached, run_id, "ref_logps/")


@task(cache_policy=NONE)
def train(config: dict, model_key: str, ref_logps_key: str, run_id: str):
    algorithm = build_algorithm(config["algorithm"])
    cfg = build_section(TrainConfig, config["train"])
    store = _store(config)

    def build(out, _):
        model, tokenizer = models.load_policy(store.require("model", model_key).path)
        history = trainer.train_policy(model, store.require("ref_logps", ref_logps_key).table(), algorithm, cfg, tokenizer.pad_token_id)
        model.save_pretrained(out / "policy")
        tokenizer.save_pretrained(out / "policy")
        write_table(pa.Table.from_pylist(history), out / "history.parquet")
        last = history[-1]
        return {"final_loss": last["loss"], "steps": len(history), "tokens_per_s": last["tokens_per_s"]}

    subset = {"algorithm": config["algorithm"], "train": config["train"]}
    artifact, cached = store.get_or_build("train", 1, subset, {"model": model_key, "ref_logps": ref_logps_key}, build)
    RunLogger(run_id).history(artifact.table("history").to_pylist(), prefix="train/")
    return _finish(artifact, cached, run_id, "train/")


@task(cache_policy=NONE)
def evaluate(config: dict, model_key: str, train_key: str, dataset_key: str, eval_ref_key: str, run_id: str):
    """Sample the trained policy on held-out prompts; reward, length, KL vs the reference."""
    evals = build_section(EvalConfig, config["eval"])
    sampler = build_section(SamplerConfig, config["sampler"])
    reward_cfg = build_section(RewardConfig, config["reward"])
    store = _store(config)

    def build(out, partial):
        policy, tokenizer = models.load_policy(store.require("train", train_key).path / "policy")
        prompts = data.split(store.require("dataset", dataset_key).table(), "eval")
        samples = sampling.sample_completions(
            policy, tokenizer, prompts, evals.samples_per_prompt, max_new_tokens=evals.max_new_tokens,
            temperature=sampler.temperature, top_p=sampler.top_p, batch_size=evals.batch_size,
            shard_prompts=sampler.shard_prompts, seed=evals.seed, checkpoint_dir=partial, desc="sample policy (eval)",
        )
        rewards = score_samples(build_reward(reward_cfg), samples, prompts)
        p_ids, c_ids = samples.column("prompt_ids").to_pylist(), samples.column("completion_ids").to_pylist()
        policy_logp = logprobs.batched_sequence_logps(policy, p_ids, c_ids, tokenizer.pad_token_id, evals.batch_size, "policy log-probs")
        del policy
        reference, _ = models.load_policy(store.require("model", model_key).path)
        ref_logp = logprobs.batched_sequence_logps(reference, p_ids, c_ids, tokenizer.pad_token_id, evals.batch_size, "ref log-probs")
        samples = (samples.append_column("reward", pa.array(rewards)).append_column("policy_logp", pa.array(policy_logp))
                   .append_column("ref_logp", pa.array(ref_logp)))
        write_table(samples, out / "data.parquet")
        return evaluation.summarize(samples, store.require("rewards", eval_ref_key).table())

    subset = {"eval": config["eval"], "reward": config["reward"], "temperature": sampler.temperature, "top_p": sampler.top_p}
    inputs = {"model": model_key, "train": train_key, "dataset": dataset_key, "eval_reference": eval_ref_key}
    artifact, cached = store.get_or_build("eval", 1, subset, inputs, build)
    return _finish(artifact, cached, run_id, "eval/")


@task(cache_policy=NONE)
def make_report(config: dict, train_key: str, eval_key: str, eval_ref_key: str, run_id: str) -> dict:
    """Plots and a summary table, logged to the MLflow run; returns the evaluation metrics."""
    store = _store(config)
    evaluated, trained = store.require("eval", eval_key), store.require("train", train_key)
    metrics = evaluated.manifest["metrics"]
    title = f"{config['algorithm']['_target_'].rsplit('.', 1)[-1]} beta={config['algorithm'].get('beta')} on {config['model']['name']}"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        report.plot_training(trained.table("history"), folder / "training_curves.png", title)
        report.plot_rewards(evaluated.table().column("reward").to_numpy(),
                            store.require("rewards", eval_ref_key).table().column("reward").to_numpy(),
                            folder / "eval_rewards.png", f"held-out reward: {title}")
        facts = {"model": config["model"]["name"], "dataset": config["dataset"]["name"], "reward": config["reward"]["name"],
                 "algorithm": title, "train artifact": str(trained.path), "eval artifact": str(evaluated.path)}
        (folder / "summary.md").write_text(report.summary_markdown(facts, metrics))
        RunLogger(run_id).artifacts(folder, "report")
    return metrics
