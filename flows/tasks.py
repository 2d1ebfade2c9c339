"""One Prefect task per pipeline step: load inputs, call one `qrpo` function, save the artifact.

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
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from prefect import task
from prefect.cache_policies import NONE
from prefect.states import Completed

from qrpo import data, evaluation, logprobs, models, report, sampling, trainer, training_data
from qrpo.algorithms import Algorithm
from qrpo.artifacts import Artifact, ArtifactStore, write_table
from qrpo.config import (
    DatasetConfig, EvalConfig, ModelConfig, QuantileConfig, RewardConfig, SamplerConfig, TrainConfig, build_section,
)
from qrpo.errors import InputError
from qrpo.evaluation import alpaca_eval as alpaca_eval_lib
from qrpo.evaluation.logratios import policy_and_ref_logps
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
def sample(config: dict, source: dict, dataset_key: str, split: str, num_samples: int, seed: int, max_new_tokens: int,
           run_id: str, name: str):
    """`num_samples` completions per prompt of `split` from the model at `source` ({"step", "key", "subdir"}:
    pi_ref is {"step": "model", ...}, a trained policy {"step": "train", ..., "subdir": "policy"})."""
    sampler = build_section(SamplerConfig, config["sampler"])
    subset = {"split": split, "n": num_samples, "max_new_tokens": max_new_tokens, "seed": seed, "temperature": sampler.temperature,
              "top_p": sampler.top_p, "shard_prompts": sampler.shard_prompts}
    store = _store(config)

    def build(out, partial):
        model, tokenizer = models.load_policy(store.require(source["step"], source["key"]).path / source.get("subdir", ""))
        prompts = data.split(store.require("dataset", dataset_key).table(), split)
        table = sampling.sample_completions(
            model, tokenizer, prompts, num_samples, max_new_tokens=max_new_tokens, temperature=sampler.temperature,
            top_p=sampler.top_p, batch_size=sampler.batch_size, shard_prompts=sampler.shard_prompts, seed=seed,
            checkpoint_dir=partial, desc=name,
        )
        write_table(table, out / "data.parquet")
        return {"completions": table.num_rows, "length_mean": float(np.mean(table.column("num_tokens").to_numpy())),
                "finished_fraction": float(np.mean(table.column("finished").to_numpy(zero_copy_only=False)))}

    source_id = f"{source['step']}/{source['key']}/{source.get('subdir', '')}"
    artifact, cached = store.get_or_build("samples", 2, subset, {"source": source_id, "dataset": dataset_key}, build)
    return _finish(artifact, cached, run_id, f"{name}/")


@task(cache_policy=NONE)
def score(config: dict, samples_key: str, dataset_key: str, split: str, run_id: str, name: str | None = None):
    cfg = build_section(RewardConfig, config["reward"])
    store = _store(config)

    def build(out, _):
        samples = store.require("samples", samples_key).table()
        rewards = score_samples(build_reward(cfg), samples, store.require("dataset", dataset_key).table())
        write_table(samples.append_column("reward", pa.array(rewards)), out / "data.parquet")
        return {"reward_mean": float(rewards.mean()), "reward_std": float(rewards.std())}

    artifact, cached = store.get_or_build("rewards", 1, config["reward"], {"samples": samples_key, "dataset": dataset_key}, build)
    return _finish(artifact, cached, run_id, f"{name or 'rewards_' + split}/")


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
def eval_logps(config: dict, model_key: str, train_key: str, scored_by_seed: dict, run_id: str):
    """The policy's scored eval samples (all seeds, one table with a `seed` column) with log pi and log pi_ref."""
    evals = build_section(EvalConfig, config["eval"])
    store = _store(config)

    def build(out, _):
        tables = [store.require("rewards", key).table() for key in scored_by_seed.values()]
        samples = pa.concat_tables([t.append_column("seed", pa.array([int(seed)] * t.num_rows, pa.int64()))
                                    for seed, t in zip(scored_by_seed, tables)])
        table = policy_and_ref_logps(store.require("train", train_key).path / "policy", store.require("model", model_key).path,
                                     samples, evals.batch_size)
        write_table(table, out / "data.parquet")
        return {"policy_logp_mean": float(np.mean(table.column("policy_logp").to_numpy())),
                "ref_logp_mean": float(np.mean(table.column("ref_logp").to_numpy()))}

    inputs = {"model": model_key, "train": train_key, **{f"rewards_seed{seed}": key for seed, key in scored_by_seed.items()}}
    artifact, cached = store.get_or_build("eval_logps", 1, {}, inputs, build)
    return _finish(artifact, cached, run_id, "eval_logps/")


@task(cache_policy=NONE)
def evaluate(config: dict, logps_key: str, eval_ref_key: str, dataset_key: str, run_id: str):
    """Metrics of the policy's samples against the reference's on the same eval prompts: reporting half
    under eval/..., selection half under eval_selection/... (and LeetCode pass rates on the code task)."""
    evals = build_section(EvalConfig, config["eval"])
    store = _store(config)

    def build(out, _):
        policy, reference = store.require("eval_logps", logps_key).table(), store.require("rewards", eval_ref_key).table()
        metrics = evaluation.evaluate_halves(policy, reference, evals.split_seed, evals.lc_fit_on)
        if config["reward"].get("kind") == "code_tests":
            metrics.update(evaluation.leetcode_metrics(policy, store.require("dataset", dataset_key).table(), evals.split_seed))
        halves = evaluation.split_halves(policy.column("prompt_id").to_pylist(), evals.split_seed)
        table = (policy.drop_columns(["prompt_ids", "completion_ids"])
                 .append_column("half", pa.array([halves[p] for p in policy.column("prompt_id").to_pylist()]))
                 .append_column("ref_quantile", pa.array(evaluation.sample_quantiles(policy, reference))))
        write_table(table, out / "data.parquet")
        return metrics

    subset = {k: config["eval"].get(k) for k in ("split_seed", "lc_fit_on")} | {"reward_kind": config["reward"].get("kind")}
    inputs = {"eval_logps": logps_key, "eval_reference": eval_ref_key, "dataset": dataset_key}
    artifact, cached = store.get_or_build("eval", 2, subset, inputs, build)
    return _finish(artifact, cached, run_id, "")


@task(cache_policy=NONE)
def load_alpaca_eval(config: dict, run_id: str):
    """AlpacaEval's instructions and baseline outputs as a prompt table (a `dataset` artifact the `sample` step reads)."""
    cfg = build_section(EvalConfig, config["eval"]).alpaca
    path = Path(cfg.instructions).expanduser()
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else cfg.instructions  # a missing file: InputError below

    def build(out, _):
        table = alpaca_eval_lib.load_instructions(cfg.instructions, cfg.max_instances)
        write_table(table, out / "data.parquet")
        return {"instructions": table.num_rows}

    subset = {"alpaca_eval": digest, "max_instances": cfg.max_instances}
    artifact, cached = _store(config).get_or_build("dataset", 1, subset, {}, build)
    return _finish(artifact, cached, run_id, "alpaca_eval_prompts/")


@task(cache_policy=NONE)
def alpaca_eval(config: dict, samples_key: str, prompts_key: str, run_id: str):
    """The judge's verdicts on the policy's AlpacaEval outputs: eval/alpaca_eval_lc_win_rate, eval/alpaca_eval_win_rate."""
    cfg = build_section(EvalConfig, config["eval"]).alpaca
    store = _store(config)

    def build(out, _):
        metrics, annotations = alpaca_eval_lib.run_alpaca_eval(
            store.require("dataset", prompts_key).table(), store.require("samples", samples_key).table(), cfg)
        (out / "annotations.json").write_text(json.dumps(annotations, indent=1, default=str))
        return {f"eval/{k}": v for k, v in metrics.items()}

    subset = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("enabled", "max_new_tokens", "seed")}
    artifact, cached = store.get_or_build("alpaca_eval", 1, subset, {"samples": samples_key, "prompts": prompts_key}, build)
    return _finish(artifact, cached, run_id, "")


@task(cache_policy=NONE)
def make_report(config: dict, train_key: str, eval_key: str, eval_ref_key: str, run_id: str, alpaca_key: str | None = None) -> dict:
    """Plots and a summary table, logged to the MLflow run; returns every evaluation metric (eval/..., eval_selection/...)."""
    store = _store(config)
    evaluated, trained = store.require("eval", eval_key), store.require("train", train_key)
    metrics = dict(evaluated.manifest["metrics"])
    if alpaca_key:
        metrics.update(store.require("alpaca_eval", alpaca_key).manifest["metrics"])
    reporting = {k.removeprefix("eval/"): v for k, v in metrics.items() if k.startswith("eval/")}
    title = method_label(config) + f" on {config['model']['name']}"
    policy, reference = evaluated.table(), store.require("rewards", eval_ref_key).table()
    reporting_ids = set(policy.filter(pc.equal(policy.column("half"), "reporting")).column("prompt_id").to_pylist())
    on_reporting = lambda t: t.filter(pa.array([p in reporting_ids for p in t.column("prompt_id").to_pylist()]))  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        report.plot_training(trained.table("history"), folder / "training_curves.png", title, eval_points=reporting)
        report.plot_rewards(policy.column("reward").to_numpy(), reference.column("reward").to_numpy(),
                            folder / "eval_rewards.png", f"held-out reward: {title}")
        report.plot_reward_vs_kl([{**reporting, "label": method_label(config)}], folder / "reward_vs_kl.png",
                                 f"reward vs KL (reporting half): {title}")
        report.plot_reward_vs_length(on_reporting(policy), on_reporting(reference), folder / "reward_vs_length.png",
                                     f"reward vs length (reporting half): {title}")
        report.plot_quantile_histogram(policy.column("ref_quantile").to_numpy(), folder / "quantile_histogram.png",
                                       f"policy samples' reference quantiles: {title}")
        facts = {"model": config["model"]["name"], "dataset": config["dataset"]["name"], "reward": config["reward"]["name"],
                 "algorithm": title, "train artifact": str(trained.path), "eval artifact": str(evaluated.path),
                 "reward gain (reporting half)": evaluation.gain_in_words(reporting)}
        (folder / "summary.md").write_text(report.summary_markdown(facts, metrics))
        RunLogger(run_id).artifacts(folder, "report")
    return metrics


def method_label(config: dict) -> str:
    """"DPO (β=0.1)", "QRPO (β=0.1, identity)", "SFT": the method a run trained, for titles and the summary."""
    section = config["algorithm"]
    name = section["_target_"].rsplit(".", 1)[-1]
    details = [f"β={section['beta']:g}"] if isinstance(section.get("beta"), (int, float)) else []
    if section.get("transform"):
        details.append(str(section["transform"]))
    return f"{name} ({', '.join(details)})" if details else name
