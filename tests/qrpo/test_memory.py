"""qrpo.memory: a large tensor allocated again after a free reuses the pages the first one faulted in.

glibc's setting is process-wide and cannot be undone, so each measurement runs in a fresh interpreter.
The bug this catches: a call that changes nothing (a wrong mallopt number, a setting made too late to
matter, the opt-out ignored), which a timing would only show as noise.
"""

import os
import subprocess
import sys

import pytest

import qrpo.training.trainer as trainer
from qrpo.config.sections import TrainConfig
from qrpo.objective.algorithms import QRPO

glibc = pytest.mark.skipif(not sys.platform.startswith("linux") or not hasattr(os, "confstr"), reason="glibc only")

# Minor page faults of the last 6 of 10 cycles that allocate (and zero) a tensor of the embedding gradient's size,
# 49,152 x 576 fp32 (113 MB, above glibc's mmap threshold), with a small tensor between, then free both; as a
# training step does each micro-batch. 27,648 pages of 4 KiB a cycle.
CYCLES = """
import resource, torch
from qrpo.memory import keep_freed_memory
applied = keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    torch.zeros(49152, 576); torch.ones(1000)
before = faults()
for _ in range(6):
    torch.zeros(49152, 576); torch.ones(1000)
print(applied, faults() - before)
"""
PAGES = 6 * 49152 * 576 * 4 // 4096


def _cycles(env: dict) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", CYCLES], env={**os.environ, **env}, capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0] == "True", int(out[1])


@glibc
def test_a_freed_large_tensor_is_reused_instead_of_faulted_in_again_and_the_opt_out_is_honoured():
    """glibc's defaults fault every page of every cycle in again (measured: all of them); kept, at least a quarter
    of the cycles reuse freed memory (measured: a half to two thirds: a freed block is reused when the next one
    fits it after alignment, else the heap grows)."""
    applied, faults = _cycles({"QRPO_KEEP_FREED_MEMORY": "0"})
    assert not applied and faults > 0.95 * PAGES, f"glibc's defaults fault every page in again; saw {faults} of {PAGES}"
    applied, faults = _cycles({"QRPO_KEEP_FREED_MEMORY": "1"})
    assert applied and faults < 0.75 * PAGES, f"{faults} page faults of {PAGES}: freed memory was not reused"


def test_training_on_the_cpu_keeps_freed_memory(tiny_policy, monkeypatch):
    calls = []
    monkeypatch.setattr(trainer, "keep_freed_memory", lambda: calls.append(True) or True)
    model, tokenizer = tiny_policy
    n = 4
    import pyarrow as pa

    table = pa.table({"prompt_id": [f"p{i}" for i in range(n)], "prompt_ids": [[11, 12, 13]] * n,
                      "completion_ids": [[20 + i, 30, 40] for i in range(n)], "reward": [0.0, 1.0, 2.0, 3.0],
                      "quantile": [0.0, 0.25, 0.5, 0.75], "num_ref": [4] * n, "ref_logp": [-5.0] * n})
    trainer.train_policy(model, table, QRPO(beta=0.5), TrainConfig(learning_rate=1e-3, epochs=1, batch_size=4, micro_batch_size=2),
                         tokenizer.pad_token_id)
    assert calls == [True]
