"""One Prefect task per pipeline step: load inputs, call one `qrpo` function, save the artifact.

Each task returns a Prefect state whose data is the artifact key; a step whose artifact already
exists finishes as "Cached" without loading a model. Every task also logs the artifact's metrics to
the pipeline's MLflow run, cached or not, so each run records the full set.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from prefect import task
from prefect.cache_policies import NONE
from prefect.states import Completed
from transformers import AutoTokenizer

from qrpo import data, evaluation, logprobs, models, report, sampling, trainer
from qrpo import training_data as training_data_lib
from qrpo.algorithms import Algorithm
from qrpo.artifacts import Artifact, ArtifactStore, write_table
from qrpo.config import (
    DatasetConfig, DistributedConfig, EvalConfig, ModelConfig, QuantileConfig, RegimeConfig, RewardConfig, SamplerConfig,
    TrainConfig, build_section,
)
from qrpo.distributed import launch_training
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
    digest = hashlib.sha256(Path(cfg.path).expanduser().read_bytes()).hexdigest()  # the data, not its path, is the key

    def build(out, _):
        table = data.load_prompts(cfg)
        write_table(table, out / "data.parquet")
        splits = table.column("split").to_pylist()
        return {"train_prompts": splits.count("train"), "eval_prompts": splits.count("eval")}

    subset = {**config["dataset"], "path": None, "sha256": digest}
    artifact, cached = _store(config).get_or_build("dataset", 1, subset, {}, build)
    return _finish(artifact, cached, run_id, "dataset/")


@task(cache_policy=NONE)
def sample(config: dict, model_key: str, dataset_key: str, split: str, run_id: str):
    """Reference completions: K + M per train prompt, or eval.samples_per_prompt per eval prompt."""
    sampler = build_section(SamplerConfig, config["sampler"])
    evals = build_section(EvalConfig, config["eval"])
    if split == "train":
        n, max_new, seed = sampler.num_train_samples + sampler.num_ref_samples, sampler.max_new_tokens, sampler.seed
    else:
        n, max_new, seed = evals.samples_per_prompt, evals.max_new_tokens, evals.seed
    subset = {"split": split, "n": n, "max_new_tokens": max_new, "seed": seed, "temperature": sampler.temperature,
              "top_p": sampler.top_p, "shard_prompts": sampler.shard_prompts}
    store = _store(config)

    def build(out, partial):
        model, tokenizer = models.load_policy(store.require("model", model_key).path)
        prompts = data.split(store.require("dataset", dataset_key).table(), split)
        table = sampling.sample_completions(
            model, tokenizer, prompts, n, max_new_tokens=max_new, temperature=sampler.temperature, top_p=sampler.top_p,
            batch_size=sampler.batch_size, shard_prompts=sampler.shard_prompts, seed=seed, checkpoint_dir=partial,
            desc=f"sample {split}",
        )
        write_table(table, out / "data.parquet")
        return {"completions": table.num_rows, "length_mean": float(np.mean(table.column("num_tokens").to_numpy())),
                "finished_fraction": float(np.mean(table.column("finished").to_numpy(zero_copy_only=False)))}

    artifact, cached = store.get_or_build("samples", 1, subset, {"model": model_key, "dataset": dataset_key}, build)
    return _finish(artifact, cached, run_id, f"samples_{split}/")


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
def offline_samples(config: dict, model_key: str, dataset_key: str, train_samples_key: str, run_id: str):
    """regime=offline: the dataset's own chosen/rejected completions, tokenised by the policy, as samples to score."""
    regime = build_section(RegimeConfig, config["regime"])
    store = _store(config)

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
def training_data(config: dict, scored_key: str, run_id: str, offline_scored_key: str | None = None):
    """The training table of the configured regime (pairs, or single completions) from scored samples."""
    sampler = build_section(SamplerConfig, config["sampler"])
    regime = build_section(RegimeConfig, config["regime"])
    ties = build_section(QuantileConfig, config["quantiles"]).ties
    store = _store(config)

    def build(out, _):
        offline = training_data_lib.offline_pairs(store.require("rewards", offline_scored_key).table()) if offline_scored_key else None
        table, stats = training_data_lib.build_training_data(
            store.require("rewards", scored_key).table(), regime, sampler.num_train_samples, sampler.num_ref_samples, ties, offline)
        write_table(table, out / "data.parquet")
        return stats

    subset = {"regime": config["regime"], "num_train_samples": sampler.num_train_samples,
              "num_ref_samples": sampler.num_ref_samples, "ties": ties}
    inputs = {"rewards": scored_key, **({"offline_rewards": offline_scored_key} if offline_scored_key else {})}
    artifact, cached = store.get_or_build("training_data", 2, subset, inputs, build)
    with tempfile.TemporaryDirectory() as tmp:
        report.plot_training_quantiles(artifact.manifest["metrics"], Path(tmp) / "training_quantiles.png", regime.name)
        RunLogger(run_id).artifacts(Path(tmp), "training_data")
    return _finish(artifact, cached, run_id, "training_data/")


@task(cache_policy=NONE)
def ref_logps(config: dict, model_key: str, training_data_key: str, run_id: str):
    """log pi_ref of every completion of the training table, with the trainer's own log-prob function."""
    store = _store(config)
    precision = trainer.mixed_precision(build_section(TrainConfig, config["train"]))

    def build(out, _):
        model, tokenizer = models.load_policy(store.require("model", model_key).path, dtype=torch.float32)
        table = store.require("training_data", training_data_key).table()
        prompts = table.column("prompt_ids").to_pylist()
        sides = ("chosen", "rejected") if "chosen_ids" in table.column_names else ("",)
        metrics = {}
        for side in sides:
            prefix = f"{side}_" if side else ""
            values = logprobs.batched_sequence_logps(
                model, prompts, table.column(f"{side}_ids" if side else "completion_ids").to_pylist(), tokenizer.pad_token_id,
                desc=f"ref log-probs {side}".strip(), mixed_precision=precision)
            table = table.append_column(f"{prefix}ref_logp", pa.array(values))
            metrics[f"{prefix}ref_logp_mean"] = float(values.mean())
        write_table(table, out / "data.parquet")
        return metrics

    artifact, cached = store.get_or_build("ref_logps", 2, {"mixed_precision": precision},
                                          {"model": model_key, "training_data": training_data_key}, build)
    return _finish(artifact, cached, run_id, "ref_logps/")


@task(cache_policy=NONE)
def train(config: dict, model_key: str, table_step: str, table_key: str, run_id: str):
    """Train the policy on the training table (`ref_logps`, or `training_data` for reference-free methods),
    in this process or under `accelerate launch` with the configured topology; resumes from its checkpoints."""
    algorithm = build_algorithm(config["algorithm"])
    cfg = build_section(TrainConfig, config["train"])
    topology = build_section(DistributedConfig, config["distributed"])
    store = _store(config)
    logger = RunLogger(run_id)

    def build(out, partial):
        model_dir, table = store.require("model", model_key).path, store.require(table_step, table_key)
        if topology.launches:
            history = launch_training(topology, model_dir, table.path / "data.parquet", config["algorithm"],
                                      config["train"], out, checkpoint_dir=partial / "checkpoints")
        else:
            model, tokenizer = models.load_policy(model_dir, dtype=torch.float32)
            live = set()  # steps logged as they happened; a resumed run logs its restored steps at the end

            def log_step(step, record):
                logger.history([record], prefix="train/")
                live.add(step)

            history = trainer.train_policy(model, table.table(), algorithm, cfg, tokenizer.pad_token_id,
                                           checkpoint_dir=partial / "checkpoints", on_step=log_step)
            logger.history([r for r in history if r["step"] not in live], prefix="train/")
            model.save_pretrained(out / "policy")
            tokenizer.save_pretrained(out / "policy")
        write_table(pa.Table.from_pylist(history), out / "history.parquet")
        last = history[-1]
        return {"final_loss": last["loss"], "steps": len(history), "tokens_per_s": last["tokens_per_s"]}

    subset = {"algorithm": config["algorithm"], "train": config["train"], "distributed": config["distributed"]}
    artifact, cached = store.get_or_build("train", 2, subset, {"model": model_key, table_step: table_key}, build)
    if cached or topology.launches:  # live runs logged every step as it happened
        logger.history(artifact.table("history").to_pylist(), prefix="train/")
    if hasattr(algorithm, "optimum"):  # QRPO: the beta used (maybe from a KL budget) and its optimum pi*
        logger.metrics(algorithm.optimum(), prefix="algorithm/")
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
