"""Prompt data: `load_prompts(cfg)` reads a dataset into the prompt table; `split(table, name)` picks one split."""

from qrpo.data.prompts import SPLITS, fingerprint, load_prompts, load_splits, split

__all__ = ["SPLITS", "fingerprint", "load_prompts", "load_splits", "split"]
