"""Shard folders on an S3 artifact store (moto's server on 127.0.0.1): a shard one machine (a Ray worker) finished is
seen, read and resumed from by another (the driver), and an artifact is reached by (root, step, key) from any machine."""

import uuid

import pyarrow as pa
import pytest

from qrpo.executor import LocalExecutor, run_table_shards
from qrpo.store.artifacts import ArtifactStore
from qrpo.store.shards import ArtifactRef, ShardFolder, plan, shard_name
from tests.ops.conftest import make_bucket


@pytest.fixture
def root(s3_env):
    name = f"qrpo-{uuid.uuid4().hex[:8]}"
    make_bucket(s3_env, name)
    return f"s3://{name}/exp"


def test_a_shard_written_on_one_machine_is_resumed_on_another(root, tmp_path, monkeypatch):
    calls = []

    def compute(rows):
        calls.append((rows.start, rows.stop))
        return pa.table({"row": list(rows)})

    monkeypatch.setenv("QRPO_HOME", str(tmp_path / "worker"))
    worker = ShardFolder(root, "score-k")
    worker.write(shard_name(range(0, 3)), compute(range(0, 3)))  # then this machine is gone
    monkeypatch.setenv("QRPO_HOME", str(tmp_path / "driver"))
    driver = ShardFolder(root, "score-k")
    assert driver.exists(shard_name(range(0, 3))) and not (driver.local / shard_name(range(0, 3))).exists()
    table = run_table_shards(7, 3, compute, driver, LocalExecutor())
    assert calls == [(0, 3), (3, 6), (6, 7)], "the driver computed only the shards the worker had not finished"
    assert table.column("row").to_pylist() == list(range(7))
    assert sorted(p.name for p in driver.local.iterdir()) == [shard_name(r) for r in plan(7, 3)]
    assert ShardFolder(root, "score-k").store.fs.exists(f"{root}/.partial/score-k/{shard_name(range(6, 7))}")


def test_an_artifact_is_reached_by_step_and_key_from_any_machine(root, tmp_path, monkeypatch):
    monkeypatch.setenv("QRPO_HOME", str(tmp_path / "a"))
    with ArtifactStore(root).write("model", "m") as out:
        (out / "policy").mkdir()
        (out / "policy" / "config.json").write_text("{}")
    monkeypatch.setenv("QRPO_HOME", str(tmp_path / "b"))
    path = ArtifactRef.of(ArtifactStore(root), "model", "m", "policy").path
    assert path == tmp_path / "b" / "cache" / "s3" / root.split("://")[1] / "model" / "m" / "policy"
    assert (path / "config.json").read_text() == "{}"
