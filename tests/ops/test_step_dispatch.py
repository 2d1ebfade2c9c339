"""Heavy steps on their own pool, for real: a Prefect server on 127.0.0.1 (SQLite), two `process` work
pools `cpu` and `gpu`, one real `prefect worker` subprocess on each, `prefect deploy` of the pipeline (on
`cpu`) and of qrpo-step-gpu from the root prefect.yaml, and one pipeline deployment run with
dispatch.pool=gpu: the listed steps must run as qrpo-step subflows on the gpu worker, once each, and the
pipeline must finish with their artifacts and metrics in its one MLflow run. A second run of the same
overrides finds every artifact: its gpu steps, and the pipeline's states for them, are "Cached"."""

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.ops.conftest import prefect_server_process
from tests.ops.test_prefect_deployment import stop

ROOT = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).parent / "prefect")
DISPATCHED = ["train", "eval_logps"]  # two steps (one process each on the gpu worker), the second reads the first's key


async def _run_pipeline(overrides: list[str], timeout: float):
    """Run qrpo-pipeline/qrpo-pipeline to the end; return the run, its task runs, the qrpo-step runs it started
    and the step deployment."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterId

    async with get_client() as client:
        deployment = await client.read_deployment_by_name("qrpo-pipeline/qrpo-pipeline")
        created = await client.create_flow_run_from_deployment(deployment.id, parameters={"overrides": overrides})
        deadline = time.time() + timeout
        while True:
            run = await client.read_flow_run(created.id)
            if run.state.is_final():
                break
            if time.time() > deadline:
                raise TimeoutError(f"pipeline run {created.id} is still {run.state.name} after {timeout} s")
            await asyncio.sleep(2)
        task_runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
        ours = {t.id for t in task_runs}  # the step runs this pipeline run started (their parent: one of its tasks)
        step_runs = [r for r in await client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["qrpo-step"])))
                     if r.parent_task_run_id in ours]
        step_deployment = await client.read_deployment_by_name("qrpo-step/qrpo-step-gpu")
        return run, task_runs, step_runs, step_deployment


async def _wait_pools(names, timeout):
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        deadline = time.time() + timeout
        for name in names:
            while True:
                try:
                    await client.read_work_pool(name)
                    break
                except ObjectNotFound:
                    if time.time() > deadline:
                        raise TimeoutError(f"work pool {name} was not created in {timeout} s") from None
                    await asyncio.sleep(1)


@pytest.mark.slow
def test_dispatch_pool_gpu_runs_the_listed_steps_on_the_gpu_workers_as_subflows_of_the_pipeline(tmp_path):
    from mlflow.tracking import MlflowClient
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.step import RESULT_ARTIFACT, check_dispatch
    from qrpo.store.artifacts import ArtifactStore
    from qrpo.errors import InputError

    home = tmp_path / "qrpo_home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "QRPO_"))}
    env.update(PREFECT_HOME=str(tmp_path / "prefect_home"), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
               PREFECT_WORKER_QUERY_SECONDS="2", QRPO_HOME=str(home), PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    workers, logs, services = {}, {}, contextlib.ExitStack()
    try:
        api = services.enter_context(prefect_server_process(env, tmp_path / "server.log"))
        env["PREFECT_API_URL"] = api
        for pool in ("cpu", "gpu"):  # each worker creates its process pool
            logs[pool] = services.enter_context(open(tmp_path / f"{pool}-worker.log", "w"))
            workers[pool] = subprocess.Popen(
                [PREFECT, "worker", "start", "--pool", pool, "--type", "process", "--name", f"{pool}-test-worker"],
                cwd=tmp_path, env=env, stdout=logs[pool], stderr=subprocess.STDOUT)
        with temporary_settings({PREFECT_API_URL: api}):  # this process's client talks to the same server
            asyncio.run(_wait_pools(["cpu", "gpu"], 180))
            proc = subprocess.run([PREFECT, "--no-prompt", "deploy", "--name", "qrpo-pipeline", "--name", "qrpo-step-gpu"],
                                  cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
            assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
            with pytest.raises(InputError, match="has no deployment qrpo-step/qrpo-step-cpu; register it"):
                check_dispatch({"dispatch": {"pool": "cpu", "steps": ["train"]}})  # only the gpu one is deployed

            overrides = ["experiment=smoke", "dispatch.pool=gpu", f"dispatch.steps=[{','.join(DISPATCHED)}]"]
            run, task_runs, step_runs, step_deployment = asyncio.run(_run_pipeline(overrides, 420))
            from prefect.client.orchestration import get_client
            from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

            def step_results(runs):  # {flow run id: {step, key, cached}}, as each qrpo-step run recorded it
                with get_client(sync_client=True) as client:
                    return {r.id: json.loads(client.read_artifacts(artifact_filter=ArtifactFilter(
                        flow_run_id=ArtifactFilterFlowRunId(any_=[r.id]), key=ArtifactFilterKey(any_=[RESULT_ARTIFACT])))[0].data)[0]
                        for r in runs}

            results = step_results(step_runs)
            again, again_tasks, again_steps, _ = asyncio.run(_run_pipeline(overrides, 300))
            again_results = step_results(again_steps)
        worker_logs = {pool: (tmp_path / f"{pool}-worker.log").read_text() for pool in workers}
        assert run.state.is_completed(), f"{run.state}\n{worker_logs['cpu'][-3000:]}\n{worker_logs['gpu'][-3000:]}"
        assert run.work_pool_name == "cpu" and run.parameters == {"overrides": overrides}

        # each listed step: one qrpo-step run of qrpo-step-gpu, on the gpu pool, completed, a subflow of the pipeline run
        assert sorted(r.parameters["step"] for r in step_runs) == sorted(DISPATCHED), "a step ran twice, or not at all"
        by_id = {t.id: t for t in task_runs}
        for step_run in step_runs:
            step = step_run.parameters["step"]
            assert step_run.state.is_completed(), f"{step}: {step_run.state}\n{worker_logs['gpu'][-3000:]}"
            assert step_run.work_pool_name == "gpu" and step_run.deployment_id == step_deployment.id
            assert step_run.parameters["overrides"] == overrides and step_run.parameters["arguments"]["run_id"]
            parent = by_id.get(step_run.parent_task_run_id)
            assert parent is not None and parent.flow_run_id == run.id, f"{step}'s run is not linked to a task of the pipeline run"
            assert parent.state.is_completed()  # the server mirrors the subflow's state onto it
            submitted = f"submitting flow run '{step_run.id}'"  # the worker's own line (flow run output lands in its log too)
            assert f"Worker 'gpu-test-worker' {submitted}" in worker_logs["gpu"] and submitted not in worker_logs["cpu"]
            assert f"{step}: artifact {results[step_run.id]['key']} (built)" in worker_logs["gpu"]  # the step's process said so
            assert step_run.infrastructure_pid and step_run.infrastructure_pid != run.infrastructure_pid
            assert results[step_run.id]["step"] == step and results[step_run.id]["cached"] is False
        submitted = f"submitting flow run '{run.id}'"
        assert f"Worker 'cpu-test-worker' {submitted}" in worker_logs["cpu"] and submitted not in worker_logs["gpu"]

        # the pipeline's own task for each step ran once, finished "Completed" (nothing was cached), and no other
        # heavy step left the pipeline's process
        names = [t.name.split("/")[0] if "/" in t.name else t.name.rsplit("-", 1)[0] for t in task_runs]
        for step in DISPATCHED:
            assert names.count(step) == 1, names
        ours = [t for t in task_runs if t.name.rsplit("-", 1)[0] in DISPATCHED]
        assert all(t.state.name == "Completed" for t in ours), [(t.name, t.state.name) for t in ours]
        assert {"prepare_model", "load_dataset", "sample", "score", "training_data", "ref_logps", "evaluate", "report"} <= set(names)

        # the keys the gpu steps made are the artifacts in the shared store, and the pipeline went on with them
        store = ArtifactStore(home / "artifacts")
        keys = {r["step"]: r["key"] for r in results.values()}
        assert store.keys("train") == [keys["train"]] and store.keys("eval_logps") == [keys["eval_logps"]]
        assert store.require("eval_logps", keys["eval_logps"]).manifest["inputs"]["train"] == keys["train"]
        assert store.keys("evaluate"), "the pipeline did not evaluate the gpu step's output"

        # one MLflow run: the gpu steps logged into it (train/..., eval_logps/...), the pipeline finished it
        client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
        by_flow_run = {r.data.tags["prefect.flow_run_id"]: r for r in client.search_runs([client.get_experiment_by_name("qrpo").experiment_id])}
        assert set(by_flow_run) == {str(run.id), str(again.id)}  # one MLflow run per pipeline run, none per step
        runs = [by_flow_run[str(run.id)]]
        assert runs[0].info.status == "FINISHED"
        assert {r.parameters["arguments"]["run_id"] for r in step_runs} == {runs[0].info.run_id}
        metrics = runs[0].data.metrics
        assert any(k.startswith("train/") for k in metrics) and "eval_logps/policy_logp_mean" in metrics
        assert "eval/reward_mean" in metrics
        assert runs[0].data.tags["cached_steps"] == ""

        # the second run: the same steps dispatched once each, each found its artifact, and the pipeline's states say "Cached"
        assert again.state.is_completed() and sorted(r.parameters["step"] for r in again_steps) == sorted(DISPATCHED)
        assert all(r.state.is_completed() and r.work_pool_name == "gpu" for r in again_steps)
        assert {r["step"]: (r["key"], r["cached"]) for r in again_results.values()} == {step: (key, True) for step, key in keys.items()}
        again_names = {t.name.rsplit("-", 1)[0]: t.state.name for t in again_tasks if t.name.rsplit("-", 1)[0] in DISPATCHED}
        assert again_names == {step: "Cached" for step in DISPATCHED}
        second = by_flow_run[str(again.id)]
        assert {r.parameters["arguments"]["run_id"] for r in again_steps} == {second.info.run_id}
        assert second.info.status == "FINISHED" and any(k.startswith("train/") for k in second.data.metrics)  # logged when cached too
        assert {"train", "eval_logps"} <= set(second.data.tags["cached_steps"].split(","))
        assert store.keys("train") == [keys["train"]]  # nothing trained twice
    finally:
        for proc in workers.values():
            stop(proc)
        services.close()
