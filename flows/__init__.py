"""Prefect flows around the `qrpo` library. Importing this package sets offline-friendly defaults."""

import logging
import os
import warnings

_HOME = os.path.expanduser(os.environ.get("QRPO_HOME", "~/.cache/qrpo"))
for _name, _value in {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    # a comparison downloads every arm's per_prompt.csv: one bar per file would bury the table
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    # Prefect's own state (profiles, the temporary local API's database) beside ours, not in ~/.prefect
    # the temporary local API migrates a new database on the first run of a QRPO_HOME: slow on a busy machine
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_HOME": os.path.join(_HOME, "prefect"),
    # matplotlib's config and font cache (it writes ~/.config/matplotlib, ~/.cache/matplotlib otherwise)
    "MPLCONFIGDIR": os.path.join(_HOME, "cache", "matplotlib"),
}.items():
    os.environ.setdefault(_name, _value)
if not os.environ.get("HF_DATASETS_CACHE") and not os.environ.get("HF_HOME"):
    # the `datasets` cache (Arrow files, locks) of the prompts we load; the hub's model cache stays where
    # it is (~/.cache/huggingface/hub), so models a user already has keep resolving by their hub name
    os.environ["HF_DATASETS_CACHE"] = os.path.join(_HOME, "cache", "huggingface", "datasets")
logging.getLogger("httpx").setLevel(logging.WARNING)
# Prefect tries to create PREFECT_HOME when it is imported; ours is created only once a run starts
# (flows.cli.run), so that bad input writes nothing: the attempt before that is not worth a warning.
warnings.filterwarnings("ignore", message="Failed to create the Prefect home directory")
