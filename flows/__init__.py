"""Prefect flows around the `qrpo` library. Importing this package sets offline-friendly defaults."""

import logging
import os

for _name, _value in {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    # Prefect's own state (profiles, the temporary local API's database) beside ours, not in ~/.prefect
    "PREFECT_HOME": os.path.join(os.path.expanduser(os.environ.get("QRPO_HOME", "~/.cache/qrpo")), "prefect"),
}.items():
    os.environ.setdefault(_name, _value)
logging.getLogger("httpx").setLevel(logging.WARNING)
