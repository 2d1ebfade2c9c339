"""The two web UIs for real, in a headless Chromium (its own CLI: --dump-dom and --screenshot).

One smoke `--multirun` sweep (2 jobs) runs against a real `prefect server start` (SQLite, UI on); then
- MLflow: a real `mlflow server` on the sweep's SQLite store; the experiment page lists the parent run and
  its children, the parent's page shows the comparison artifacts (comparison.md names every child run);
- Prefect: the page of one job's flow run shows its name, state and its task runs' names
  (as the labels of their log lines: the task graph itself is a canvas).
Screenshots are saved to $QRPO_TEST_ARTIFACTS when set, else to the test's tmp folder; the path is printed.
Skipped where no chromium binary is installed (apt-get install chromium).
"""

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.flows.test_sweep import run_multirun
from tests.ops.conftest import BIN, free_port, prefect_server_process, wait_http

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"))), None)
SWEEP = ["experiment=smoke", "algorithm.beta=0.1,0.2"]

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH (apt-get install chromium)")]


def chromium(url: str, *args: str, budget_ms: int = 15000) -> str:
    """Headless Chromium on `url` with a fresh profile; its stdout (the DOM with --dump-dom)."""
    with tempfile.TemporaryDirectory(prefix="qrpo-chromium-") as profile:
        proc = subprocess.run(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--hide-scrollbars", "--window-size=1400,900", f"--virtual-time-budget={budget_ms}", f"--user-data-dir={profile}",
             *args, url],
            capture_output=True, text=True, timeout=240)
    return proc.stdout


def page(url: str, expected: list[str], screenshot: Path, timeout: float = 180) -> str:
    """The DOM of `url` once it contains every `expected` string (a single-page app fills in after its API
    calls: poll, with a growing time budget), and a screenshot of it; fails naming what never appeared."""
    deadline, budget = time.time() + timeout, 15000
    while True:
        dom = chromium(url, "--dump-dom", budget_ms=budget)
        text = " ".join(re.sub(r"<[^>]+>", " ", dom).split())  # what the page says, markup aside
        missing = [want for want in expected if want not in dom and want not in text]
        if not missing or time.time() > deadline:
            break
        budget = min(2 * budget, 60000)
        time.sleep(1)
    chromium(url, f"--screenshot={screenshot}", budget_ms=budget)
    print(f"screenshot of {url}: {screenshot}")
    assert screenshot.is_file() and screenshot.stat().st_size > 10_000, f"no screenshot of {url}"
    assert not missing, f"{url} never showed {missing}; its DOM ends: {dom[-2000:]}"
    return dom


def clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "QRPO_"))}
    return {**env, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "MLFLOW_DISABLE_TELEMETRY": "true", **extra}


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory):
    folder = Path(os.environ["QRPO_TEST_ARTIFACTS"]) if os.environ.get("QRPO_TEST_ARTIFACTS") else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"browser screenshots: {folder}")
    return folder


@pytest.fixture(scope="module")
def prefect_ui(tmp_path_factory):
    """A real Prefect server with its UI (SQLite under its own PREFECT_HOME); yields its base URL."""
    folder = tmp_path_factory.mktemp("prefect_ui")
    with prefect_server_process(clean_env(PREFECT_HOME=str(folder / "home")), folder / "server.log", ui=True) as api:
        yield api.removesuffix("/api")


@pytest.fixture(scope="module")
def sweep(prefect_ui, tmp_path_factory):
    """The 2-job smoke sweep, its flows run on `prefect_ui`: (QRPO_HOME, parent run, children)."""
    home = tmp_path_factory.mktemp("browser_home")
    client, runs, _ = run_multirun(SWEEP, home, tmp_path_factory.mktemp("cwd"), api=f"{prefect_ui}/api")
    parent = next(r for r in runs if r.data.tags.get("qrpo.sweep") == "true")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2 and all(r.info.status == "FINISHED" for r in [parent, *children])
    return home, parent, children


@pytest.fixture(scope="module")
def mlflow_ui(sweep, tmp_path_factory):
    """`mlflow server` on the sweep's SQLite store (artifacts: the runs' own local locations); its base URL."""
    home = sweep[0]
    folder = tmp_path_factory.mktemp("mlflow_ui")
    port = free_port()
    log = open(folder / "server.log", "w")
    server = subprocess.Popen([str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}",
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              cwd=folder, env=clean_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", 180, server)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_mlflow_ui_shows_the_sweep_parent_its_children_and_the_comparison(sweep, mlflow_ui, screenshots):
    _, parent, children = sweep
    experiment = f"{mlflow_ui}/#/experiments/{parent.info.experiment_id}"
    page(f"{experiment}/runs", [parent.info.run_name, "3 matching runs"], screenshots / "mlflow_experiment_runs.png")
    run = f"{experiment}/runs/{parent.info.run_id}"
    page(run, [parent.info.run_name, "Child runs", *(c.info.run_name for c in children), "sweep/children"],
         screenshots / "mlflow_parent_run.png")
    page(f"{run}/artifacts/comparison/comparison.md",  # the table names each child run
         ["comparison.json", "comparison.csv", "reward_vs_kl.png", "reward_vs_M.png", *(c.info.run_id for c in children)],
         screenshots / "mlflow_parent_comparison.png")


def test_prefect_ui_shows_a_flow_run_and_its_task_runs(sweep, prefect_ui, screenshots):
    _, _, children = sweep
    child = children[0]
    flow_run_id, flow_run_name = child.data.tags["prefect.flow_run_id"], child.data.tags["prefect.flow_run_name"]
    # the task graph is a canvas; the task runs' names are in the DOM as the labels of their log lines
    dom = page(f"{prefect_ui}/runs/flow-run/{flow_run_id}",
               [flow_run_name, "qrpo-pipeline", "Completed", "Task runs", "prepare_model-", "load_dataset-",
                "training_data-", "report-"],
               screenshots / "prefect_flow_run.png")
    assert "Beginning flow run" in dom
