"""MLflow helpers: where the tracking store is, and what may be logged (never a secret).

Default store: SQLite at an absolute path (`$QRPO_HOME/mlflow.db`, QRPO_HOME defaulting to
~/.cache/qrpo), so Hydra multirun jobs and reruns from any folder share one database; the
environment variable MLFLOW_TRACKING_URI points elsewhere (a server under docker compose).
"""

from __future__ import annotations

import math
import os
import re
import time
from pathlib import Path
from typing import Any

from qrpo.store.artifacts import MANIFEST, qrpo_home

SECRET_WORDS = {"token", "secret", "password", "passwd", "apikey", "credential", "credentials", "auth"}
REDACTED = "***"


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set, else an absolute SQLite URI under QRPO_HOME."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    home = qrpo_home()
    home.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{home / 'mlflow.db'}"
    if not (home / "mlflow.db").exists():
        _hide_default_experiment(uri)
    return uri


def open_tracking_store() -> None:
    """Open a SQLite tracking store now (MLflow keeps one store object per URI for the process: its engine and
    schema check, ~1 s), e.g. while something else boots, rather than in a run's first call. A tracking server
    is left alone (nothing to open ahead; its errors belong to the run)."""
    from mlflow.tracking import MlflowClient

    uri = tracking_uri()
    if uri.startswith("sqlite:"):
        MlflowClient(uri).search_experiments(max_results=1)


def _hide_default_experiment(uri: str) -> None:
    """A new store: soft-delete MLflow's built-in `Default` experiment (artifact location ./mlruns, relative
    to wherever a process happens to run), so that nothing can land in a stray mlruns/ and the UI opens
    on the real experiments."""
    import contextlib

    from mlflow.tracking import MlflowClient

    with contextlib.suppress(Exception):
        MlflowClient(uri).delete_experiment("0")


def tool_command(name: str) -> str:
    """How to call a console script of this environment (mlflow, prefect) as printed to a user: the
    bare name when it is on PATH, else its full path in the virtual environment."""
    import shutil
    import sys

    beside = Path(sys.executable).parent / name
    on_path = shutil.which(name)
    if on_path and (not beside.exists() or Path(on_path).resolve() == beside.resolve()):
        return name
    return str(beside) if beside.exists() else name


def mlflow_ui_command(uri: str | None = None) -> str:
    """`mlflow ui` on the store actually used (a server URI needs no UI: it is one)."""
    uri = uri or tracking_uri()
    if uri.startswith(("http://", "https://")):
        return f"open {uri}"
    return f"{tool_command('mlflow')} ui --backend-store-uri {uri}"


def artifact_location() -> str | None:
    """Where a new experiment keeps run artifacts: $QRPO_MLFLOW_ARTIFACT_ROOT if set (e.g. s3://bucket/mlflow,
    endpoint from MLFLOW_S3_ENDPOINT_URL), else $QRPO_HOME/mlartifacts for the local SQLite store, else
    None (a tracking server decides, e.g. `mlflow server --artifacts-destination s3://...`)."""
    if os.environ.get("QRPO_MLFLOW_ARTIFACT_ROOT"):
        return os.environ["QRPO_MLFLOW_ARTIFACT_ROOT"]
    return None if os.environ.get("MLFLOW_TRACKING_URI") else (qrpo_home() / "mlartifacts").as_uri()


def is_secret_key(key: str) -> bool:
    words = set(re.split(r"[^a-z0-9]+", key.lower()))
    joined = key.lower().replace("_", "").replace("-", "")
    return bool(words & SECRET_WORDS) or joined.endswith(("apikey", "accesskey", "secretkey", "privatekey"))


def _secret_env_values() -> list[str]:
    return [v for k, v in os.environ.items() if is_secret_key(k) and len(v) >= 8]


def redact(config: Any, _secrets: list[str] | None = None) -> Any:
    """A copy of a nested config with secret-named keys and any secret environment value masked."""
    secrets = _secret_env_values() if _secrets is None else _secrets
    if isinstance(config, dict):
        return {k: REDACTED if is_secret_key(str(k)) else redact(v, secrets) for k, v in config.items()}
    if isinstance(config, list):
        return [redact(v, secrets) for v in config]
    if isinstance(config, str):
        for secret in secrets:
            config = config.replace(secret, REDACTED)
    return config


def flatten(config: dict, prefix: str = "") -> dict[str, str]:
    """{"a": {"b": 1}} -> {"a.b": "1"}, values cut to MLflow's 6000-character limit."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:6000]
    return flat


class RunLogger:
    """Logs to one MLflow run by id (safe from any thread or task)."""

    def __init__(self, run_id: str):
        from mlflow.tracking import MlflowClient

        self.run_id = run_id
        self.client = MlflowClient(tracking_uri())

    def metrics(self, values: dict[str, float], prefix: str = "", step: int = 0) -> None:
        self.history([{**values, "step": step}], prefix)

    def history(self, rows: list[dict], prefix: str) -> None:
        """Numeric values of each row, logged at that row's "step" (a training curve, or one point)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(f"{prefix}{k}", float(v), now, int(r["step"])) for r in rows for k, v in r.items() if k != "step" and _is_number(v)]
        for start in range(0, len(batch), 1000):  # MLflow accepts at most 1000 metrics per call
            self.client.log_batch(self.run_id, metrics=batch[start : start + 1000])

    def artifact_files(self, artifact: Path, artifact_path: str) -> None:
        """The files of a step's artifact folder (not its store manifest) under `artifact_path` of the run."""
        for file in sorted(artifact.iterdir()):
            if file.is_file() and file.name != MANIFEST:
                self.client.log_artifact(self.run_id, str(file), artifact_path)

    def tags(self, values: dict[str, Any]) -> None:
        for k, v in values.items():
            self.client.set_tag(self.run_id, k, str(v))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
