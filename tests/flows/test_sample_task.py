"""The `sample` Prefect task: a covered request is "Cached" (no sampling); shards as mapped tasks give the same rows."""

import pyarrow.compute as pc
import pytest
from mlflow.tracking import MlflowClient
from prefect import flow

from flows import tasks
from flows.config import compose_config
from qrpo.store.artifacts import ArtifactStore
from qrpo.config.sections import typed_sections
from qrpo.store.tracking import tracking_uri


@flow
def sampling_flow(config: dict, run_id: str, requests: list[tuple[int, int]]) -> list:
    sections, store = typed_sections(config), ArtifactStore(config.get("artifact_root"))
    model = tasks.prepare_model(sections.model, store, run_id)
    dataset = tasks.load_dataset(sections.dataset, store, run_id)
    source = {"step": "prepare_model", "key": model.result(), "subdir": ""}
    # the eval split: an exact N (the train split hands training_data its whole covering pool instead)
    return [tasks.sample(sections.sampler, store, source, dataset.result(), "eval", n, seed, 8, run_id, "eval_reference")
            for n, seed in requests]


def _run(config, requests):
    client = MlflowClient(tracking_uri())
    run_id = client.create_run(client.create_experiment(f"e{id(requests)}")).info.run_id
    return [(state.name, state.result()) for state in sampling_flow(config, run_id, requests)], client.get_run(run_id)


@pytest.mark.slow
def test_a_covered_request_is_cached_and_mapped_shards_give_the_same_rows(prefect_server, qrpo_home):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    base = ["experiment=smoke", "dataset.max_eval_prompts=6", "sampler.shard_prompts=2"]
    (first, second, third), run = _run(compose_config(base), [(6, 0), (4, 0), (3, 1)])
    store = ArtifactStore(qrpo_home / "artifacts")
    assert first[0] == "Completed" and first[1].endswith("-n00006")
    assert second == ("Cached", first[1][:-6] + "n00004"), "N=4 is the prefix of the N=6 pool: nothing sampled"
    six, four = store.require("sample", first[1]).table(), store.require("sample", second[1]).table()
    assert four.to_pylist() == six.filter(pc.less(six.column("sample_index"), 4)).to_pylist()
    assert run.data.metrics["sample/eval_reference/completions"] == 6 * 3
    assert run.data.metrics["sample/eval_reference/truncated"] >= 0 and "sample/eval_reference/dropped" in run.data.metrics

    (mapped,), _ = _run(compose_config(base + ["sampler.map_shards=true", "sampler.seed=1", "artifact_root=" + str(qrpo_home / "mapped")]), [(3, 1)])
    assert mapped[0] == "Completed" and mapped[1] == third[1]
    assert ArtifactStore(qrpo_home / "mapped").require("sample", mapped[1]).table().to_pylist() == \
        store.require("sample", third[1]).table().to_pylist()
    with get_client(sync_client=True) as client:
        shard_runs = client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="sample_shard")))
    assert len(shard_runs) >= 3, "three shards of two prompts, each a mapped task"
