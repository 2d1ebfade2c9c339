"""A step's shard folder: finished shards of a long step, kept between attempts, shared by every worker.

A shard is one Parquet file in the step's partial folder of the artifact store (`ArtifactStore.partial_dir`,
`<root>/.partial/<step>-<key>/`), named after the rows it holds. It is written atomically (a temporary name
in the same folder, then a rename), so a file that exists is complete, and a shard that exists is never
computed again: a step that died resumes from its finished shards, on this machine or (S3) on another.

With a local store the folder is one path that every worker sees (one machine, or one volume mounted at
the same path on every node). With an S3 store (`artifact_root=s3://...`) each machine has its own local
copy (`$QRPO_HOME/cache/s3/.../.partial/...`) and every shard is also put under `<root>/.partial/<step>-<key>/`
(one PUT, atomic for readers); `exists` and `read` look locally, then on S3, and `pull` copies the S3 shards
this machine lacks. A `ShardFolder` pickles to its (root, name) only, so a Ray worker on another node
resolves the same folder in its own store.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from qrpo.store.artifacts import ArtifactStore, write_table


def shard_name(rows: range, prefix: str = "shard") -> str:
    """`shard-r000000000-000000256.parquet`: the row range is in the name, so a shard written under another
    shard size is never taken for this one."""
    return f"{prefix}-r{rows.start:09d}-{rows.stop:09d}.parquet"


def plan(num_rows: int, shard_rows: int) -> list[range]:
    """Consecutive row ranges of `shard_rows` rows (the last one shorter): fixed by the shard size alone,
    never by the number of workers, so the shards and their rows are the same however many ran them."""
    if shard_rows < 1:
        raise ValueError(f"shard_rows must be >= 1; got {shard_rows}")
    return [range(start, min(start + shard_rows, num_rows)) for start in range(0, num_rows, shard_rows)]


class ShardFolder:
    """The shard files of one step's partial folder (see the module docstring)."""

    def __init__(self, root: str, name: str):
        self.root, self.name = str(root), name
        self._store: ArtifactStore | None = None

    @classmethod
    def of(cls, store: ArtifactStore, partial: Path) -> "ShardFolder":
        """The folder of the partial directory `get_or_build` handed a step's build (`partial`)."""
        return cls(store.url if store.remote else str(store.root), Path(partial).name)

    def __getstate__(self):
        return {"root": self.root, "name": self.name}

    def __setstate__(self, state):
        self.__init__(state["root"], state["name"])

    def __repr__(self) -> str:
        return f"ShardFolder({self.root!r}, {self.name!r})"

    @property
    def store(self) -> ArtifactStore:
        if self._store is None:
            self._store = ArtifactStore(self.root)
        return self._store

    @property
    def local(self) -> Path:
        """This machine's folder (created)."""
        folder = self.store.cache / ".partial" / self.name
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _remote(self, file: str) -> str:
        return f"{self.store.url}/.partial/{self.name}/{file}"

    def exists(self, file: str) -> bool:
        if (self.local / file).is_file():
            return True
        return self.store.remote and self.store.fs.exists(self._remote(file))

    def write(self, file: str, table: pa.Table) -> Path:
        """Write a shard atomically here and (S3) put it under the store's partial prefix."""
        path = self.local / file
        write_table(table, path)
        self.publish(file)
        return path

    def publish(self, file: str) -> None:
        """(S3) put a shard this machine wrote into the store's partial prefix; nothing for a local store."""
        if self.store.remote:
            self.store.fs.put(str(self.local / file), self._remote(file))

    def read(self, file: str, schema: pa.Schema | None = None) -> pa.Table:
        path = self.local / file
        if not path.is_file() and self.store.remote:
            self._fetch(file)
        return pq.read_table(path, schema=schema)

    def pull(self) -> None:
        """(S3) copy the shards of the store's partial prefix that this machine lacks."""
        if not self.store.remote:
            return
        self.store.fs.invalidate_cache()
        with contextlib.suppress(FileNotFoundError):
            for path in self.store.fs.ls(f"{self.store.url}/.partial/{self.name}", detail=False):
                file = path.rstrip("/").rsplit("/", 1)[-1]
                if file.endswith(".parquet") and not (self.local / file).is_file():
                    self._fetch(file)

    def _fetch(self, file: str) -> None:
        tmp = self.local / f".{file}.get-{os.getpid()}"
        self.store.fs.get(self._remote(file), str(tmp))
        os.replace(tmp, self.local / file)


def store_root(store: ArtifactStore) -> str:
    """The root a worker builds the same store from: the S3 URL, or the local folder's absolute path."""
    return store.url if store.remote else str(store.root)


class ArtifactRef:
    """An artifact (or a folder inside it) by (root, step, key): a worker on any node resolves it in its own
    view of the store (for S3, a local read-only copy), never through the driver's paths."""

    def __init__(self, root: str, step: str, key: str, subdir: str = ""):
        self.root, self.step, self.key, self.subdir = str(root), step, key, subdir or ""

    @classmethod
    def of(cls, store: ArtifactStore, step: str, key: str, subdir: str = "") -> "ArtifactRef":
        return cls(store_root(store), step, key, subdir)

    @property
    def path(self) -> Path:
        return ArtifactStore(self.root).require(self.step, self.key).path / self.subdir

    def __repr__(self) -> str:
        return f"ArtifactRef({self.step}/{self.key}/{self.subdir})"

    def __eq__(self, other) -> bool:
        return isinstance(other, ArtifactRef) and vars(self) == vars(other)
