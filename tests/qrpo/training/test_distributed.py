"""Training across processes: DDP and FSDP on 2 CPU processes (gloo) against one process with the same
global batch, and the accelerate config files the topologies write, as accelerate itself reads them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import yaml
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import ComputeEnvironment, DistributedType
from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

from qrpo.objective.algorithms import DPO
from qrpo.config.sections import TrainConfig
from qrpo.training.distributed import DistributedConfig, accelerate_config, launch_command, launch_training, write_accelerate_config
from qrpo.errors import InputError
from qrpo.models import load_policy
from qrpo.training.trainer import train_policy

from .test_trainer import _pairs

PRESETS = Path(__file__).parents[3] / "conf" / "distributed"
TRAIN = {"learning_rate": 1e-2, "epochs": 2, "batch_size": 4, "micro_batch_size": 2, "warmup_ratio": 0.0}  # 4 steps of 2 micro-batches
ALGORITHM = {"_target_": "qrpo.objective.algorithms.DPO", "beta": 0.5}


@pytest.fixture(scope="module")
def single_run(tiny_model_dir, tmp_path_factory):
    """The training table file, and the model and history of training in this one process."""
    model, tokenizer = load_policy(tiny_model_dir, torch.device("cpu"))
    table_file = tmp_path_factory.mktemp("table") / "table.parquet"
    pq.write_table(_pairs(model, tokenizer.pad_token_id), table_file)
    history = train_policy(model, pq.read_table(table_file), DPO(beta=0.5), TrainConfig(**TRAIN), tokenizer.pad_token_id)
    initial, _ = load_policy(tiny_model_dir, torch.device("cpu"))
    moved = max((a - b).abs().max().item() for a, b in zip(model.state_dict().values(), initial.state_dict().values()))
    assert moved > 1e-3  # the weights move far more than the tolerances below
    return table_file, model, history


def _assert_same_training(history, single_history, policy_dir, single, loss_atol, param_atol):
    """Per-step gradient norms (rel 1e-5), losses and final parameters of a 2-process run against one process."""
    assert [h["processes"] for h in history] == [2] * len(single_history)
    assert [h["grad_norm"] for h in history] == pytest.approx([h["grad_norm"] for h in single_history], rel=1e-5)
    assert [h["loss"] for h in history] == pytest.approx([h["loss"] for h in single_history], abs=loss_atol)
    trained, _ = load_policy(policy_dir, torch.device("cpu"))
    for (name, a), b in zip(single.state_dict().items(), trained.state_dict().values()):
        torch.testing.assert_close(b, a, atol=param_atol, rtol=0, msg=name)


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_gives_the_parameters_of_one_process_with_the_same_global_batch(tiny_model_dir, single_run, tmp_path):
    """The gradient of a step is the mean over the global batch whatever the number of processes.

    A wrong loss scale (the factor `world` in the trainer's backward dropped, or doubled) is checked
    on the gradient norm of every step (history `grad_norm`: the norm of the all-reduced gradient
    before clipping, from accelerator.clip_grad_norm_), which it changes by that factor. The losses
    and parameters hardly see it: AdamW's update m/(sqrt(v)+eps) ignores a constant gradient factor
    except through eps, so they move only through the few parameters whose gradient is as small as
    eps (with `world` dropped: 7e-5 on the loss after 4 steps here, a margin owed to this model and data).
    Tolerances: rel 1e-5 on grad norms, abs 1e-6 on losses, abs 1e-5 on parameters. The two runs differ
    only in the order of float32 additions (an all-reduce average of two half-batch gradients against
    one sum): measured 4e-7 relative, 2.4e-7 and 8e-7; the weights move by 2.5e-2."""
    table_file, single, single_history = single_run
    history = launch_training(DistributedConfig("ddp", 2, use_cpu=True), tiny_model_dir, table_file, ALGORITHM, TRAIN, tmp_path / "ddp")
    _assert_same_training(history, single_history, tmp_path / "ddp" / "policy", single, loss_atol=1e-6, param_atol=1e-5)


@pytest.mark.slow
def test_fsdp2_on_two_cpu_processes_gives_the_parameters_of_one_process_with_the_same_global_batch(tiny_model_dir, single_run, tmp_path):
    """The FSDP preset (fsdp_version 2, transformer-layer wrap, full state dict), launched with the config
    file and `accelerate launch` command launch_training uses on a GPU worker, on 2 CPU processes.

    accelerate runs FSDP only on accelerator devices (CPU processes silently get DDP), so the workers
    are tests/qrpo/training/fsdp_cpu_worker.py: qrpo.training.distributed's worker with accelerate's state made FSDP
    before the trainer's Accelerator (see its docstring); `prepared.json` shows fully_shard applied.
    Same checks as for DDP (a dropped `world` halves every grad norm). FSDP reduce-scatters the same
    half-batch gradients and steps AdamW on shards: again float32 summation order only, measured
    9e-7 relative on grad norms, 4.8e-7 on losses, 4e-6 on parameters, hence abs 2e-6 and 2e-5 here
    (4-5x the measured; still 35x below the 7e-5 loss change of a dropped `world`, 1000x below the
    weights' 2.5e-2 move) and rel 1e-5 on grad norms."""
    table_file, single, single_history = single_run
    preset = yaml.safe_load((PRESETS / "fsdp.yaml").read_text())
    # a free rendezvous port rather than accelerate's default 29500, which other runs on this machine may hold
    cfg = DistributedConfig(**{**preset, "num_processes": 2, "accelerate": {**preset["accelerate"], "main_process_port": 0}})
    config_file = write_accelerate_config(cfg, tmp_path / "accelerate.yaml")
    out = tmp_path / "fsdp"
    command = launch_command(cfg, config_file, ["--model", str(tiny_model_dir), "--table", str(table_file),
                                                "--algorithm", json.dumps(ALGORITHM), "--train", json.dumps(TRAIN), "--out", str(out)])
    module = command.index("qrpo.training.distributed")
    command[module - 1 : module + 1] = [str(Path(__file__).with_name("fsdp_cpu_worker.py"))]
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert json.loads((out / "prepared.json").read_text()) == [["FSDPLlamaForCausalLM", 2]]
    _assert_same_training(json.loads((out / "history.json").read_text()), single_history, out / "policy", single,
                          loss_atol=2e-6, param_atol=2e-5)


# what each conf/distributed preset promises, written out here rather than derived from qrpo.training.distributed
PROMISED_TYPE = {"ddp.yaml": DistributedType.MULTI_GPU, "fsdp.yaml": DistributedType.FSDP,
                 "deepspeed_zero1.yaml": DistributedType.DEEPSPEED, "deepspeed_zero3.yaml": DistributedType.DEEPSPEED}
LAUNCHER_FLAG = {DistributedType.MULTI_GPU: "multi_gpu", DistributedType.FSDP: "use_fsdp", DistributedType.DEEPSPEED: "use_deepspeed"}
# the worker environment variable accelerate launch sets from each deepspeed_config key
DEEPSPEED_ENV = {"zero_stage": "ACCELERATE_DEEPSPEED_ZERO_STAGE", "gradient_clipping": "ACCELERATE_GRADIENT_CLIPPING",
                 "zero3_init_flag": "ACCELERATE_DEEPSPEED_ZERO3_INIT", "zero3_save_16bit_model": "ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL"}


@pytest.mark.parametrize("preset", sorted(PROMISED_TYPE))
def test_every_launching_preset_writes_the_accelerate_config_and_worker_environment_it_promises(preset, tmp_path, monkeypatch):
    """The config file goes through accelerate's own loader (`load_config_from_file`, which rejects unknown
    top-level keys and distributed types) and `accelerate launch`'s argument handling; checked are the
    loaded ClusterConfig fields and, for FSDP and DeepSpeed, the environment the workers get, where every
    fsdp_config / deepspeed_config key of the preset must arrive (a misspelled key is silently ignored
    by both accelerate steps, and only shows there as a default)."""
    monkeypatch.chdir(tmp_path)  # prepare_deepspeed_cmd_env puts "." on PYTHONPATH
    section = yaml.safe_load((PRESETS / preset).read_text())
    config_file = write_accelerate_config(DistributedConfig(**section), tmp_path / "accelerate.yaml")
    loaded = load_config_from_file(str(config_file))
    assert isinstance(loaded, ClusterConfig) and loaded.compute_environment == ComputeEnvironment.LOCAL_MACHINE
    assert (loaded.distributed_type, loaded.num_processes, loaded.num_machines) == (PROMISED_TYPE[preset], section["num_processes"], 1)
    assert (loaded.use_cpu, loaded.mixed_precision) == (False, "no")  # the trainer picks the precision
    fsdp, deepspeed = section["accelerate"].get("fsdp_config", {}), section["accelerate"].get("deepspeed_config", {})
    assert (loaded.fsdp_config, loaded.deepspeed_config) == (fsdp, deepspeed)

    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(["--config_file", str(config_file), "train.py"]))
    assert [f for f in LAUNCHER_FLAG.values() if getattr(args, f)] == [LAUNCHER_FLAG[PROMISED_TYPE[preset]]]
    assert (args.num_processes, args.mixed_precision) == (section["num_processes"], "no")
    if deepspeed:
        unknown = sorted(set(deepspeed) - set(DEEPSPEED_ENV))
        assert not unknown, f"deepspeed_config keys of {preset} with no known worker variable (misspelled, or add it to DEEPSPEED_ENV): {unknown}"
        args.deepspeed_fields_from_accelerate_config = ",".join(deepspeed)  # as accelerate's launch_command sets it
        _, env = prepare_deepspeed_cmd_env(args)
        assert {DEEPSPEED_ENV[k]: env.get(DEEPSPEED_ENV[k]) for k in deepspeed} == {DEEPSPEED_ENV[k]: str(v).lower() for k, v in deepspeed.items()}
    else:
        args.main_process_port = 0  # a free port: no warning about 29500 in use
        env = prepare_multi_gpu_env(args)
        assert env.get("ACCELERATE_USE_FSDP", "false") == str(bool(fsdp)).lower()
        assert {k.upper(): env.get(k.upper()) for k in fsdp} == {k.upper(): str(v).lower() if isinstance(v, bool) else str(v) for k, v in fsdp.items()}


def test_gpus_get_accelerate_launch_cpu_processes_torchrun_ddp_and_no_topology_accelerate_has_only_on_gpus(tmp_path):
    """On CPU processes accelerate would silently train FSDP/DeepSpeed configs with DDP: refused."""
    command = launch_command(DistributedConfig("fsdp", 8), tmp_path / "a.yaml", ["--out", "x"])
    assert command[1:5] == ["-m", "accelerate.commands.launch", "--config_file", str(tmp_path / "a.yaml")]
    assert command[-4:] == ["-m", "qrpo.training.distributed", "--out", "x"]
    cpu = accelerate_config(DistributedConfig("ddp", 2, use_cpu=True))
    assert (cpu["distributed_type"], cpu["use_cpu"]) == ("MULTI_CPU", True)
    command = launch_command(DistributedConfig("ddp", 2, use_cpu=True), tmp_path / "a.yaml", ["--out", "x"])
    assert command[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert command[-4:] == ["-m", "qrpo.training.distributed", "--out", "x"]
    for topology in ("fsdp", "deepspeed"):
        with pytest.raises(InputError, match=f"accelerate has no {topology} on CPU processes"):
            launch_command(DistributedConfig(topology, 2, use_cpu=True), tmp_path / "a.yaml", [])


def test_every_distributed_preset_builds():
    presets = sorted(PRESETS.glob("*.yaml"))
    assert {p.name for p in presets} == {*PROMISED_TYPE, "none.yaml"}
    for path in presets:
        cfg = DistributedConfig(**yaml.safe_load(path.read_text()))
        cfg.validate()
        assert cfg.launches == (path.name != "none.yaml")


@pytest.mark.parametrize("bad, message", [
    ({"topology": "horovod"}, "distributed.topology='horovod' is not one of none, ddp, fsdp, deepspeed"),
    ({"topology": "none", "num_processes": 4}, "needs distributed.topology=ddp"),
    ({"topology": "ddp", "num_processes": 0}, "num_processes must be an integer >= 1"),
    ({"topology": "fsdp", "num_processes": 2, "use_cpu": True}, "use_cpu=true runs DDP only; accelerate has no fsdp on CPU"),
])
def test_bad_distributed_settings_are_one_clear_error(bad, message):
    with pytest.raises(InputError, match=message):
        DistributedConfig(**bad).validate()
