"""The `train` step: where the training loop (`qrpo.training.trainer.train_policy`) runs — in this process,
in the processes accelerate launches on this machine (`qrpo.training.distributed`), or on Ray Train's workers
(`qrpo.training.ray_train`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

import pyarrow as pa

from qrpo.config.sections import AlgorithmConfig, DistributedConfig, TrainConfig
from qrpo.training.trainer import train_policy

if TYPE_CHECKING:
    from qrpo.config.sections import ExecutorConfig
    from qrpo.store.shards import ArtifactRef, ShardFolder


def train(algorithm: AlgorithmConfig, train_cfg: TrainConfig, distributed: DistributedConfig, model: "ArtifactRef",
          table: "ArtifactRef", out: Path, partial: "ShardFolder", on_step: Callable[[int, dict], None] | None = None,
          executor: "ExecutorConfig | None" = None) -> dict:
    """The `train` step: the policy (from the prepared `model`) trained on the training table `table` (with
    reference log-probs where the method needs them) into `out/policy/`, its history into
    `out/history.parquet`; in this process, in the processes `distributed` launches on this machine
    (qrpo.training.distributed), or on Ray Train's workers (`distributed.launcher=ray`, on the cluster of
    `executor`: qrpo.training.ray_train). Resumes from the checkpoints in the step's `partial` folder.
    `on_step(step, record)` sees each step as it ends (in this process only). Returns the final loss, the
    steps and the tokens/s of the last step."""
    import pyarrow.parquet as pq

    from qrpo.config.binding import build_algorithm
    from qrpo.config.sections import composed
    from qrpo.models import load_policy
    from qrpo.store.artifacts import write_table
    from qrpo.training.distributed import launch_training

    checkpoints = partial.local / "checkpoints"
    if distributed.launcher == "ray":
        from qrpo.training.ray_train import train_with_ray

        history = train_with_ray(distributed, executor, model, table, composed(algorithm), composed(train_cfg), out, partial)
    elif distributed.launches:
        history = launch_training(distributed, model.path, table.path / "data.parquet", composed(algorithm), composed(train_cfg), out,
                                  checkpoint_dir=checkpoints)
    else:
        policy, tokenizer = load_policy(model.path)
        history = train_policy(policy, pq.read_table(table.path / "data.parquet"), build_algorithm(algorithm), train_cfg,
                               tokenizer.pad_token_id, on_step=on_step, checkpoint_dir=checkpoints)
        policy.save_pretrained(out / "policy")
        tokenizer.save_pretrained(out / "policy")
    write_table(pa.Table.from_pylist(history), out / "history.parquet")
    last = history[-1]
    return {"final_loss": last["loss"], "steps": len(history), "tokens_per_s": last["tokens_per_s"]}
