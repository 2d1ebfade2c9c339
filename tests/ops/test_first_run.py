"""What a new user meets: the stores actually used, commands that work as printed, Prefect's history
under QRPO_HOME, and no stray `Default` experiment."""

import os
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from qrpo import tracking

ROOT = Path(__file__).resolve().parents[2]


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
