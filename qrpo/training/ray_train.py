"""`distributed.launcher=ray`: the training loop on Ray Train's `TorchTrainer`, across the nodes of a Ray cluster.

    qrpo-pipeline distributed=ddp distributed.launcher=ray distributed.num_processes=16 executor.address=ray://head:10001

The accelerate path (`qrpo/training/distributed.py`) starts N processes on the one machine the train step
runs on. Here Ray Train starts `distributed.num_processes` workers wherever the cluster has room
(one GPU each, or one CPU each with `distributed.use_cpu=true`), joins them in one torch process group
(NCCL on GPUs, gloo on CPUs), and sets RANK, WORLD_SIZE, LOCAL_RANK and ACCELERATE_TORCH_DEVICE, which
accelerate's Accelerator inside `train_policy` picks up: every worker runs the same loop as an
accelerate-launched process (`_train_loop`, the twin of `qrpo.training.distributed.main`), takes its share
of each global batch and all-reduces the gradients (DDP), so N workers give the parameters of one process
with the same global batch (tests/qrpo/executor/test_ray_cluster.py).

Checkpoints and resume, as with accelerate: every `train.checkpoint_every` steps each worker saves its
accelerate state into a folder of its own and hands it to `ray.train.report`; Ray Train merges the workers'
files (the main process's model, optimizer and scheduler, every process's RNG state) into one checkpoint
under the step's partial folder of the artifact store (`<root>/.partial/train-<key>/ray/`, on S3 for an S3
store), keeping `train.keep_checkpoints`. A worker that dies restarts the group from the latest checkpoint
(`FailureConfig(max_failures=executor.max_retries)`); a train step that failed and runs again finds the run
in the same folder and resumes from its latest checkpoint (`ray.train.get_checkpoint`), with the
parameters an uninterrupted run would have. A checkpoint counts once Ray Train's controller has collected it from
the workers (it polls them every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S, 2 s by default): a worker that dies within that
window after a checkpoint restarts the group from the one before (found by the resume test: a first version of it
died 1 s after the checkpoint, and the group silently started over from step 0, to the same parameters). The trained policy and the history come back as the run's
last checkpoint (rank 0's), so the train step's artifact is written on the driver as before.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from qrpo.config.sections import DistributedConfig, ExecutorConfig, composed
from qrpo.store.shards import ArtifactRef, ShardFolder

RUN_NAME = "ray_train"


def distributed_key(section: DistributedConfig) -> dict:
    """The `distributed` section as the train step's artifact key hashes it: `launcher: accelerate` (the
    default) is left out, so the keys of earlier runs hold."""
    values = composed(section)
    if values.get("launcher", "accelerate") == "accelerate":
        values.pop("launcher", None)
    return values


def storage(folder: ShardFolder):
    """(storage_path, storage_filesystem) of Ray Train's run: the step's partial folder, on S3 for an S3 store."""
    store = folder.store
    if not store.remote:
        return str(folder.local / "ray"), None
    import pyarrow.fs

    from qrpo.store.artifacts import s3_endpoint_url

    endpoint = s3_endpoint_url()
    options = {}
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        options = {"endpoint_override": host or scheme, "scheme": scheme if host else "https"}
    return f"{store.url.split('://', 1)[1]}/.partial/{folder.name}/ray", pyarrow.fs.S3FileSystem(**options)


def train_with_ray(cfg: DistributedConfig, executor: ExecutorConfig, model: ArtifactRef, table: ArtifactRef, algorithm: dict,
                   train: dict, out: Path, partial: ShardFolder) -> list[dict]:
    """Train on `cfg.num_processes` Ray Train workers; write `out/policy` and return the history (as launch_training)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from qrpo.executor.ray import connect

    cfg.validate()
    connect(executor)
    storage_path, filesystem = storage(partial)
    resources = {"CPU": max(executor.cpus_per_shard, 1.0)} if cfg.use_cpu else None
    trainer = TorchTrainer(
        _train_loop,
        train_loop_config={"model": model, "table": table, "algorithm": algorithm, "train": train},
        torch_config=TorchConfig(backend="gloo" if cfg.use_cpu else "nccl"),
        scaling_config=ScalingConfig(num_workers=cfg.num_processes, use_gpu=not cfg.use_cpu, resources_per_worker=resources),
        run_config=RunConfig(name=RUN_NAME, storage_path=storage_path, storage_filesystem=filesystem,
                             checkpoint_config=CheckpointConfig(num_to_keep=max(int(train.get("keep_checkpoints", 2)), 1) + 1),
                             failure_config=FailureConfig(max_failures=executor.max_retries)),
    )
    result = trainer.fit()
    if result.error is not None:
        raise RuntimeError(f"Ray Train ({cfg.num_processes} workers) failed: {result.error}")
    with tempfile.TemporaryDirectory() as tmp:
        final = Path(result.checkpoint.to_directory(str(Path(tmp) / "final")))
        out.mkdir(parents=True, exist_ok=True)
        shutil.copytree(final / "policy", out / "policy")
        return json.loads((final / "history.json").read_text())


def _train_loop(config: dict) -> None:
    """One Ray Train worker: the loop of qrpo.training.distributed.main, checkpoints reported to Ray Train."""
    import pyarrow.parquet as pq
    import ray.train
    import torch

    from qrpo.config.binding import build_algorithm
    from qrpo.config.sections import TrainConfig
    from qrpo.models import load_policy
    from qrpo.training.distributed import full_state_dict
    from qrpo.training.trainer import train_policy

    rank = ray.train.get_context().get_world_rank()
    local = Path(tempfile.mkdtemp(prefix=f"qrpo-ray-train-{rank}-"))
    try:
        checkpoints = local / "checkpoints"
        checkpoints.mkdir()
        final = local / "final"
        restored = ray.train.get_checkpoint()
        if restored is not None:  # the latest checkpoint of this run (a restarted worker group, or the step run again)
            with restored.as_directory() as folder:
                folder = Path(folder)
                if (folder / "history.json").is_file():  # the run had finished (its artifact was not written): its result again
                    if rank == 0:
                        shutil.copytree(folder, final)
                    ray.train.report({"done": 1}, checkpoint=ray.train.Checkpoint.from_directory(str(final)) if rank == 0 else None)
                    return
                state = json.loads((folder / "trainer_state.json").read_text())
                shutil.copytree(folder, checkpoints / f"step-{state['step']:07d}")

        def report(step: int, folder: Path) -> None:  # every worker: Ray Train merges their files into one checkpoint
            ray.train.report({"step": step}, checkpoint=ray.train.Checkpoint.from_directory(str(folder)),
                             checkpoint_dir_name=f"step-{step:07d}")

        model, tokenizer = load_policy(config["model"].path, torch.device("cpu"), dtype=torch.float32)
        history = train_policy(model, pq.read_table(config["table"].path / "data.parquet"), build_algorithm(config["algorithm"]),
                               TrainConfig(**config["train"]), tokenizer.pad_token_id, checkpoint_dir=checkpoints,
                               on_checkpoint=report)
        state_dict = full_state_dict(model)
        if rank == 0:
            final.mkdir()
            model.save_pretrained(final / "policy", state_dict=state_dict)
            tokenizer.save_pretrained(final / "policy")
            (final / "history.json").write_text(json.dumps(history))
        ray.train.report({"step": len(history), "done": 1}, checkpoint=ray.train.Checkpoint.from_directory(str(final)) if rank == 0 else None)
    finally:
        shutil.rmtree(local, ignore_errors=True)
