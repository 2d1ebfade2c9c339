"""Prompt datasets: a JSONL file with a prompt column and a train/eval split column.

The demo set `data/chat/prompts.jsonl` ships with the repository; any JSONL with the same two
columns (names configurable) works.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from qrpo.config import DatasetConfig
from qrpo.errors import InputError

SPLITS = ("train", "eval")


def load_prompts(cfg: DatasetConfig) -> pa.Table:
    """Table (prompt_id, prompt, split) from the configured JSONL file, validated."""
    path = Path(cfg.path).expanduser()
    if not path.is_file():
        raise InputError(f"dataset.path={str(path)!r} does not exist; point it at a JSONL file of prompts")
    rows = []
    with path.open() as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(f"{path}:{line_no} is not valid JSON ({err.msg}); fix or remove that line") from None
            for column in (cfg.prompt_column, cfg.split_column):
                if column not in row:
                    raise InputError(
                        f"{path}:{line_no} has no column {column!r} (columns: {', '.join(sorted(row))}); "
                        f"set dataset.prompt_column / dataset.split_column to the right names"
                    )
            if row[cfg.split_column] not in SPLITS:
                raise InputError(f"{path}:{line_no} has split {row[cfg.split_column]!r}; use one of {', '.join(SPLITS)}")
            rows.append((row.get("id", f"{path.stem}-{line_no}"), str(row[cfg.prompt_column]), row[cfg.split_column]))
    limits = {"train": cfg.max_train_prompts, "eval": cfg.max_eval_prompts}
    kept = []
    for split in SPLITS:
        split_rows = [r for r in rows if r[2] == split]
        if not split_rows:
            raise InputError(f"{path} has no {split!r} prompts; every dataset needs both a train and an eval split")
        kept += split_rows[: limits[split] or None]
    ids, prompts, splits = zip(*kept)
    return pa.table({"prompt_id": list(map(str, ids)), "prompt": list(prompts), "split": list(splits)})


def split(prompts: pa.Table, name: str) -> pa.Table:
    """The rows of one split ("train" or "eval")."""
    return prompts.filter(pc.equal(prompts.column("split"), name))
