"""distributed.launcher=ray: Ray Train's TorchTrainer runs the training loop on 2 workers of a real Ray cluster
(tests/conftest.py `ray_cluster`: two worker nodes, one CPU each, so the two ranks are on two nodes, gloo),
against one process with the same global batch; and a worker that dies after a checkpoint is restarted from it."""

import json
import shutil

import pyarrow.parquet as pq
import pytest
import torch

from qrpo.config.sections import DistributedConfig, ExecutorConfig
from qrpo.store.artifacts import ArtifactStore
from qrpo.store.shards import ArtifactRef, ShardFolder, store_root
from qrpo.training.ray_train import RUN_NAME, distributed_key, train_with_ray

from .test_distributed import ALGORITHM, TRAIN, _assert_same_training, single_run  # noqa: F401  (the fixture)


def _artifacts(tmp_path, tiny_model_dir, table_file):
    """The model and the training table as artifacts of a store (Ray workers resolve them by step and key)."""
    store = ArtifactStore(tmp_path / "artifacts")
    with store.write("model", "m") as out:
        shutil.copytree(tiny_model_dir, out, dirs_exist_ok=True)
    with store.write("ref_logps", "t") as out:
        shutil.copy(table_file, out / "data.parquet")
    return store, ArtifactRef.of(store, "model", "m"), ArtifactRef.of(store, "ref_logps", "t")


@pytest.mark.slow
def test_two_ray_train_workers_give_the_parameters_of_one_process_with_the_same_global_batch(
        ray_cluster, tiny_model_dir, single_run, tmp_path):  # noqa: F811
    """Same tolerances as DDP under torchrun (test_distributed.py, where they are argued): rel 1e-5 on each step's
    gradient norm (a dropped or doubled `world` factor changes it by 2x), abs 1e-6 on losses, abs 1e-5 on the
    parameters, which move by 2.5e-2. Ray Train's process group is gloo across the two nodes."""
    table_file, single, single_history = single_run
    store, model, table = _artifacts(tmp_path, tiny_model_dir, table_file)
    cluster, _ = ray_cluster
    out = tmp_path / "out"
    history = train_with_ray(DistributedConfig("ddp", 2, use_cpu=True, launcher="ray"), ExecutorConfig(kind="ray", address=cluster.address),
                             model, table, ALGORITHM, TRAIN, out, ShardFolder(store_root(store), "train-k"))
    _assert_same_training(history, single_history, out / "policy", single, loss_atol=1e-6, param_atol=1e-5)


@pytest.mark.slow
def test_a_worker_that_dies_after_a_checkpoint_resumes_from_it_with_the_parameters_of_an_uninterrupted_run(
        ray_cluster, tiny_model_dir, single_run, tmp_path):  # noqa: F811
    """Checkpoint every 2 steps (of 4); the rank-1 process exits hard at its 4th loss call (step 3, after the
    step-2 checkpoint). Ray Train restarts both workers (FailureConfig), they restore the merged checkpoint
    (model, optimizer, scheduler, each rank's RNG) from the step's partial folder and run steps 2 and 3 only (their
    loss calls are counted: a restart from scratch would make 4 each); the history and parameters are those of the
    uninterrupted single process, same tolerances as above."""
    table_file, single, single_history = single_run
    store, model, table = _artifacts(tmp_path, tiny_model_dir, table_file)
    marker = tmp_path / "died"
    cluster, _ = ray_cluster
    folder, out = ShardFolder(store_root(store), "train-k"), tmp_path / "out"
    snapshot = folder.local / "ray" / RUN_NAME / "checkpoint_manager_snapshot.json"  # Ray Train's record of registered checkpoints
    algorithm = {"_target_": "qrpo_test_flaky.DiesOnce", "beta": ALGORITHM["beta"], "marker": str(marker), "die_at": 4,
                 "registered": str(snapshot), "checkpoint": "step-0000002"}
    history = train_with_ray(DistributedConfig("ddp", 2, use_cpu=True, launcher="ray"),
                             ExecutorConfig(kind="ray", address=cluster.address, max_retries=1), model, table, algorithm,
                             {**TRAIN, "checkpoint_every": 2}, out, folder)
    assert marker.exists(), "the rank-1 worker never died: nothing was resumed"
    calls = [line.split() for line in (tmp_path / "died.calls").read_text().splitlines()]
    first = {marker.read_text(), next(pid for pid, rank in calls if rank == "0")}  # the first group's two processes
    restarted = {rank: sum(1 for pid, r in calls if r == rank and pid not in first) for rank in ("0", "1")}
    assert restarted == {"0": 2, "1": 2}, f"the restarted workers ran steps 2 and 3 only (from scratch: 4 each): {calls}"
    reported = sorted(p.name for p in (folder.local / "ray" / RUN_NAME).glob("step-*"))
    assert reported == ["step-0000002"]
    assert sorted(p.name for p in (folder.local / "ray" / RUN_NAME / "step-0000002").iterdir()) == sorted(
        ["model.safetensors", "optimizer.bin", "custom_checkpoint_0.pkl", "random_states_0.pkl", "random_states_1.pkl",
         "trainer_state.json"]), "one checkpoint merged from both workers' files"
    _assert_same_training(history, single_history, out / "policy", single, loss_atol=1e-6, param_atol=1e-5)


def test_the_train_key_of_accelerate_runs_is_unchanged_and_ray_runs_have_their_own():
    accelerate = DistributedConfig("ddp", 2)
    assert distributed_key(accelerate) == {"topology": "ddp", "num_processes": 2, "use_cpu": False, "accelerate": {}}
    assert distributed_key(DistributedConfig("ddp", 2, launcher="ray"))["launcher"] == "ray"
