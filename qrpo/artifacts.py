"""Content-addressed, atomically written artifacts.

An artifact is a folder `<root>/<step>/<key>/` holding data files (Parquet tables, a model folder,
plots) and, written last, `manifest.json`. Its key hashes what determines it:

    key = sha256(step, step version, the config subset the step reads, the keys of its inputs)[:16]

so an identical request finds the folder and skips the work, and a changed beta only misses the keys
of the steps that read beta. A step writes into `<root>/.tmp/<step>-<key>-<random>/` and renames it
into place when done: a crash leaves no folder that a later run could take as complete. Long steps
checkpoint shards in `<root>/.partial/<step>-<key>/` and resume from them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

MANIFEST = "manifest.json"


def qrpo_home() -> Path:
    """Where the platform keeps its state by default: $QRPO_HOME, else ~/.cache/qrpo."""
    return Path(os.environ.get("QRPO_HOME", "~/.cache/qrpo")).expanduser().resolve()


def artifact_key(step: str, version: int, config: Any, inputs: dict[str, str]) -> str:
    """Stable 16-hex-digit key of a step's output."""
    blob = json.dumps({"step": step, "version": version, "config": config, "inputs": inputs}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Artifact:
    step: str
    key: str
    path: Path  # the finished folder

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads((self.path / MANIFEST).read_text())

    def table(self, name: str = "data") -> pa.Table:
        return pq.read_table(self.path / f"{name}.parquet")


class ArtifactStore:
    """A folder of artifacts: `root` if given, else $QRPO_ARTIFACT_ROOT, else $QRPO_HOME/artifacts."""

    def __init__(self, root: str | os.PathLike | None = None):
        root = root or os.environ.get("QRPO_ARTIFACT_ROOT") or qrpo_home() / "artifacts"
        self.root = Path(root).expanduser().resolve()

    def path(self, step: str, key: str) -> Path:
        return self.root / step / key

    def get(self, step: str, key: str) -> Artifact | None:
        """The finished artifact, or None if it was never completed."""
        path = self.path(step, key)
        return Artifact(step, key, path) if (path / MANIFEST).is_file() else None

    def require(self, step: str, key: str) -> Artifact:
        artifact = self.get(step, key)
        if artifact is None:
            raise FileNotFoundError(f"artifact {step}/{key} is missing under {self.root}; run the step that makes it")
        return artifact

    @contextlib.contextmanager
    def write(self, step: str, key: str, metadata: dict[str, Any] | None = None) -> Iterator[Path]:
        """Yield a private temporary folder; on success, add the manifest and move it into place."""
        tmp_parent = self.root / ".tmp"
        tmp_parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{step}-{key}-", dir=tmp_parent))
        try:
            yield tmp
            files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
            manifest = {"step": step, "key": key, "created": time.time(), "files": files, **(metadata or {})}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
            final = self.path(step, key)
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists():  # a concurrent writer finished first: keep theirs
                shutil.rmtree(tmp)
            else:
                os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(self.partial_dir(step, key), ignore_errors=True)

    def get_or_build(
        self, step: str, version: int, config: Any, inputs: dict[str, str], build: Callable[[Path, Path], dict | None]
    ) -> tuple[Artifact, bool]:
        """(artifact, was_cached): the existing artifact for this request, or the one `build` makes.

        `build(out_dir, partial_dir)` writes its files into `out_dir` (may checkpoint work in
        `partial_dir`, kept across failed attempts) and may return a dict of metrics, which is kept in
        the manifest so that a cached step can still report them.
        """
        key = artifact_key(step, version, config, inputs)
        artifact = self.get(step, key)
        if artifact is not None:
            return artifact, True
        metadata: dict[str, Any] = {"version": version, "config": config, "inputs": inputs}
        with self.write(step, key, metadata) as tmp:
            metadata["metrics"] = build(tmp, self.partial_dir(step, key)) or {}
        return self.require(step, key), False

    def keys(self, step: str, prefix: str = "") -> list[str]:
        """Keys of the finished artifacts of `step` whose key starts with `prefix`, sorted."""
        folder = self.root / step
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if p.name.startswith(prefix) and (p / MANIFEST).is_file())

    def partial_dir(self, step: str, key: str) -> Path:
        """Where a long step keeps finished shards between attempts (removed once the artifact lands)."""
        return self.root / ".partial" / f"{step}-{key}"


def write_table(table: pa.Table, path: Path) -> None:
    """Write a Parquet file atomically (temporary name, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
