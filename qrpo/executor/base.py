"""The generic shard mechanism: a plan of fixed-size shards, a function per shard, a folder of finished shards.

`run_table_shards(num_rows, shard_rows, compute, folder, executor)` computes `compute(rows) -> pa.Table`
for every shard of rows that `folder` (the step's partial folder, `qrpo.store.shards.ShardFolder`) does not
hold yet, each written atomically by the worker that computed it, then reads every shard back and
concatenates them in shard order. The executor decides where the missing shards run: `LocalExecutor`
here, in order; `qrpo.executor.ray.RayExecutor` as Ray tasks (`qrpo.executor.choice.executor_for` picks one).
See the package docstring for the design.
"""

from __future__ import annotations

import os
import socket
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import pyarrow as pa

from qrpo.executor import cache
from qrpo.store.shards import ShardFolder, plan, shard_name


class Executor(ABC):
    """Runs `fn(item)` for each item (each call writes its own result) and returns one placement record per
    item: {"item": ..., "node": ..., "pid": ...}, where it ran."""

    kind = "local"

    @abstractmethod
    def map(self, fn: Callable[[Any], Any], items: Sequence[Any], name: str) -> list[dict]:
        ...


def placement(item: Any, node: str | None = None) -> dict:
    return {"item": item, "node": node or socket.gethostname(), "pid": os.getpid()}


class LocalExecutor(Executor):
    """Every shard in this process, in shard order; the model a shard loaded is kept for the next shard
    of the step and released at its end."""

    def map(self, fn, items, name):
        records = []
        cache.configure(None)
        try:
            for item in items:
                fn(item)
                records.append(placement(item))
        finally:
            cache.release()
        return records


@dataclass
class ShardTask:
    """One shard of rows: skipped when its file exists, else computed and written atomically."""

    compute: Callable[[range], pa.Table]
    folder: ShardFolder
    prefix: str = "shard"

    def __call__(self, rows: range) -> str:
        name = shard_name(rows, self.prefix)
        if not self.folder.exists(name):
            self.folder.write(name, self.compute(rows))
        return name


def run_table_shards(num_rows: int, shard_rows: int, compute: Callable[[range], pa.Table], folder: ShardFolder,
                     executor: Executor, *, prefix: str = "shard", name: str = "shards") -> pa.Table:
    """`compute` over every shard of `num_rows` rows (`shard_rows` each), resumed from `folder`; the shards'
    tables concatenated in shard order (one row per input row when `compute` returns one per row)."""
    shards = plan(num_rows, shard_rows)
    missing = [rows for rows in shards if not folder.exists(shard_name(rows, prefix))]
    if missing:
        executor.map(ShardTask(compute, folder, prefix), missing, name=name)
    folder.pull()
    tables = [folder.read(shard_name(rows, prefix)) for rows in shards]
    if not tables:
        return compute(range(0, 0))
    return pa.concat_tables(tables)
