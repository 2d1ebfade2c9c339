"""The QRPO experiment DAG as one Prefect flow.

    prepare model ─┐
    load dataset ──┴─> sample (train: K + M per prompt) ─> score ─> quantile table ─> reference log-probs ─┐
                    └─> sample (eval reference) ──────────> score ──────────────────────────────────────┐   │
                                                                                       evaluate <─ train <┘
                                                                                          └─> report
The flow takes Hydra overrides and composes the config itself, so the CLI, a `--multirun` job and
a Prefect deployment run are the same call. One MLflow run records it all.
"""

from __future__ import annotations

import os

from mlflow.entities import Param
from mlflow.tracking import MlflowClient
from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows import tasks
from flows.config import compose_config
from flows.sweep import PARENT_ENV
from flows.validate import validate
from qrpo.tracking import RunLogger, artifact_location, flatten, redact, tracking_uri


def _start_mlflow_run(config: dict, experiment: str) -> str:
    client = MlflowClient(tracking_uri())
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment, artifact_location=artifact_location())
    algorithm = config["algorithm"]["_target_"].rsplit(".", 1)[-1].lower()
    tags = {
        "algorithm": algorithm,
        "beta": config["algorithm"].get("beta"),
        "num_ref_samples": config["sampler"]["num_ref_samples"],
        "model": config["model"]["name"],
        "dataset": config["dataset"]["name"],
        "reward": config["reward"]["name"],
        "prefect.flow_run_id": flow_run.get_id() or "",
        "prefect.flow_run_name": flow_run.get_name() or "",
    }
    if os.environ.get(PARENT_ENV):  # a job of a --multirun sweep: a child of the sweep's parent run
        tags["mlflow.parentRunId"] = os.environ[PARENT_ENV]
    run = client.create_run(experiment_id, run_name=flow_run.get_name() or None, tags={k: str(v) for k, v in tags.items()})
    safe = redact(config)
    client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in flatten(safe).items()])
    client.log_dict(run.info.run_id, safe, "config.yaml")
    return run.info.run_id


@flow(name="qrpo-pipeline", log_prints=True)
def qrpo_pipeline(overrides: list[str] | None = None) -> dict:
    """Run the whole experiment for these Hydra overrides; return its summary."""
    overrides = list(overrides or [])
    config = compose_config(overrides)
    validate(config)
    run_id = _start_mlflow_run(config, config["mlflow_experiment"])
    logger = RunLogger(run_id)
    try:
        model = tasks.prepare_model(config, run_id)
        dataset = tasks.load_dataset(config, run_id)
        train_samples = tasks.sample(config, model, dataset, "train", run_id)
        eval_samples = tasks.sample(config, model, dataset, "eval", run_id)
        train_scored = tasks.score(config, train_samples, dataset, "train", run_id)
        eval_scored = tasks.score(config, eval_samples, dataset, "eval", run_id)
        pairs = tasks.build_quantile_table(config, train_scored, run_id)
        ref_logps = tasks.reference_logps(config, model, pairs, run_id)
        trained = tasks.train(config, model, ref_logps, run_id)
        evaluated = tasks.evaluate(config, model, trained, dataset, eval_scored, run_id)
        metrics = tasks.make_report(config, trained, evaluated, eval_scored, run_id)
    except BaseException:
        logger.client.set_terminated(run_id, "FAILED")
        raise
    logger.client.set_terminated(run_id, "FINISHED")
    states = {"model": model, "dataset": dataset, "train_samples": train_samples, "eval_samples": eval_samples,
              "train_rewards": train_scored, "eval_rewards": eval_scored, "pairs": pairs, "ref_logps": ref_logps,
              "train": trained, "eval": evaluated}
    summary = {
        "mlflow_run_id": run_id,
        "tracking_uri": tracking_uri(),
        "flow_run_id": str(flow_run.get_id()),
        "artifacts": {name: state.result() for name, state in states.items()},
        "cached_steps": sorted(name for name, state in states.items() if state.name == "Cached"),
        "metrics": metrics,
    }
    get_run_logger().info("cached steps: %s", ", ".join(summary["cached_steps"]) or "none")
    logger.tags({"cached_steps": ",".join(summary["cached_steps"]), "prefect.api": os.environ.get("PREFECT_API_URL", "ephemeral")})
    return summary
