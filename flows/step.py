"""`qrpo-step`: one heavy pipeline step as a flow of its own, so that a work pool's workers run it.

With `dispatch.pool=gpu` (conf/config.yaml) the pipeline runs each step named in `dispatch.steps` as
a run of the deployment `qrpo-step/qrpo-step-gpu` (prefect.yaml), waits for it, and goes on with the
artifact key it made; the other steps run in the pipeline's own process. The step's flow run is a
subflow of the pipeline run (Prefect UI: under the pipeline's step task), it composes and validates
the config from the pipeline's own Hydra overrides (the same `load_config` as the CLI),
calls the same task body the in-process pipeline calls (`tasks.<step>.fn`) with the typed sections that
`validate` built and its own artifact store (only the JSON arguments travel), logs its metrics to the
pipeline's MLflow run (`run_id` is one of its arguments) and records {step, key, cached} as a table
artifact of its flow run, which is how the pipeline reads the key back (no Prefect result storage
needs to be shared; the artifact store does: S3 `artifact_root=s3://...`, or one volume for all workers).

    prefect deployment run qrpo-step/qrpo-step-gpu --param step=score \\
        --param 'overrides=["experiment=smoke"]' --param 'arguments={"samples_key": "...", ...}'
"""

from __future__ import annotations

import functools
import inspect
import json
import typing
from types import SimpleNamespace

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NONE
from prefect.states import Completed

from flows import tasks
from flows.dispatch import DEPLOYMENT, DISPATCHABLE, RESULT_ARTIFACT, check_dispatch, dispatch_section  # noqa: F401  (check_dispatch re-exported)
from qrpo.store.artifacts import ArtifactStore
from qrpo.config.sections import Sections
from qrpo.errors import InputError

# The steps that can run on another pool (flows.dispatch.DISPATCHABLE): those that load a model or a reward model.
STEPS = {name: getattr(tasks, name) for name in DISPATCHABLE}


@flow(name="qrpo-step", log_prints=True)
def qrpo_step(step: str, overrides: list[str] | None = None, arguments: dict | None = None) -> dict:
    """Run one pipeline step (`step`: one of STEPS) for the config of these Hydra overrides, with the
    step's other arguments (artifact keys, numbers, the MLflow `run_id`); return {step, key, cached}."""
    from flows.validate import load_config

    if step not in STEPS:
        raise InputError(f"step={step!r} is not one of {', '.join(STEPS)}")
    config, sections = load_config(list(overrides or []))
    from_config = config_arguments(STEPS[step].fn, sections, ArtifactStore(config.get("artifact_root")))
    state = STEPS[step].fn(**from_config, **(arguments or {}))  # the in-process pipeline's own task body
    result = {"step": step, "key": state.data, "cached": state.name == "Cached"}
    create_table_artifact([result], key=RESULT_ARTIFACT, description=f"{step} artifact: {state.message}")
    get_run_logger().info("%s: artifact %s (%s)", step, state.data, "cached" if result["cached"] else "built")
    return result


def config_parameters(function) -> dict[str, type]:
    """The parameters of a task that its run's config fills in, by name: those annotated with a typed
    section class (qrpo.config.sections) or ArtifactStore. A remote step receives only the others (JSON)."""
    section_classes = set(typing.get_type_hints(Sections).values())
    return {name: hint for name, hint in typing.get_type_hints(function).items()
            if name != "return" and (hint in section_classes or hint is ArtifactStore)}


def config_arguments(function, sections: Sections, store: ArtifactStore) -> dict:
    """The config parameters of a task (`config_parameters`) with their values: each section from `sections`, the store."""
    return {name: store if hint is ArtifactStore else sections.of(hint) for name, hint in config_parameters(function).items()}


def step_runners(config: dict, overrides: list[str]) -> SimpleNamespace:
    """The pipeline's heavy steps by name (`.sample`, `.train`, ...): the in-process task itself, or
    (dispatch.pool set, the step in dispatch.steps) a task of the same name and signature that runs it as
    a `qrpo-step` deployment run on that pool and finishes with the same state ("Cached" or "Completed",
    data: the artifact key)."""
    pool, steps = dispatch_section(config)
    return SimpleNamespace(**{name: _remote(name, pool, list(overrides)) if pool is not None and name in steps else original
                              for name, original in STEPS.items()})


def _remote(step: str, pool: str, overrides: list[str]):
    original = STEPS[step]
    signature = inspect.signature(original.fn)

    @functools.wraps(original.fn)  # the same signature: Prefect resolves the same upstream states into the same names
    def run_on_pool(*args, **kwargs):
        from prefect.deployments import run_deployment
        from prefect.runtime import flow_run, task_run

        arguments = dict(signature.bind(*args, **kwargs).arguments)
        # the sections and the store stay here: the step composes its own config from `overrides`
        own = {name: arguments.pop(name) for name in config_parameters(original.fn) if name in arguments}
        store = next(value for value in own.values() if isinstance(value, ArtifactStore))
        name = DEPLOYMENT.format(pool=pool)
        run = run_deployment(name, parameters={"step": step, "overrides": overrides, "arguments": arguments},
                             flow_run_name=f"{flow_run.get_name()}-{task_run.get_name()}", tags=["qrpo", step],
                             idempotency_key=f"{task_run.get_id()}", poll_interval=2, as_subflow=True)
        where = f"{name} flow run {run.name!r} ({run.id}) on pool {run.work_pool_name}"
        if not run.state.is_completed():
            raise RuntimeError(f"step {step} did not complete: {where} is {run.state.name}: {run.state.message}")
        result = read_step_result(run.id)
        check_shared_store(store, step, result["key"], where)
        return Completed(name="Cached" if result["cached"] else "Completed", data=result["key"], message=where)

    return task(name=original.name, cache_policy=NONE)(run_on_pool)


def check_shared_store(store: ArtifactStore, step: str, key: str, where: str) -> None:
    """The artifact a step made on another worker must be in this process's artifact store too."""
    if store.get(step, key) is None:  # a step's artifacts live in the folder of its name
        raise InputError(f"step {step} ran as {where} and made artifact {step}/{key}, but this process's artifact "
                         f"store {store.root} does not have it: with dispatch.pool every worker must see the same artifact store "
                         "(artifact_root=s3://..., or one volume mounted at the same path)")


def read_step_result(flow_run_id) -> dict:
    """{step, key, cached} as the `qrpo-step` flow run recorded it (its table artifact)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]), key=ArtifactFilterKey(any_=[RESULT_ARTIFACT])))
    if not found:
        raise RuntimeError(f"qrpo-step flow run {flow_run_id} completed without its {RESULT_ARTIFACT} artifact")
    return json.loads(found[0].data)[0]
