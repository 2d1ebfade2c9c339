"""Prompt datasets through Hugging Face `datasets`: one prompt table with a train and an eval split.

`dataset.path` is a local file (jsonl, json, parquet, csv), a local folder, or a hub name already in
the user's Hugging Face cache (read offline); `data_files` and `subset` are passed to
`datasets.load_dataset`. Prompts are a text column (`prompt_column`) or chat messages
(`messages_column`: a list of {role, content}, the TRL / UltraFeedback / Magpie convention): the last
user turn is the prompt, the turns before it are its context, and anything after it (an answer) is
dropped. Train and eval prompts come from two splits (`eval_split`), from a column of "train"/"eval"
values inside one split (`split_column`), or from a seeded split of `train_split` (`eval_fraction`).

The prompt table (one row per prompt, train rows first):
    prompt_id (string), prompt (string: the last user turn), messages (string: JSON list of
    {"role", "content"} up to and including that turn), split ("train" | "eval"), and every column
    named in `keep_columns`, carried as-is.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from qrpo.config.sections import DatasetConfig, composed
from qrpo.errors import InputError

SPLITS = ("train", "eval")
BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def _is_local(path: str) -> bool:
    return path.startswith(("/", ".", "~")) or Path(path).expanduser().exists()


def _first_bad_json_line(path: Path) -> tuple[int, str] | None:
    """(line number, message) of the first line that is not a JSON object, for a JSON Lines file."""
    with path.open() as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                json.loads(line)
            except json.JSONDecodeError as err:
                return line_no, err.msg
    return None


def load_splits(cfg: DatasetConfig) -> dict[str, Any]:
    """The `datasets.DatasetDict` named by the config (all splits), with clear errors."""
    import datasets  # a heavy import: only where prompts are actually read

    datasets.disable_progress_bars()
    kwargs: dict[str, Any] = {"name": cfg.subset}
    path = cfg.path
    local = Path(path).expanduser()
    if cfg.data_files is not None:
        kwargs["data_files"] = cfg.data_files
        builder = path if path in set(BUILDERS.values()) else str(local) if _is_local(path) else path
    elif local.is_file():
        if local.suffix not in BUILDERS:
            raise InputError(f"dataset.path={path!r}: unknown file type {local.suffix!r}; use one of {', '.join(BUILDERS)}")
        builder, kwargs["data_files"] = BUILDERS[local.suffix], {"train": str(local)}
        if cfg.train_split != "train":
            kwargs["data_files"] = {cfg.train_split: str(local)}
        if local.suffix == ".jsonl" and (bad := _first_bad_json_line(local)):
            raise InputError(f"{local}:{bad[0]} is not valid JSON ({bad[1]}); fix or remove that line")
    elif local.is_dir():
        builder = str(local)
    elif _is_local(path):
        raise InputError(f"dataset.path={str(local)!r} does not exist; point it at a prompt file (jsonl, json, "
                         "parquet, csv), a folder of them, or a hub dataset in your Hugging Face cache")
    else:
        builder = path
    try:
        loaded = datasets.load_dataset(builder, **kwargs)
    except Exception as err:  # datasets raises many types; all mean "cannot read this"
        where = path if cfg.data_files is None else f"{path} (data_files={cfg.data_files})"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"cannot load dataset.path={where!r}: {first}; give a local file or folder, or a hub "
                         "dataset already in your Hugging Face cache (HF_HUB_OFFLINE=1 reads only the cache)") from None
    if not isinstance(loaded, datasets.DatasetDict):
        loaded = datasets.DatasetDict({cfg.train_split: loaded})
    return loaded


def _require_columns(ds, columns: list[str], where: str) -> None:
    for column in columns:
        if column not in ds.column_names:
            raise InputError(
                f"{where} has no column {column!r} (columns: {', '.join(sorted(ds.column_names))}); set "
                "dataset.prompt_column / messages_column / id_column / split_column / keep_columns to the right names"
            )


def _conversation(messages: Any, where: str) -> list[dict[str, str]]:
    """The messages up to and including the last user turn."""
    if isinstance(messages, str):  # a JSON string (CSV, or a table written by hand)
        try:
            messages = json.loads(messages)
        except json.JSONDecodeError:
            pass
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m and "content" in m for m in messages):
        raise InputError(f"{where}: messages must be a list of {{role, content}} objects; got {str(messages)[:80]!r}")
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if not users:
        raise InputError(f"{where}: the conversation has no user turn to use as the prompt")
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in messages[: users[-1] + 1]]


def _rows(ds, cfg: DatasetConfig, where: str, split_name: str | None, id_prefix: str) -> list[dict[str, Any]]:
    """Prompt-table rows of one `datasets` split; `split_name` None: read it from `split_column`;
    without an `id_column` the ids are `<id_prefix>-<row index>`."""
    source = cfg.messages_column or cfg.prompt_column
    columns = [source, *filter(None, [cfg.id_column, cfg.split_column if split_name is None else None]), *cfg.keep_columns]
    _require_columns(ds, columns, where)
    rows = []
    for index, record in enumerate(ds.select_columns(list(dict.fromkeys(columns)))):
        here = f"{where} row {index}"
        if cfg.messages_column:
            messages = _conversation(record[cfg.messages_column], here)
        else:
            messages = [{"role": "user", "content": str(record[cfg.prompt_column])}]
        split = split_name or record[cfg.split_column]
        if split not in SPLITS:
            raise InputError(f"{here} has split {split!r} in column {cfg.split_column!r}; use one of {', '.join(SPLITS)}")
        prompt_id = record[cfg.id_column] if cfg.id_column else f"{id_prefix}-{index}"
        rows.append({"prompt_id": str(prompt_id), "prompt": messages[-1]["content"], "messages": json.dumps(messages),
                     "split": split, **{c: record[c] for c in cfg.keep_columns}})
    return rows


def load_prompts(cfg: DatasetConfig) -> pa.Table:
    """The prompt table (see the module docstring) for this config, validated."""
    loaded = load_splits(cfg)
    if cfg.train_split not in loaded:
        raise InputError(f"dataset {cfg.path!r} has no split {cfg.train_split!r} (splits: {', '.join(loaded)}); "
                         "set dataset.train_split")
    where = f"{cfg.path} [{cfg.train_split}]"
    if cfg.eval_split is not None:
        if cfg.eval_split not in loaded:
            raise InputError(f"dataset {cfg.path!r} has no split {cfg.eval_split!r} (splits: {', '.join(loaded)}); "
                             "set dataset.eval_split")
        rows = _rows(loaded[cfg.train_split], cfg, where, "train", cfg.name)
        rows += _rows(loaded[cfg.eval_split], cfg, f"{cfg.path} [{cfg.eval_split}]", "eval", f"{cfg.name}-{cfg.eval_split}")
    elif cfg.split_column is not None:
        rows = _rows(loaded[cfg.train_split], cfg, where, None, cfg.name)
    else:  # a seeded split of one split: the same prompts go to eval for a given split_seed
        rows = _rows(loaded[cfg.train_split], cfg, where, "train", cfg.name)
        order = np.random.default_rng(cfg.split_seed).permutation(len(rows))
        for i in order[: max(1, round(cfg.eval_fraction * len(rows)))]:
            rows[i]["split"] = "eval"
    limits = {"train": cfg.max_train_prompts, "eval": cfg.max_eval_prompts}
    kept = []
    for split_name in SPLITS:
        split_rows = [r for r in rows if r["split"] == split_name]
        if not split_rows:
            raise InputError(f"{cfg.path} has no {split_name!r} prompts; every dataset needs both a train and an eval split")
        kept += split_rows[: limits[split_name] or None]
    ids = [r["prompt_id"] for r in kept]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise InputError(f"{cfg.path}: prompt id {duplicate!r} appears twice in column {cfg.id_column!r}; ids must be unique")
    return pa.Table.from_pylist(kept)


LOAD_DATASET_VERSION = 3  # of the `load_dataset` artifact: a change re-reads every dataset


def load_dataset_request(cfg: DatasetConfig) -> dict[str, Any]:
    """What the `load_dataset` artifact is keyed on: the dataset section as composed, with the digest of the
    data (`fingerprint`) in place of where it lives. The same request was read and checked once already when
    its artifact exists."""
    return {**composed(cfg), "path": None, "data_files": None, "sha256": fingerprint(cfg)}


def load_dataset(cfg: DatasetConfig, out: Path) -> dict:
    """The `load_dataset` step: the prompt table into `out/data.parquet`; returns the prompt counts per split."""
    from qrpo.store.artifacts import write_table

    table = load_prompts(cfg)
    write_table(table, out / "data.parquet")
    splits = table.column("split").to_pylist()
    return {"train_prompts": splits.count("train"), "eval_prompts": splits.count("eval")}


def fingerprint(cfg: DatasetConfig) -> str:
    """A digest of the data behind the config (file contents, or the cached hub dataset's fingerprints)."""
    local = Path(cfg.path).expanduser()
    digest = hashlib.sha256()
    if cfg.data_files is None and local.is_file():
        digest.update(local.read_bytes())
    elif cfg.data_files is None and local.is_dir():
        for file in sorted(p for p in local.rglob("*") if p.is_file() and ".cache" not in p.parts):
            digest.update(str(file.relative_to(local)).encode())
            digest.update(file.read_bytes())
    else:
        for name, ds in sorted(load_splits(cfg).items()):
            digest.update(f"{name}:{ds._fingerprint}".encode())
    return digest.hexdigest()


def split(prompts: pa.Table, name: str) -> pa.Table:
    """The rows of one split ("train" or "eval")."""
    return prompts.filter(pc.equal(prompts.column("split"), name))
