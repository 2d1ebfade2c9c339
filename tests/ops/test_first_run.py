"""What a new user meets: the stores actually used, commands that work as printed, Prefect's history
under QRPO_HOME, and no stray `Default` experiment.

The whole first run (fresh HOME, no QRPO_HOME, no Prefect server, an empty folder): everything it writes
lands under `$QRPO_HOME` (its default, ~/.cache/qrpo): nothing else under HOME (Hugging Face `datasets`
cache, matplotlib's cache, ~/.prefect), nothing in the folder it ran from; and the summary's `Prefect:`
line, run as printed (only the port moved off 4200, through Prefect's own setting), opens this run; an identical re-run
is cached whole, leaves no process behind, and its flow run is recorded with every task run.
"""

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from qrpo.store import tracking
from tests.ops.conftest import free_port, wait_http

ROOT = Path(__file__).resolve().parents[2]
# the smoke run's steps, as its summary's "cached steps" line names them
STEPS = ["eval_logps", "evaluate", "load_dataset", "prepare_model", "ref_logps", "sample/eval_policy_seed1235", "sample/eval_reference",
         "sample/train", "score/eval_policy_seed1235", "score/eval_reference", "score/train", "train", "training_data"]


def _run_in_own_session(command: list[str], **kwargs) -> tuple[subprocess.CompletedProcess, list[int]]:
    """Run `command` to its end in a session of its own: (the completed process, its session's processes still alive)."""
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kwargs) as p:
        out, err = p.communicate(timeout=900)
    return subprocess.CompletedProcess(command, p.returncode, out, err), _session_processes(p.pid)


def _session_processes(session: int) -> list[int]:
    """The processes still alive in a session (a command started with start_new_session: its session id is its pid)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


def test_tracking_store_honours_qrpo_home_then_mlflow_tracking_uri(qrpo_home, monkeypatch):
    assert tracking.tracking_uri() == f"sqlite:///{qrpo_home / 'mlflow.db'}"
    assert tracking.artifact_location() == (qrpo_home / "mlartifacts").as_uri()
    monkeypatch.setenv("QRPO_MLFLOW_ARTIFACT_ROOT", "s3://bucket/mlflow")
    assert tracking.artifact_location() == "s3://bucket/mlflow"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.tracking_uri() == "http://127.0.0.1:5000"
    assert tracking.mlflow_ui_command() == "open http://127.0.0.1:5000"


def test_a_new_store_opens_on_no_default_experiment(qrpo_home):
    uri = tracking.tracking_uri()
    client = MlflowClient(uri)
    assert client.search_experiments() == [], "MLflow's `Default` (artifacts in ./mlruns) must not be offered"
    client.create_experiment("qrpo")
    assert [e.name for e in client.search_experiments()] == ["qrpo"]


def test_mlflow_ui_command_names_the_store_and_the_venv_path_when_mlflow_is_not_on_path(qrpo_home, monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    command = tracking.mlflow_ui_command()
    executable = Path(sys.executable).parent / "mlflow"
    assert command == f"{executable} ui --backend-store-uri sqlite:///{qrpo_home / 'mlflow.db'}"
    assert os.access(command.split()[0], os.X_OK), "the printed command must run as printed"
    monkeypatch.setenv("PATH", f"{executable.parent}:/usr/bin:/bin")
    assert tracking.mlflow_ui_command().startswith("mlflow ui --backend-store-uri sqlite:///")


def test_prefect_home_defaults_under_qrpo_home_and_is_not_created_by_an_import(tmp_path):
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "QRPO_"))}
    env.update(QRPO_HOME=str(home), PYTHONPATH=str(ROOT))
    code = "import flows; from prefect.settings import get_current_settings; print(get_current_settings().home)"
    proc = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()) == home / "prefect"
    assert not home.exists(), "importing the flows must write nothing"


@pytest.mark.slow
def test_a_first_run_writes_only_under_qrpo_home_and_its_prefect_line_opens_the_run(tmp_path):
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("QRPO_", "PREFECT_", "MLFLOW_", "HF_", "MPLCONFIGDIR", "XDG_"))}
    env.update(HOME=str(home), PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    command = [sys.executable, "-m", "flows.cli", "experiment=smoke", "dataset.max_train_prompts=8"]
    proc, left = _run_in_own_session(command, cwd=cwd, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert left == [], "a process of the run (its temporary Prefect server) outlived it"
    # the identical re-run: every step cached, its temporary server started during validation (the home has a
    # Prefect database now), stopped at the end; its flow run recorded beside the first one
    again, left = _run_in_own_session(command, cwd=cwd, env=env)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert left == []
    cached = next(line for line in again.stdout.splitlines() if line.strip().startswith("cached steps"))
    assert cached.split(maxsplit=2)[2].split(", ") == sorted(STEPS), cached
    assert "Error" not in again.stderr, again.stderr[-3000:]

    qrpo_home = home / ".cache" / "qrpo"
    outside = sorted(str(p.relative_to(home)) for p in home.rglob("*")
                     if p.is_file() and not p.is_relative_to(qrpo_home))
    assert outside == [], f"written under HOME outside QRPO_HOME: {outside}"
    assert list(cwd.iterdir()) == [], "a run writes nothing in the folder it runs from"
    assert (qrpo_home / "cache" / "huggingface" / "datasets").is_dir(), "the datasets cache moved under QRPO_HOME"

    lines = [next(line for line in p.stdout.splitlines() if line.strip().startswith("Prefect:")) for p in (proc, again)]
    matches = [re.fullmatch(r"\s*Prefect: (PREFECT_HOME=\S+ \S+ server start)   then open http://127\.0\.0\.1:4200/runs/flow-run/(\S+)", line)
               for line in lines]
    assert all(matches), lines
    (command, flow_run_id), (command_again, rerun_id) = (m.groups() for m in matches)
    assert f"PREFECT_HOME={qrpo_home / 'prefect'} " in command and command_again == command and rerun_id != flow_run_id

    port = free_port()
    server = subprocess.Popen(["bash", "-c", command], env={**env, "PREFECT_SERVER_API_PORT": str(port), "PREFECT_UI_ENABLED": "false"},
                              cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/api/health", 180, server)
        flow_runs = []
        for run_id in (flow_run_id, rerun_id):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/flow_runs/{run_id}", timeout=10) as response:
                flow_runs.append(json.load(response))
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/task_runs/count", method="POST", headers={"Content-Type": "application/json"},
                                         data=json.dumps({"flow_runs": {"id": {"any_": [rerun_id]}}}).encode())
        with urllib.request.urlopen(request, timeout=10) as response:
            rerun_tasks = json.load(response)
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
    assert [(r["id"], r["state_type"]) for r in flow_runs] == [(flow_run_id, "COMPLETED"), (rerun_id, "COMPLETED")]
    assert rerun_tasks == len(STEPS) + 1, rerun_tasks  # every step's task run and the report's, none lost at the server's stop
    outside = sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file() and not p.is_relative_to(qrpo_home))
    assert outside == [], f"the printed server command wrote under HOME outside QRPO_HOME: {outside}"
