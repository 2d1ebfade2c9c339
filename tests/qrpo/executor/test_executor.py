"""The shard mechanism (qrpo/executor/, qrpo/store/shards.py): fixed-size shards, atomic shard files, resume, shard
order; and on a real Ray cluster (tests/conftest.py `ray_cluster`), a worker node killed in the middle of a step."""

import os
import sys
import threading
import time
from pathlib import Path

import cloudpickle
import pyarrow as pa
import pytest

from flows.config import compose_config
from qrpo.config.sections import ExecutorConfig, typed_sections
from qrpo.executor import LocalExecutor, run_table_shards
from qrpo.rewards import ScoreShard
from qrpo.store.artifacts import ArtifactStore
from qrpo.store.shards import ShardFolder, plan, shard_name, store_root

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers get this module's classes by value
ROOT = Path(__file__).resolve().parents[3]


def add_ray_node(cluster):
    """A one-CPU worker node for the `ray_cluster` (tests/conftest.py), its worker processes able to import qrpo."""
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), str(ROOT / "tests" / "fixtures" / "ray_worker"), saved) if p)
    try:
        node = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        return node
    finally:
        os.environ.pop("PYTHONPATH") if saved is None else os.environ.__setitem__("PYTHONPATH", saved)


class Squares:
    """A shard function: row i -> i * i, recording each shard it computes."""

    def __init__(self):
        self.calls = []

    def __call__(self, rows):
        self.calls.append((rows.start, rows.stop))
        return pa.table({"row": list(rows), "square": [i * i for i in rows]})


def test_shards_are_cut_by_a_fixed_size_never_by_worker_count():
    assert plan(10, 4) == [range(0, 4), range(4, 8), range(8, 10)]
    assert plan(0, 4) == [] and plan(3, 8) == [range(0, 3)]
    assert shard_name(range(4, 8)) == "shard-r000000004-000000008.parquet"


def test_finished_shards_are_read_back_not_recomputed_and_the_table_is_in_shard_order(tmp_path):
    store = ArtifactStore(tmp_path / "artifacts")
    folder = ShardFolder(store_root(store), "score-k")
    first = Squares()
    folder.write(shard_name(range(4, 8)), first(range(4, 8)))  # a shard an earlier attempt finished
    table = run_table_shards(10, 4, first, folder, LocalExecutor())
    assert first.calls == [(4, 8), (0, 4), (8, 10)], "only the missing shards are computed"
    assert table.column("row").to_pylist() == list(range(10))
    assert table.column("square").to_pylist() == [i * i for i in range(10)]
    again = Squares()
    assert run_table_shards(10, 4, again, folder, LocalExecutor()).equals(table) and again.calls == []
    assert sorted(p.name for p in folder.local.iterdir()) == [shard_name(r) for r in plan(10, 4)], "no temporary file left"


class Slow:
    """The real score shard (tiny reward model), slowed down so that a node can be killed while shards run;
    each start leaves a marker `<rows>-<pid>` in `started/`."""

    def __init__(self, inner, started: str, seconds: float):
        self.inner, self.started, self.seconds = inner, started, seconds

    def __call__(self, rows):
        import ray

        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"
        Path(self.started, f"{rows.start}-{rows.stop}-{os.getpid()}-{node}").write_text("")
        time.sleep(self.seconds)
        return self.inner(rows)


def _score_inputs():
    sections = typed_sections(compose_config(["experiment=smoke"]))
    prompts = pa.table({"prompt_id": [f"p{i}" for i in range(6)], "prompt": [f"Question number {i}?" for i in range(6)]})
    samples = pa.table({"prompt_id": [f"p{i % 6}" for i in range(48)], "completion": [f"answer {i} " * (1 + i % 5) for i in range(48)]})
    return ScoreShard(sections.reward, samples, prompts)


@pytest.mark.slow
def test_a_worker_node_killed_mid_step_leaves_the_exact_rows_with_no_duplicate(ray_cluster, tmp_path):
    """8 shards of 6 samples, 2 s each, on two one-CPU worker nodes; when a shard has started on the second node,
    that node is killed (raylet and worker processes, no graceful exit). Ray redoes its shard on the other node
    (max_retries); the scores equal an in-process run's, one row per sample, each shard file written once."""
    from qrpo.executor.ray import RayExecutor

    cluster, workers = ray_cluster
    score = _score_inputs()
    expected = run_table_shards(48, 6, score, ShardFolder(store_root(ArtifactStore(tmp_path / "local")), "score-k"), LocalExecutor())

    store = ArtifactStore(tmp_path / "ray")
    folder, started = ShardFolder(store_root(store), "score-k"), tmp_path / "started"
    started.mkdir()
    victim = workers[1]
    killed = []

    def kill_when_a_shard_runs_there():
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            if any(p.name.endswith(victim.node_id) for p in started.iterdir()):
                cluster.remove_node(victim, allow_graceful=False)
                killed.append(time.time())
            time.sleep(0.05)

    watcher = threading.Thread(target=kill_when_a_shard_runs_there, daemon=True)
    watcher.start()
    try:
        table = run_table_shards(48, 6, Slow(score, str(started), 2.0), folder,
                                 RayExecutor(ExecutorConfig(kind="ray", address=cluster.address, max_retries=3)), name="killed-node")
    finally:
        watcher.join(timeout=5)
        workers[1] = add_ray_node(cluster)  # the next test gets two worker nodes again
    assert killed, "the second worker node never ran a shard"
    assert table.equals(expected), "the rows of an in-process run, in shard order"
    assert table.num_rows == 48
    assert sorted(p.name for p in folder.local.iterdir()) == [shard_name(r) for r in plan(48, 6)], "one file per shard"
    runs = [p.name.split("-") for p in started.iterdir()]
    on_victim = {(s, e) for s, e, _, node in runs if node == victim.node_id}
    survivor = {n for *_, n in runs} - {victim.node_id}
    assert on_victim and len(survivor) == 1
    redone = {(s, e) for s, e, _, node in runs if node != victim.node_id}
    assert on_victim <= redone, "every shard caught on the killed node was redone on the other"


def test_executor_and_launcher_settings_compose_and_bad_ones_are_one_clear_error():
    from qrpo.errors import InputError

    ray = typed_sections(compose_config(["experiment=smoke", "executor=ray", "executor.address='ray://head:10001'",
                                         "executor.gpus_per_shard=1", "distributed=ddp", "distributed.launcher=ray"]))
    assert (ray.executor.kind, ray.executor.address, ray.executor.shard_rows, ray.executor.gpus_per_shard) == ("ray", "ray://head:10001", 32, 1)
    assert [ray.executor.runs(step) for step in ("sample", "score", "ref_logps", "eval_logps", "train")] == ["ray"] * 4 + ["local"]
    assert ray.distributed.launcher == "ray"
    local = typed_sections(compose_config(["experiment=smoke"]))
    assert local.executor.kind == "local" and local.executor.runs("sample") == "local"
    for overrides, message in [
        (["executor.kind=slurm"], "executor.kind='slurm' is not one of local, ray"),
        (["executor=ray", "executor.shard_rows=0"], "executor.shard_rows must be an integer >= 1"),
        (["executor=ray", "executor.steps=[train]"], "executor.steps: 'train' is not one of sample, score, ref_logps, eval_logps"),
        (["executor=ray", "executor.cpus_per_shard=0"], "not both 0"),
        (["distributed=fsdp", "distributed.launcher=ray"], "distributed.launcher=ray runs DDP"),
        (["distributed.launcher=mpi"], "distributed.launcher='mpi' is not one of accelerate, ray"),
    ]:
        with pytest.raises(InputError, match=message):
            typed_sections(compose_config(["experiment=smoke", *overrides]))


def test_the_pipeline_binds_the_run_executor_to_every_heavy_step():
    from types import SimpleNamespace

    from flows.executor import with_executor

    seen = []
    steps = with_executor(SimpleNamespace(score=lambda *a, **k: seen.append(k)), ExecutorConfig(kind="local", shard_rows=7))
    steps.score("reward", name="x")
    assert seen == [{"name": "x", "executor": ExecutorConfig(kind="local", shard_rows=7)}]


def test_log_prob_shards_give_bitwise_the_values_of_one_piece_for_any_shard_size(tmp_path):
    """A row's log-prob moves in the last bits with the padding and the other rows of its batch; the shards are
    cut in length order, so each shard's batches are the whole column's batches and nothing moves (this failed
    before: shards cut in row order gave differences of ~1e-5 nats)."""
    import numpy as np

    from qrpo.config.sections import ModelConfig
    from qrpo.models import load_policy, prepare_model
    from qrpo.store.shards import ArtifactRef
    from qrpo.training.logprobs import batched_sequence_logps, logps_by_shard

    store = ArtifactStore(tmp_path)
    with store.write("prepare_model", "m") as out:
        prepare_model(ModelConfig(name="t", source="config", _target_="qrpo.models.TinyModel.load", architecture=dict(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)), out)
    model = ArtifactRef.of(store, "prepare_model", "m")
    policy, tokenizer = load_policy(model.path)
    rng = np.random.default_rng(0)
    draw = lambda low, high: [list(map(int, rng.integers(3, 200, rng.integers(low, high)))) for _ in range(70)]  # noqa: E731
    table = pa.table({"prompt_ids": draw(5, 30), "chosen_ids": draw(3, 25), "rejected_ids": draw(3, 25)})
    whole = {side: batched_sequence_logps(policy, table.column("prompt_ids").to_pylist(), table.column(f"{side}_ids").to_pylist(),
                                          tokenizer.pad_token_id, 16) for side in ("chosen", "rejected")}
    for shard_rows in (16, 48, 256):
        folder = tmp_path / ".partial" / f"ref_logps-{shard_rows}"
        folder.mkdir(parents=True)
        got = logps_by_shard(ExecutorConfig(shard_rows=shard_rows), "ref_logps", model, table,
                          {"chosen_ids": "chosen_ref_logp", "rejected_ids": "rejected_ref_logp"}, "fp32", ShardFolder.of(store, folder))
        for side in ("chosen", "rejected"):
            assert np.array_equal(got.column(f"{side}_ref_logp").to_numpy(), whole[side]), (shard_rows, side)
