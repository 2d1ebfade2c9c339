"""The QRPO experiment DAG as one Prefect flow.

    prepare_model ─┐
    load_dataset ──┴─> sample/train (K + M per prompt) ─> score/train ─> training_data (regime) ─> ref_logps ─┐
                    └─> sample/eval_reference ──────────> score/eval_reference ─────────────────────┐        │
                        sample/eval_policy_seed<s> (one per eval seed) <────────────────── train <──┼────────┘
                          └─> score/eval_policy_seed<s> ─> eval_logps ─> evaluate <─────────────────┘
                                                                           └─> report
    (AlpacaEval 2, when enabled: load_alpaca_eval ─> sample/alpaca_eval ─> alpaca_eval)
Each name is the step's task, artifact folder, library function and MLflow metric prefix (flows/tasks.py).
The flow takes Hydra overrides and composes the config itself, so the CLI, a `--multirun` job and
a Prefect deployment run are the same call; validating it builds the typed sections once, and each
task receives the sections it reads (flows/tasks.py). One MLflow run records it all.
"""

from __future__ import annotations

import os

from mlflow.entities import Param
from mlflow.tracking import MlflowClient
from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows import tasks
from flows.executor import with_executor
from flows.step import step_runners
from flows.sweep import PARENT_ENV
from flows.termination import noting_sigterm, stop_if_terminated
from flows.validate import load_config
from qrpo.config.binding import build_algorithm, declares
from qrpo.store.artifacts import ArtifactStore
from qrpo.config.sections import Sections
from qrpo.store.tracking import RunLogger, artifact_location, flatten, redact, tracking_uri


def used_precision(sections: Sections) -> str:
    """The arithmetic this run's `precision` resolved to here: "bf16", "fp32", or per step when they differ."""
    from qrpo import precision

    used = {"sample": precision.resolve(sections.sampler.precision), "train": precision.resolve(sections.train.mixed_precision)}
    return used["sample"] if len(set(used.values())) == 1 else ",".join(f"{k}={v}" for k, v in used.items())


def _start_mlflow_run(config: dict, sections: Sections) -> str:
    client = MlflowClient(tracking_uri())
    experiment = config["mlflow_experiment"]
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment, artifact_location=artifact_location())
    tags = {
        "algorithm": sections.algorithm.name,
        "method": sections.algorithm.method,
        "beta": sections.algorithm.arguments.get("beta"),
        "num_ref_samples": sections.sampler.num_ref_samples,
        "model": sections.model.name,
        "dataset": sections.dataset.name,
        "reward": sections.reward.name,
        "precision": used_precision(sections),
        "prefect.flow_run_id": flow_run.get_id() or "",
        "prefect.flow_run_name": flow_run.get_name() or "",
    }
    if os.environ.get(PARENT_ENV):  # a job of a --multirun sweep: a child of the sweep's parent run
        tags["mlflow.parentRunId"] = os.environ[PARENT_ENV]
    run = client.create_run(experiment_id, run_name=config.get("run_name") or flow_run.get_name() or None, tags={k: str(v) for k, v in tags.items()})
    safe = redact({k: v for k, v in config.items() if k != "compare"})  # a compare child: its arm is in its params
    try:
        params = {**flatten(safe), "precision_used": used_precision(sections)}  # `precision` may say auto: what it chose
        client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params.items()])
        client.log_dict(run.info.run_id, safe, "config.yaml")
    except BaseException:  # the run exists from here on: never leave it RUNNING (a SIGTERM lands anywhere)
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    return run.info.run_id


@flow(name="qrpo-pipeline", log_prints=True)
@noting_sigterm()  # a SIGTERM is recorded even where its exception is dropped: the next step's end stops the run
def qrpo_pipeline(overrides: list[str] | None = None) -> dict:
    """Run the whole experiment for these Hydra overrides; return its summary."""
    overrides = list(overrides or [])
    config, sections = load_config(overrides)  # the typed sections, built once; each task gets those it reads
    store = ArtifactStore(config.get("artifact_root"))
    run_id = _start_mlflow_run(config, sections)
    logger = RunLogger(run_id)
    steps = step_runners(config, overrides)  # the heavy steps: in this process, or (dispatch.pool) on that pool's workers
    steps = with_executor(steps, sections.executor)  # their shards here (executor=local) or as Ray tasks (executor=ray)
    try:
        sampler, evals, reward, regime = sections.sampler, sections.eval, sections.reward, sections.regime
        states = {"prepare_model": tasks.prepare_model(sections.model, store, run_id),
                  "load_dataset": tasks.load_dataset(sections.dataset, store, run_id)}
        model, dataset = states["prepare_model"], states["load_dataset"]
        reference = {"step": "prepare_model", "key": model.result(), "subdir": ""}
        states["sample/train"] = steps.sample(sampler, store, reference, dataset, "train", sampler.num_train_samples + sampler.num_ref_samples,
                                              sampler.seed, sampler.max_new_tokens, run_id, "train")
        states["sample/eval_reference"] = steps.sample(sampler, store, reference, dataset, "eval", evals.ref_samples_per_prompt, evals.seed,
                                                       evals.max_new_tokens, run_id, "eval_reference")
        states["score/train"] = steps.score(reward, store, states["sample/train"], dataset, run_id, "train")
        states["score/eval_reference"] = steps.score(reward, store, states["sample/eval_reference"], dataset, run_id, "eval_reference")
        offline_scored = None
        if declares("regime", regime, "uses_dataset_pairs"):  # the dataset's own pairs, scored by the same reward
            states["offline_samples"] = tasks.offline_samples(regime, store, model, dataset, states["sample/train"], run_id)
            offline_scored = states["score/offline"] = steps.score(reward, store, states["offline_samples"], dataset, run_id, "offline",
                                                                   samples_step="offline_samples")
        training = states["training_data"] = tasks.training_data(sampler, regime, sections.quantiles, store, states["score/train"],
                                                                 run_id, offline_scored)
        algorithm, train, distributed = sections.algorithm, sections.train, sections.distributed
        if build_algorithm(algorithm).needs_reference:
            states["ref_logps"] = steps.ref_logps(train, store, model, training, run_id)
            trained = steps.train(algorithm, train, distributed, store, model, "ref_logps", states["ref_logps"], run_id)
        else:  # SimPO, SFT: no reference model pass at all
            trained = steps.train(algorithm, train, distributed, store, model, "training_data", training, run_id)
        states["train"] = trained
        policy = {"step": "train", "key": trained.result(), "subdir": "policy"}
        for seed in evals.seed_list:  # the same sample and score steps as the reference's, one per seed
            instance = f"eval_policy_seed{seed}"
            states[f"sample/{instance}"] = steps.sample(sampler, store, policy, dataset, "eval", evals.samples_per_prompt, seed,
                                                        evals.max_new_tokens, run_id, instance)
            states[f"score/{instance}"] = steps.score(reward, store, states[f"sample/{instance}"], dataset, run_id, instance)
        scored_by_seed = {str(seed): states[f"score/eval_policy_seed{seed}"].result() for seed in evals.seed_list}
        states["eval_logps"] = steps.eval_logps(evals, train, store, model, trained, scored_by_seed, run_id)
        states["evaluate"] = tasks.evaluate(evals, reward, store, states["eval_logps"], states["score/eval_reference"], dataset, run_id)
        if evals.alpaca.enabled:
            prompts = states["load_alpaca_eval"] = tasks.load_alpaca_eval(evals, store, run_id)
            states["sample/alpaca_eval"] = steps.sample(sampler, store, policy, prompts, "eval", 1, evals.alpaca.seed,
                                                        evals.alpaca.max_new_tokens, run_id, "alpaca_eval", prompts_step="load_alpaca_eval")
            states["alpaca_eval"] = tasks.alpaca_eval(evals, store, states["sample/alpaca_eval"], prompts, run_id)
        metrics = tasks.report(algorithm, sections.model, sections.dataset, reward, store, trained, states["evaluate"],
                               states["score/eval_reference"], run_id,
                               states["alpaca_eval"].result() if "alpaca_eval" in states else None)
        stop_if_terminated()
    except BaseException:  # SIGTERM included (flows/termination.py): the run never stays RUNNING
        logger.client.set_terminated(run_id, "FAILED")
        raise
    logger.client.set_terminated(run_id, "FINISHED")
    summary = {
        "mlflow_run_id": run_id,
        "tracking_uri": tracking_uri(),
        "flow_run_id": str(flow_run.get_id()),
        "artifacts": {name: state.result() for name, state in states.items()},  # by step (and instance): sample/train, train, ...
        "cached_steps": sorted(name for name, state in states.items() if state.name == "Cached"),
        "label": sections.algorithm.label,  # "QRPO (β=0.1, identity)"; the `method` tag is sections.algorithm.method
        "optimum": getattr(build_algorithm(sections.algorithm), "optimum", dict)(),
        "metrics": {k.removeprefix("eval/"): v for k, v in metrics.items() if k.startswith("eval/")},  # the reporting half
        "selection_metrics": {k.removeprefix("eval_selection/"): v for k, v in metrics.items() if k.startswith("eval_selection/")},
    }
    get_run_logger().info("cached steps: %s", ", ".join(summary["cached_steps"]) or "none")
    logger.tags({"cached_steps": ",".join(summary["cached_steps"]), "prefect.api": os.environ.get("PREFECT_API_URL", "ephemeral")})
    return summary
