import pytest

from qrpo.store.artifacts import ArtifactStore, artifact_key


def test_key_depends_on_step_version_config_and_inputs_but_not_dict_order():
    base = artifact_key("train", 1, {"beta": 0.1, "lr": 1e-5}, {"model": "a"})
    assert base == artifact_key("train", 1, {"lr": 1e-5, "beta": 0.1}, {"model": "a"})
    others = [
        artifact_key("eval", 1, {"beta": 0.1, "lr": 1e-5}, {"model": "a"}),
        artifact_key("train", 2, {"beta": 0.1, "lr": 1e-5}, {"model": "a"}),
        artifact_key("train", 1, {"beta": 0.2, "lr": 1e-5}, {"model": "a"}),
        artifact_key("train", 1, {"beta": 0.1, "lr": 1e-5}, {"model": "b"}),
    ]
    assert base not in others and len(set(others)) == 4


def test_get_or_build_builds_once_then_returns_the_cached_artifact(tmp_path):
    store, calls = ArtifactStore(tmp_path), []

    def build(out, partial):
        calls.append(out)
        (out / "data.txt").write_text("hello")
        return {"rows": 1}

    first, cached_first = store.get_or_build("step", 1, {"a": 1}, {}, build)
    second, cached_second = store.get_or_build("step", 1, {"a": 1}, {}, build)
    assert (cached_first, cached_second) == (False, True) and len(calls) == 1
    assert first.path == second.path and (second.path / "data.txt").read_text() == "hello"
    assert second.manifest["metrics"] == {"rows": 1} and second.manifest["files"] == ["data.txt"]


def test_a_failed_build_leaves_no_artifact_and_no_temporary_folder(tmp_path):
    store = ArtifactStore(tmp_path)

    def build(out, partial):
        (out / "half.parquet").write_text("partial")
        raise RuntimeError("crash in the middle")

    with pytest.raises(RuntimeError):
        store.get_or_build("step", 1, {}, {}, build)
    key = artifact_key("step", 1, {}, {})
    assert store.get("step", key) is None and not store.path("step", key).exists()
    assert list((tmp_path / ".tmp").iterdir()) == []


def test_partial_checkpoints_survive_a_failure_and_are_removed_after_success(tmp_path):
    store = ArtifactStore(tmp_path)
    attempts = []

    def build(out, partial):
        partial.mkdir(parents=True, exist_ok=True)
        attempts.append(sorted(p.name for p in partial.iterdir()))
        (partial / f"shard-{len(attempts)}").write_text("done")
        if len(attempts) == 1:
            raise RuntimeError("interrupted")
        (out / "data.txt").write_text("ok")

    with pytest.raises(RuntimeError):
        store.get_or_build("step", 1, {}, {}, build)
    artifact, _ = store.get_or_build("step", 1, {}, {}, build)
    assert attempts == [[], ["shard-1"]]
    assert not store.partial_dir("step", artifact.key).exists()


def test_root_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("QRPO_ARTIFACT_ROOT", str(tmp_path / "explicit"))
    assert ArtifactStore().root == (tmp_path / "explicit").resolve()
    monkeypatch.delenv("QRPO_ARTIFACT_ROOT")
    monkeypatch.setenv("QRPO_HOME", str(tmp_path / "home"))
    assert ArtifactStore().root == (tmp_path / "home" / "artifacts").resolve()
