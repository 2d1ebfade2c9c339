"""Shared fixtures: every test runs with its own QRPO_HOME (artifacts, MLflow SQLite) and offline."""

import os

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def qrpo_home(tmp_path, monkeypatch):
    """A private QRPO_HOME: artifacts under it, MLflow in sqlite under it."""
    home = tmp_path / "qrpo_home"
    monkeypatch.setenv("QRPO_HOME", str(home))
    monkeypatch.delenv("QRPO_ARTIFACT_ROOT", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return home
