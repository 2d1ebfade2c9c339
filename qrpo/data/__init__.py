"""Data: prompts (`prompts`: a dataset read into the prompt table, the `load_dataset` step) and the regimes that
turn scored samples into training examples (`regimes`: the `offline_samples` and `training_data` steps)."""

from qrpo.data.prompts import (
    LOAD_DATASET_VERSION, SPLITS, fingerprint, load_dataset, load_dataset_request, load_prompts, load_splits, split,
)

__all__ = ["LOAD_DATASET_VERSION", "SPLITS", "fingerprint", "load_dataset", "load_dataset_request", "load_prompts", "load_splits",
           "split"]
