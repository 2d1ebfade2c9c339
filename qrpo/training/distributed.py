"""Training across processes: the `accelerate launch` command for a topology, and the worker it runs.

The train step runs `train_policy` in its own process when `distributed.num_processes == 1`, and
otherwise launches this module under `accelerate launch` with the configured topology (DDP, FSDP or
DeepSpeed ZeRO from `conf/distributed/`), on the worker machine the step runs on:

    accelerate launch --config_file <run>/accelerate.yaml -m qrpo.training.distributed \\
        --model DIR --table FILE --algorithm JSON --train JSON --out DIR [--checkpoint-dir DIR]

Every process builds the same model, reads the same training table and takes its share of each
global batch (see qrpo/training/trainer.py); the main process saves the trained model and the history into
--out (`policy/`, `history.json`). The worker needs nothing but files, so the same command runs on a
GPU node by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from qrpo.config.sections import DistributedConfig

_DISTRIBUTED_TYPE = {"ddp": ("MULTI_GPU", "MULTI_CPU"), "fsdp": ("FSDP", "FSDP"), "deepspeed": ("DEEPSPEED", "DEEPSPEED")}


def accelerate_config(cfg: DistributedConfig) -> dict[str, Any]:
    """The accelerate config file for this topology (what `accelerate config` would write)."""
    gpu_type, cpu_type = _DISTRIBUTED_TYPE[cfg.topology]
    return {
        "compute_environment": "LOCAL_MACHINE",
        "distributed_type": cpu_type if cfg.use_cpu else gpu_type,
        "num_processes": cfg.num_processes,
        "num_machines": 1,
        "machine_rank": 0,
        "use_cpu": cfg.use_cpu,
        "main_training_function": "main",
        "mixed_precision": "no",  # the trainer picks the precision (train.mixed_precision)
        **cfg.accelerate,
    }


def write_accelerate_config(cfg: DistributedConfig, path: Path) -> Path:
    """Write the file `accelerate launch --config_file` reads for this topology."""
    path.write_text(yaml.safe_dump(accelerate_config(cfg)))
    return path


def launch_command(cfg: DistributedConfig, config_file: Path, args: list[str]) -> list[str]:
    """`accelerate launch` for GPU topologies; torchrun for DDP over CPU processes (accelerate's own
    multi-CPU launcher runs a single process unless mpirun is set up), where accelerate's Accelerator
    then picks up the gloo process group from torchrun's environment.

    FSDP and DeepSpeed on CPU processes are refused: accelerate makes a run FSDP/DeepSpeed only on
    accelerator devices (CUDA, XPU, ...) and trains CPU processes with plain DDP whatever the config says."""
    cfg.validate()
    if cfg.use_cpu:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={cfg.num_processes}",
                "-m", "qrpo.training.distributed", *args]
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file), "-m", "qrpo.training.distributed", *args]


def algorithm_spec(section: dict) -> str:
    """The algorithm config section (`_target_` + arguments) as the JSON the worker rebuilds it from."""
    return json.dumps(section)


def launch_training(cfg: DistributedConfig, model_dir: Path, table_file: Path, algorithm: dict, train: dict,
                    out_dir: Path, checkpoint_dir: Path | None = None) -> dict:
    """Run training under `accelerate launch` with this topology and wait for it; return the history file's content."""
    with tempfile.TemporaryDirectory() as tmp:
        config_file = write_accelerate_config(cfg, Path(tmp) / "accelerate.yaml")
        args = ["--model", str(model_dir), "--table", str(table_file), "--algorithm", algorithm_spec(algorithm),
                "--train", json.dumps(train), "--out", str(out_dir)]
        if checkpoint_dir is not None:
            args += ["--checkpoint-dir", str(checkpoint_dir)]
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        proc = subprocess.run(launch_command(cfg, config_file, args), env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"distributed training ({cfg.topology}, {cfg.num_processes} processes) failed with exit status {proc.returncode}; see its log above")
    return json.loads((out_dir / "history.json").read_text())


def full_state_dict(model) -> dict | None:
    """The whole model's weights on the main process (on CPU) when FSDP2 left them sharded (DTensor
    parameters, which `save_pretrained` cannot write); None when every process holds them whole.
    Every process of the run must call it (the shards are gathered)."""
    if not any(hasattr(p, "full_tensor") for p in model.parameters()):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def main(argv: list[str] | None = None) -> None:
    """The worker: every process of the launch runs this."""
    import pyarrow.parquet as pq
    import torch

    from qrpo.config.binding import build_algorithm
    from qrpo.config.sections import TrainConfig
    from qrpo.models import load_policy
    from qrpo.training.trainer import train_policy

    parser = argparse.ArgumentParser(prog="python -m qrpo.training.distributed", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--table", type=Path, required=True)
    parser.add_argument("--algorithm", required=True, help="JSON: the algorithm section with _target_")
    parser.add_argument("--train", required=True, help="JSON: the train section")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--checkpoint-dir", type=Path)
    args = parser.parse_args(argv)

    model, tokenizer = load_policy(args.model, torch.device("cpu"), dtype=torch.float32)
    history = train_policy(model, pq.read_table(args.table), build_algorithm(json.loads(args.algorithm)),
                           TrainConfig(**json.loads(args.train)), tokenizer.pad_token_id, checkpoint_dir=args.checkpoint_dir)
    state_dict = full_state_dict(model)  # every process takes part: FSDP2 gathers the shards
    if int(os.environ.get("RANK", "0")) == 0:
        args.out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(args.out / "policy", state_dict=state_dict)
        tokenizer.save_pretrained(args.out / "policy")
        (args.out / "history.json").write_text(json.dumps(history))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()  # rank 0 has written the policy before any process leaves
        # a process group still alive at interpreter exit can abort the process ("terminate called without an
        # active exception", exit -6 from gloo's threads) after a finished training: the launch would fail
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()

