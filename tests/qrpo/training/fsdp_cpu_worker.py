"""`python -m qrpo.training.distributed` for FSDP on CPU processes (gloo), for tests only.

accelerate (1.15) turns `ACCELERATE_USE_FSDP` into `DistributedType.FSDP` only on accelerator devices:
`AcceleratorState.__init__` sets it inside `elif self.distributed_type in [MULTI_GPU, MULTI_XPU, ...]`,
and CPU processes are MULTI_CPU, so under `accelerate launch` with an FSDP config they silently train
with DDP. This worker makes the trainer's Accelerator FSDP right after it is made (its shared state
gets `distributed_type = FSDP` and the plugin accelerate builds from the launcher's FSDP_* environment);
everything after that (fully_shard in `Accelerator.prepare`, backward, no_sync, clip_grad_norm_,
unwrap, the gathered save) is accelerate's, the trainer's and qrpo.training.distributed's FSDP code. It writes
`prepared.json` into --out ([class, fsdp_version] of every model `Accelerator.prepare` returned) so a
test can check that FSDP was really applied. FSDP2 only: FSDP1 on CPU stops in torch 2.13 itself
("ValueError: Inconsistent compute device and `device_id` on rank 0: cpu vs cpu:0", from
torch/distributed/fsdp/_init_utils.py, whose compute device is a CUDA-like device).
"""

import json
import os
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

import qrpo.training.trainer as trainer
from qrpo.training.distributed import main

_accelerator = trainer._accelerator


def _fsdp_accelerator(cfg):
    """The trainer's Accelerator, its shared state then made FSDP (before `prepare`, as on GPUs)."""
    accelerator = _accelerator(cfg)
    accelerator.state.distributed_type = DistributedType.FSDP
    accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin()  # from the FSDP_* variables accelerate launch sets
    return accelerator


prepared = []
_prepare = Accelerator.prepare


def _recording_prepare(self, *args, **kwargs):
    result = _prepare(self, *args, **kwargs)
    prepared.extend([type(m).__name__, self.state.fsdp_plugin.fsdp_version] for m in result if isinstance(m, torch.nn.Module))
    return result


trainer._accelerator, Accelerator.prepare = _fsdp_accelerator, _recording_prepare
main(sys.argv[1:])
if os.environ.get("RANK", "0") == "0":
    out = Path(sys.argv[sys.argv.index("--out") + 1])
    (out / "prepared.json").write_text(json.dumps(prepared))
