"""The artifact store on S3 (moto's stand-alone server on 127.0.0.1, through s3fs): same keys, manifest
last, partial shards resumed from another machine's cache, and the smoke pipeline cached on re-run."""

import json
import os
import stat
import uuid

import pytest

from qrpo.store.artifacts import MANIFEST, ArtifactStore, artifact_key, remote_filesystem
from tests.ops.conftest import make_bucket


@pytest.fixture
def bucket(s3_env):
    name = f"qrpo-{uuid.uuid4().hex[:8]}"
    make_bucket(s3_env, name)
    return name


def test_s3_store_builds_once_and_a_fresh_machine_reads_it_from_the_bucket(bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("QRPO_HOME", str(tmp_path / "machine-a"))
    root = f"s3://{bucket}/exp"
    store, calls = ArtifactStore(root), []

    def build(out, partial):
        calls.append(1)
        (out / "model").mkdir()
        (out / "model" / "weights.bin").write_bytes(b"\x00\x01" * 1000)
        (out / "data.txt").write_text("hello")
        return {"rows": 1}

    first, cached = store.get_or_build("step", 1, {"a": 1}, {"in": "k"}, build)
    assert not cached and first.key == artifact_key("step", 1, {"a": 1}, {"in": "k"})
    fs = remote_filesystem(root)
    listed = sorted(p.split(f"{bucket}/exp/", 1)[1] for p in fs.find(f"{root}/"))
    assert listed == [f"step/{first.key}/data.txt", f"step/{first.key}/{MANIFEST}", f"step/{first.key}/model/weights.bin"]
    manifest = json.loads(fs.cat_file(f"{root}/step/{first.key}/{MANIFEST}"))
    assert manifest["files"] == ["data.txt", "model/weights.bin"] and manifest["metrics"] == {"rows": 1}

    monkeypatch.setenv("QRPO_HOME", str(tmp_path / "machine-b"))  # another machine: empty local cache
    other = ArtifactStore(root)
    again, cached = other.get_or_build("step", 1, {"a": 1}, {"in": "k"}, build)
    assert cached and len(calls) == 1 and again.manifest["metrics"] == {"rows": 1}
    assert not other.path("step", again.key).exists(), "a cached hit must not download before .path is read"
    local = again.path
    assert str(local).startswith(str(tmp_path / "machine-b" / "cache" / "s3" / bucket / "exp"))
    assert (local / "data.txt").read_text() == "hello" and (local / "model" / "weights.bin").stat().st_size == 2000
    assert not (local / "data.txt").stat().st_mode & stat.S_IWUSR, "the materialised copy must be read-only"
    assert other.keys("step") == [again.key] and other.keys("nothing") == []


def test_s3_reader_trusts_only_a_manifest_and_a_failed_build_leaves_nothing(bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("QRPO_HOME", str(tmp_path / "home"))
    root = f"s3://{bucket}/exp"
    store, fs = ArtifactStore(root), remote_filesystem(root)
    key = artifact_key("step", 1, {}, {})
    fs.pipe(f"{root}/step/{key}/data.txt", b"half written")  # files of an upload that never finished
    assert store.get("step", key) is None and store.keys("step") == []

    def crash(out, partial):
        (out / "data.txt").write_text("x")
        raise RuntimeError("crash in the middle")

    with pytest.raises(RuntimeError):
        store.get_or_build("step", 1, {}, {}, crash)
    assert not fs.exists(f"{root}/step/{key}/{MANIFEST}")
    assert not fs.exists(f"{root}/.tmp") or fs.find(f"{root}/.tmp") == []
    assert list((store.cache / ".tmp").iterdir()) == []


def test_s3_partial_shards_resume_on_another_machine_and_are_removed_after_success(bucket, tmp_path, monkeypatch):
    root, attempts = f"s3://{bucket}/exp", []

    def build(out, partial):
        partial.mkdir(parents=True, exist_ok=True)
        attempts.append(sorted(p.name for p in partial.iterdir()))
        (partial / f"shard-{len(attempts)}.parquet").write_text("done")
        if len(attempts) == 1:
            raise RuntimeError("machine lost")
        (out / "data.txt").write_text("ok")

    monkeypatch.setenv("QRPO_HOME", str(tmp_path / "machine-a"))
    with pytest.raises(RuntimeError):
        ArtifactStore(root).get_or_build("step", 1, {}, {}, build)
    monkeypatch.setenv("QRPO_HOME", str(tmp_path / "machine-b"))
    store = ArtifactStore(root)
    artifact, cached = store.get_or_build("step", 1, {}, {}, build)
    assert not cached and attempts == [[], ["shard-1.parquet"]]
    fs = remote_filesystem(root)
    assert not fs.exists(f"{root}/.partial/step-{artifact.key}") or fs.find(f"{root}/.partial/step-{artifact.key}") == []
    assert not store.partial_dir("step", artifact.key).exists()


@pytest.mark.slow
def test_smoke_pipeline_on_s3_then_an_identical_rerun_on_a_fresh_machine_is_all_cached(
    bucket, prefect_server, tmp_path, monkeypatch
):
    from mlflow.tracking import MlflowClient

    from flows.pipeline import qrpo_pipeline

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("QRPO_MLFLOW_ARTIFACT_ROOT", f"s3://{bucket}/mlflow")
    monkeypatch.delenv("QRPO_ARTIFACT_ROOT", raising=False)
    overrides = ["experiment=smoke", f"artifact_root=s3://{bucket}/artifacts"]
    monkeypatch.setenv("QRPO_HOME", str(tmp_path / "machine-a"))
    first = qrpo_pipeline(overrides)
    monkeypatch.setenv("QRPO_HOME", str(tmp_path / "machine-b"))
    again = qrpo_pipeline(overrides)

    assert first["cached_steps"] == []
    assert set(again["cached_steps"]) == set(again["artifacts"]) and again["artifacts"] == first["artifacts"]
    assert again["metrics"] == first["metrics"]
    store = ArtifactStore(f"s3://{bucket}/artifacts")
    for step in ("prepare_model", "load_dataset", "sample", "score", "training_data", "ref_logps", "train", "evaluate"):
        assert store.keys(step), f"no {step} artifact in the bucket"
    # every samples artifact of the run (train, eval reference, policy per eval seed) is in the bucket, and no other
    assert set(store.keys("sample")) == {key for name, key in first["artifacts"].items() if name.startswith("sample/")}
    assert not (tmp_path / "machine-a" / "artifacts").exists(), "artifacts must not land on the local disk"
    fs = remote_filesystem(f"s3://{bucket}")
    assert not fs.exists(f"s3://{bucket}/artifacts/.tmp") or fs.find(f"s3://{bucket}/artifacts/.tmp") == []
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    run = client.get_run(first["mlflow_run_id"])
    assert run.info.artifact_uri.startswith(f"s3://{bucket}/mlflow/")
    assert fs.exists(f"{run.info.artifact_uri}/report/summary.md"), "MLflow's report must be in the bucket"


@pytest.mark.slow
def test_mlflow_server_proxies_run_artifacts_to_s3(bucket, s3_env, tmp_path):
    """The compose stack's MLflow mode: `mlflow server --artifacts-destination s3://...` (here over moto)."""
    import subprocess
    import sys
    from pathlib import Path

    from mlflow.tracking import MlflowClient

    from tests.ops.conftest import free_port, wait_http

    port = free_port()
    log = open(tmp_path / "mlflow.log", "w")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}", "--artifacts-destination", f"s3://{bucket}/mlflow"],
        env={**os.environ, "MLFLOW_S3_ENDPOINT_URL": s3_env}, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", 180, server)
        client = MlflowClient(f"http://127.0.0.1:{port}")
        run = client.create_run(client.create_experiment("qrpo"))
        (tmp_path / "summary.md").write_text("| reward |\n")
        client.log_artifact(run.info.run_id, str(tmp_path / "summary.md"), "report")
        fs = remote_filesystem(f"s3://{bucket}")
        stored = [p for p in fs.find(f"s3://{bucket}/mlflow") if p.endswith("report/summary.md")]
        assert len(stored) == 1 and fs.cat_file(stored[0]) == b"| reward |\n"
        assert not (tmp_path / "mlartifacts").exists() and not (tmp_path / "mlruns").exists()
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
