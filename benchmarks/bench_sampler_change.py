"""The `hf` sampler of commit 869e3cf (before the shared prefill and `padded_width`) against today's.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_sampler_change.py

Same 8 chat prompts x 8 samples, 24 new tokens, SmolLM2-135M-Instruct (benchmarks/bench_sampling.py's
model cache), fp32 and bf16, batches of 16 and 64 sequences: wall time of one `complete` call each and how
many of the 64 completions are the same token ids. The old module is read from git, so run it in a clone.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import torch

import qrpo.sampling.hf as new
from benchmarks.bench_sampling import PROMPTS, model_dir
from qrpo.models import load_policy
from qrpo.sampling import SamplingParams, encode_prompts

BEFORE = "869e3cf5da5df1af4548e3295ea36064dc6cde08"


def old_module():
    source = subprocess.run(["git", "show", f"{BEFORE}:qrpo/sampling/hf.py"], check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "hf_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("hf_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["hf_before"] = module
    spec.loader.exec_module(module)
    return module


def main():
    old = old_module()
    model, tokenizer = load_policy(model_dir(), torch.device("cpu"))
    prompts = encode_prompts(tokenizer, pa.table({"prompt_id": [f"b{i}" for i in range(8)], "prompt": PROMPTS}))
    print("| precision | batch | before | after | same completions |\n|---|---|---|---|---|")
    for precision in ("fp32", "bf16"):
        for batch_size in (16, 64):
            params = SamplingParams(max_new_tokens=24, seed=0, precision=precision)
            rows, seconds = {}, {}
            for name, module in (("before", old), ("after", new)):
                start = time.perf_counter()
                out = module.HFSampler(model, tokenizer, params, batch_size).complete(prompts, range(8))
                seconds[name] = time.perf_counter() - start
                rows[name] = [c.token_ids for per_prompt in out for c in per_prompt]
            same = sum(a == b for a, b in zip(rows["before"], rows["after"]))
            print(f"| {precision} | {batch_size} | {seconds['before']:.2f} s | {seconds['after']:.2f} s | {same}/64 |")


if __name__ == "__main__":
    main()
