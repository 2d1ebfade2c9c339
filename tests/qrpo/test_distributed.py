"""DDP through accelerate on 2 CPU processes (gloo) against one process with the same global batch."""

import json

import pyarrow.parquet as pq
import pytest
import torch
import yaml

from qrpo.algorithms import DPO
from qrpo.config import TrainConfig
from qrpo.distributed import DistributedConfig, accelerate_config, launch_command, launch_training
from qrpo.errors import InputError
from qrpo.models import load_policy
from qrpo.trainer import train_policy

from .test_trainer import _pairs


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_gives_the_parameters_of_one_process_with_the_same_global_batch(tiny_model_dir, tmp_path):
    """Tolerance 1e-5 absolute on every parameter after 4 steps: the two runs differ only in the order of
    float additions (an all-reduce average of two half-batch gradients against one sum), ~1e-6 here,
    while the weights move by ~1e-2; a wrong loss scale (no factor world/B) would be off by ~1e-2."""
    model, tokenizer = load_policy(tiny_model_dir, torch.device("cpu"))
    table_file = tmp_path / "table.parquet"
    pq.write_table(_pairs(model, tokenizer.pad_token_id), table_file)
    train = {"learning_rate": 1e-2, "epochs": 2, "batch_size": 4, "micro_batch_size": 2, "warmup_ratio": 0.0}
    algorithm = {"_target_": "qrpo.algorithms.DPO", "beta": 0.5}

    history = launch_training(DistributedConfig("ddp", 2, use_cpu=True), tiny_model_dir, table_file, algorithm, train, tmp_path / "ddp")
    assert [h["processes"] for h in history] == [2] * 4

    single, _ = load_policy(tiny_model_dir, torch.device("cpu"))
    single_history = train_policy(single, pq.read_table(table_file), DPO(beta=0.5), TrainConfig(**train), tokenizer.pad_token_id)
    assert [h["loss"] for h in history] == pytest.approx([h["loss"] for h in single_history], abs=1e-6)
    ddp, _ = load_policy(tmp_path / "ddp" / "policy", torch.device("cpu"))
    initial, _ = load_policy(tiny_model_dir, torch.device("cpu"))
    moved = max((a - b).abs().max().item() for a, b in zip(single.state_dict().values(), initial.state_dict().values()))
    assert moved > 1e-3
    for (name, a), b in zip(single.state_dict().items(), ddp.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0, msg=name)


def test_topologies_make_the_accelerate_config_and_command_they_promise(tmp_path):
    fsdp = accelerate_config(DistributedConfig("fsdp", 8, accelerate={"fsdp_config": {"fsdp_version": 2}}))
    assert fsdp["distributed_type"] == "FSDP" and fsdp["num_processes"] == 8 and fsdp["fsdp_config"] == {"fsdp_version": 2}
    zero = accelerate_config(DistributedConfig("deepspeed", 4, accelerate={"deepspeed_config": {"zero_stage": 1}}))
    assert zero["distributed_type"] == "DEEPSPEED" and zero["deepspeed_config"]["zero_stage"] == 1
    assert accelerate_config(DistributedConfig("ddp", 2))["distributed_type"] == "MULTI_GPU"
    command = launch_command(DistributedConfig("ddp", 2), tmp_path / "a.yaml", ["--out", "x"])
    assert command[1:5] == ["-m", "accelerate.commands.launch", "--config_file", str(tmp_path / "a.yaml")]
    assert command[-4:] == ["-m", "qrpo.distributed", "--out", "x"]


def test_every_distributed_preset_builds(tmp_path):
    from flows.config import CONFIG_DIR

    for path in sorted((CONFIG_DIR / "distributed").glob("*.yaml")):
        section = yaml.safe_load(path.read_text())
        cfg = DistributedConfig(**section)
        cfg.validate()
        if cfg.launches:
            json.dumps(accelerate_config(cfg))


@pytest.mark.parametrize("bad, message", [
    ({"topology": "horovod"}, "distributed.topology='horovod' is not one of none, ddp, fsdp, deepspeed"),
    ({"topology": "none", "num_processes": 4}, "needs distributed.topology=ddp"),
    ({"topology": "ddp", "num_processes": 0}, "num_processes must be an integer >= 1"),
])
def test_bad_distributed_settings_are_one_clear_error(bad, message):
    with pytest.raises(InputError, match=message):
        DistributedConfig(**bad).validate()
