"""The deployment path for real: PostgreSQL 15 (its own cluster in a temp folder), a Prefect server on
127.0.0.1 backed by it, a `process` work pool, `prefect deploy` from the root prefect.yaml, a real
`prefect worker start --pool cpu` subprocess, and a deployment run (experiment=smoke) to completion
with its artifacts and MLflow run."""

import asyncio
import contextlib
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from tests.ops.conftest import free_port, prefect_server_process

ROOT = Path(__file__).resolve().parents[2]
PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
PREFECT = str(Path(sys.executable).parent / "prefect")


def test_prefect_yaml_deploys_the_pipeline_and_its_steps_on_cpu_and_gpu_pools_with_overrides_as_parameters():
    """The pipeline on both pools, and the one-step flow on both pools (dispatch.pool=<pool> starts
    qrpo-step/qrpo-step-<pool>); every deployment's one default parameter is the Hydra override list."""
    from flows.step import DEPLOYMENT

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in spec["deployments"]}
    assert {name: (d["entrypoint"], d["work_pool"]["name"]) for name, d in deployments.items()} == {
        "qrpo-pipeline": ("flows/pipeline.py:qrpo_pipeline", "cpu"),
        "qrpo-pipeline-gpu": ("flows/pipeline.py:qrpo_pipeline", "gpu"),
        "qrpo-step-cpu": ("flows/step.py:qrpo_step", "cpu"),
        "qrpo-step-gpu": ("flows/step.py:qrpo_step", "gpu"),
    }
    for pool in ("cpu", "gpu"):  # the name the pipeline asks the server for
        assert DEPLOYMENT.format(pool=pool) == f"qrpo-step/qrpo-step-{pool}"
    for d in deployments.values():
        path, name = d["entrypoint"].split(":")
        assert (ROOT / path).is_file() and f"def {name}(" in (ROOT / path).read_text()
        assert d["parameters"] == {"overrides": []}  # the step flow's `step` and `arguments` come from the pipeline


class Postgres:
    """A throw-away PostgreSQL cluster; initdb refuses root, so as root it runs as the `postgres` user."""

    def __init__(self):
        self.bin = Path(PG_BIN[-1]).parent
        self.dir = Path(tempfile.mkdtemp(prefix="qrpo-pg-"))
        self.port = free_port()
        self.as_user = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]

    def run(self, *args):
        return subprocess.run([*self.as_user, *args], check=True, capture_output=True, text=True, timeout=120)

    def start(self):
        data = self.dir / "data"
        self.run(str(self.bin / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self.run(str(self.bin / "pg_ctl"), "-D", str(data), "-l", str(self.dir / "log"), "-w", "-o",
                 f"-p {self.port} -h 127.0.0.1 -k {self.dir}", "start")
        self.run(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "prefect")
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/prefect"

    def stop(self):
        subprocess.run([*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "fast", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


def stop(proc):
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


async def wait_flow_run(flow_run_id, timeout):
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        deadline = time.time() + timeout
        while time.time() < deadline:
            run = await client.read_flow_run(flow_run_id)
            if run.state.is_final():
                from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

                tasks = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
                return run, tasks
            await asyncio.sleep(2)
    raise TimeoutError(f"flow run {flow_run_id} did not finish in {timeout} s")


@pytest.mark.slow
@pytest.mark.skipif(not PG_BIN, reason="PostgreSQL binaries not found under /usr/lib/postgresql/*/bin (apt-get install postgresql)")
@pytest.mark.skipif(os.geteuid() == 0 and shutil.which("runuser") is None, reason="as root, initdb needs runuser to become `postgres`")
def test_deployment_runs_on_a_real_server_with_postgres_and_a_process_worker(tmp_path):
    from mlflow.tracking import MlflowClient

    from qrpo.store.artifacts import ArtifactStore

    pg, worker, logs, services = Postgres(), None, [], contextlib.ExitStack()
    home = tmp_path / "qrpo_home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "QRPO_"))}
    env.update(PREFECT_HOME=str(tmp_path / "prefect_home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               DO_NOT_TRACK="1", PREFECT_WORKER_QUERY_SECONDS="2", QRPO_HOME=str(home), PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    try:
        database = pg.start()
        api = services.enter_context(prefect_server_process(env, tmp_path / "server.log", database=database))
        env["PREFECT_API_URL"] = api

        def prefect(*args):
            proc = subprocess.run([PREFECT, "--no-prompt", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
            assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
            return proc.stdout

        prefect("work-pool", "create", "cpu", "--type", "process")
        prefect("deploy", "--name", "qrpo-pipeline")
        logs.append(open(tmp_path / "worker.log", "w"))
        worker = subprocess.Popen([PREFECT, "worker", "start", "--pool", "cpu", "--type", "process", "--name", "test-worker"],
                                  cwd=tmp_path, env=env, stdout=logs[-1], stderr=subprocess.STDOUT)
        out = prefect("deployment", "run", "qrpo-pipeline/qrpo-pipeline", "--params", json.dumps({"overrides": ["experiment=smoke"]}))
        found = re.search(r"UUID\W+([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})", out)
        assert found, out
        flow_run_id = found.group(1)

        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: api}):  # the client below talks to the same server
            run, tasks = asyncio.run(wait_flow_run(flow_run_id, 420))
        worker_log = (tmp_path / "worker.log").read_text()
        assert run.state.is_completed(), f"{run.state}\n{worker_log[-4000:]}"
        assert run.parameters == {"overrides": ["experiment=smoke"]}
        names = sorted(t.name.split("/")[0] if "/" in t.name else t.name.rsplit("-", 1)[0] for t in tasks)
        assert all(t.state.is_completed() for t in tasks), names
        assert {"prepare_model", "load_dataset", "sample", "score", "training_data", "ref_logps", "train", "eval_logps",
                "evaluate", "report"} <= set(names)

        store = ArtifactStore(home / "artifacts")
        for step in ("prepare_model", "load_dataset", "sample", "score", "training_data", "ref_logps", "train", "evaluate"):
            assert store.keys(step), f"the worker wrote no {step} artifact"
        client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
        runs = client.search_runs([client.get_experiment_by_name("qrpo").experiment_id])
        assert len(runs) == 1 and runs[0].info.status == "FINISHED"
        assert runs[0].data.tags["prefect.flow_run_id"] == flow_run_id
        assert runs[0].data.tags["prefect.api"] == api and runs[0].data.tags["model"] == "tiny-llama"
        assert "eval/reward_mean" in runs[0].data.metrics
        assert not (tmp_path / ".prefect").exists() and (tmp_path / "prefect_home").is_dir()
    finally:
        stop(worker)
        services.close()
        for log in logs:
            log.close()
        pg.stop()
