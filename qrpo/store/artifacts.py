"""Content-addressed, atomically written artifacts.

An artifact is a folder `<root>/<step>/<key>/` holding data files (Parquet tables, a model folder,
plots) and, written last, `manifest.json`. Its key hashes what determines it:

    key = sha256(step, step version, the config subset the step reads, the keys of its inputs)[:16]

so an identical request finds the folder and skips the work, and a changed beta only misses the keys
of the steps that read beta. A step writes into `<root>/.tmp/<step>-<key>-<random>/` and renames it
into place when done: a crash leaves no folder that a later run could take as complete. Long steps
checkpoint shards in `<root>/.partial/<step>-<key>/` and resume from them.

The root may also be an S3-compatible bucket, `s3://bucket/prefix` (through fsspec/s3fs), with the
same keys and the same guarantee: a step builds in a local folder, uploads it under
`<root>/.tmp/<step>-<key>-<random>/`, copies each file to `<root>/<step>/<key>/` and writes
`manifest.json` last, so a reader that trusts only manifests never sees half an artifact. Reading a
remote artifact's `path` materialises a local, read-only copy under `$QRPO_HOME/cache/s3/...`;
partial shards are mirrored to `<root>/.partial/` while a step runs, so another machine resumes them.
The endpoint and credentials come from the standard AWS variables (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION) and QRPO_S3_ENDPOINT_URL, AWS_ENDPOINT_URL_S3,
AWS_ENDPOINT_URL or MLFLOW_S3_ENDPOINT_URL (first set wins) for MinIO or another S3-compatible server.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
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


class Artifact:
    """A finished artifact: `path` is its folder (for a remote store, a local read-only copy made on
    first use), `manifest` its manifest, `table(name)` one of its Parquet tables."""

    def __init__(self, step: str, key: str, path: Path | None = None, *, store: "ArtifactStore | None" = None,
                 manifest: dict[str, Any] | None = None):
        self.step, self.key = step, key
        self._path, self._store, self._manifest = path, store, manifest

    @property
    def path(self) -> Path:
        if self._path is None:
            self._path = self._store._materialise(self.step, self.key, self.manifest)
        return self._path

    @property
    def manifest(self) -> dict[str, Any]:
        if self._manifest is None:
            self._manifest = json.loads((self.path / MANIFEST).read_text())
        return self._manifest

    def table(self, name: str = "data") -> pa.Table:
        return pq.read_table(self.path / f"{name}.parquet")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Artifact) and (self.step, self.key) == (other.step, other.key)

    def __hash__(self) -> int:
        return hash((self.step, self.key))

    def __repr__(self) -> str:
        return f"Artifact({self.step!r}, {self.key!r})"


def is_remote(root: str | os.PathLike | None) -> bool:
    """True for a URL root such as s3://bucket/prefix (a local path or file:// is not remote)."""
    return isinstance(root, str) and "://" in root and not root.startswith("file://")


def s3_endpoint_url() -> str | None:
    for name in ("QRPO_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL"):
        if os.environ.get(name):
            return os.environ[name]
    return None


def remote_filesystem(root: str):
    """The fsspec filesystem of a URL root; S3 gets its endpoint from the environment (see module doc)."""
    import fsspec

    protocol = root.split("://", 1)[0]
    if protocol in ("s3", "s3a"):
        endpoint = s3_endpoint_url()
        options: dict[str, Any] = {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}
        return fsspec.filesystem("s3", skip_instance_cache=True, **options)
    return fsspec.filesystem(protocol)


class ArtifactStore:
    """A folder of artifacts: `root` if given, else $QRPO_ARTIFACT_ROOT, else $QRPO_HOME/artifacts.

    `root` may be a local folder or an `s3://bucket/prefix` URL (see the module docstring).
    """

    def __init__(self, root: str | os.PathLike | None = None):
        root = root or os.environ.get("QRPO_ARTIFACT_ROOT") or qrpo_home() / "artifacts"
        if isinstance(root, str) and root.startswith("file://"):
            root = root[len("file://"):]
        self.remote = is_remote(root)
        if self.remote:
            self.url = str(root).rstrip("/")
            self.fs = remote_filesystem(self.url)
            self.root = self.url  # type: ignore[assignment]
            bucket_path = self.url.split("://", 1)[1]
            self.cache = qrpo_home() / "cache" / self.url.split("://", 1)[0] / bucket_path
        else:
            self.root = Path(root).expanduser().resolve()
            self.cache = self.root

    # -- locations -------------------------------------------------------------------------------
    def path(self, step: str, key: str) -> Path:
        """The local folder of an artifact (for a remote store: its materialised copy)."""
        return self.cache / step / key

    def url_of(self, step: str, key: str) -> str:
        return f"{self.url}/{step}/{key}" if self.remote else str(self.path(step, key))

    def partial_dir(self, step: str, key: str) -> Path:
        """Where a long step keeps finished shards between attempts (removed once the artifact lands).
        Always local; a remote store mirrors it to `<root>/.partial/<step>-<key>/` (see get_or_build)."""
        return self.cache / ".partial" / f"{step}-{key}"

    # -- reading ---------------------------------------------------------------------------------
    def get(self, step: str, key: str) -> Artifact | None:
        """The finished artifact, or None if it was never completed."""
        if not self.remote:
            path = self.path(step, key)
            return Artifact(step, key, path) if (path / MANIFEST).is_file() else None
        try:
            manifest = json.loads(self.fs.cat_file(f"{self.url}/{step}/{key}/{MANIFEST}"))
        except FileNotFoundError:
            return None
        return Artifact(step, key, store=self, manifest=manifest)

    def require(self, step: str, key: str) -> Artifact:
        artifact = self.get(step, key)
        if artifact is None:
            raise FileNotFoundError(f"artifact {step}/{key} is missing under {self.root}; run the step that makes it")
        return artifact

    def keys(self, step: str, prefix: str = "") -> list[str]:
        """Keys of the finished artifacts of one step (those with a manifest) that start with `prefix`, sorted."""
        if not self.remote:
            folder = self.root / step
            return sorted(p.parent.name for p in folder.glob(f"{prefix}*/{MANIFEST}")) if folder.is_dir() else []
        self.fs.invalidate_cache()
        return sorted(p.rstrip("/").split("/")[-2] for p in self.fs.glob(f"{self.url}/{step}/{prefix}*/{MANIFEST}"))

    def _materialise(self, step: str, key: str, manifest: dict[str, Any]) -> Path:
        """A local read-only copy of a remote artifact, downloaded once (manifest last, then renamed)."""
        final = self.path(step, key)
        if (final / MANIFEST).is_file() and json.loads((final / MANIFEST).read_text()) == manifest:
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=final.parent))
        try:
            files = list(manifest.get("files", []))
            if files:
                self.fs.get([f"{self.url}/{step}/{key}/{f}" for f in files], [str(tmp / f) for f in files])
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
            for file in tmp.rglob("*"):
                if file.is_file():
                    file.chmod(0o444)
            if final.exists():
                shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    # -- writing ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def write(self, step: str, key: str, metadata: dict[str, Any] | None = None) -> Iterator[Path]:
        """Yield a private temporary folder; on success, add the manifest and move it into place."""
        tmp_parent = self.cache / ".tmp"
        tmp_parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{step}-{key}-", dir=tmp_parent))
        try:
            yield tmp
            files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
            manifest = {"step": step, "key": key, "created": time.time(), "files": files, **(metadata or {})}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
            if self.remote:
                self._publish(step, key, tmp, files)
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
        if self.remote:
            self._remove_remote(f"{self.url}/.partial/{step}-{key}")

    def _publish(self, step: str, key: str, folder: Path, files: list[str]) -> None:
        """Upload to a temporary prefix, copy each file into place, the manifest last, drop the prefix."""
        final = f"{self.url}/{step}/{key}"
        if self.fs.exists(f"{final}/{MANIFEST}"):  # a concurrent writer finished first: keep theirs
            return
        staging = f"{self.url}/.tmp/{step}-{key}-{uuid.uuid4().hex[:8]}"
        try:
            names = files + [MANIFEST]
            self.fs.put([str(folder / f) for f in names], [f"{staging}/{f}" for f in names])
            for name in files:
                self.fs.copy(f"{staging}/{name}", f"{final}/{name}")
            self.fs.copy(f"{staging}/{MANIFEST}", f"{final}/{MANIFEST}")
        finally:
            self._remove_remote(staging)
        for file in folder.rglob("*"):  # the local folder becomes the materialised copy: read-only
            if file.is_file():
                file.chmod(0o444)

    def _remove_remote(self, url: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(url, recursive=True)

    def lookup(self, step: str, version: int, config: Any, inputs: dict[str, str]) -> Artifact | None:
        """The existing artifact for this request (the key `get_or_build` would use), or None."""
        return self.get(step, artifact_key(step, version, config, inputs))

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
        with self.write(step, key, metadata) as tmp, self._mirrored_partial(step, key) as partial:
            metadata["metrics"] = build(tmp, partial) or {}
        return self.require(step, key), False

    @contextlib.contextmanager
    def _mirrored_partial(self, step: str, key: str, every_s: float = 5.0) -> Iterator[Path]:
        """The local partial folder; for a remote store, first filled from `<root>/.partial/...`, then
        mirrored back every few seconds and once more at the end (success or failure)."""
        local = self.partial_dir(step, key)
        if not self.remote:
            yield local
            return
        remote = f"{self.url}/.partial/{step}-{key}"
        uploaded: dict[str, float] = {}
        with contextlib.suppress(FileNotFoundError):
            for path in self.fs.find(remote):
                name = path[len(remote.split("://", 1)[1]) + 1:]
                target = local / name
                if not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    self.fs.get(path, str(target))
                uploaded[name] = target.stat().st_mtime

        def sync() -> None:
            if not local.is_dir():
                return
            for file in sorted(local.rglob("*")):
                name = str(file.relative_to(local))
                if file.is_file() and not file.name.startswith(".") and uploaded.get(name) != file.stat().st_mtime:
                    self.fs.put(str(file), f"{remote}/{name}")
                    uploaded[name] = file.stat().st_mtime

        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(every_s):
                with contextlib.suppress(Exception):
                    sync()

        thread = threading.Thread(target=loop, name=f"mirror-{step}-{key}", daemon=True)
        thread.start()
        try:
            yield local
        finally:
            stop.set()
            thread.join()
            with contextlib.suppress(Exception):
                sync()


def write_table(table: pa.Table, path: Path) -> None:
    """Write a Parquet file atomically (temporary name, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
