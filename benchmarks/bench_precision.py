"""The default's heavy steps in fp32 and bf16 against this machine's own matrix throughput (MFU).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_precision.py --repeats 3

On SmolLM2-135M-Instruct (prepared once from the shipped GGUF, cached in /tmp/qrpo-bench-smollm2) with the
default experiment's shapes: sampling (hf backend, 8 prompts x 8 samples, 24 new tokens, batch 64), the
reference log-probs of 64 completions (batch 16), and training steps (pointwise QRPO, batch 16, micro-batch
8). Peak: a 2048 x 2048 matrix product in the same process, fp32 and bf16 (medians of 7). Model FLOPs:
2 N per token for a forward pass (sampling: per generated token and per prompt token once, the work any
sampler must do), 6 N for a training step (forward + backward), N the parameter count
(the tied LM head counted once: its matmul is real work); attention's own FLOPs are left out (~1% at
these lengths). MFU = achieved model FLOP/s / the peak of the precision used. Medians of `--repeats`.
"""

from __future__ import annotations

import argparse
import statistics
import time

import pyarrow as pa
import torch

from benchmarks.bench_sampling import PROMPTS, model_dir
from qrpo.objective.algorithms import QRPO
from qrpo.config.sections import TrainConfig
from qrpo.training.logprobs import batched_sequence_logps
from qrpo.models import load_policy
from qrpo.sampling import HFSampler, SamplingParams, encode_prompts, sample_table
from qrpo.training.trainer import train_policy


def peak_gflops(dtype: torch.dtype, size: int = 2048, repeats: int = 7) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times) / 1e9


def timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=4)
    parser.add_argument("--precisions", default="fp32,bf16",
                        help="comma-separated; fp32 alone on a CPU without bf16 matrix units, where bf16 is emulated "
                             "(on an AMD EPYC without AVX-512 one bf16 2048^3 product takes over 30 s)")
    args = parser.parse_args()
    precisions = args.precisions.split(",")
    torch.manual_seed(0)
    model, tokenizer = load_policy(model_dir(), torch.device("cpu"))
    n_params = sum(p.numel() for p in model.parameters())
    prompts = encode_prompts(tokenizer, pa.table({"prompt_id": [f"b{i}" for i in range(8)], "prompt": PROMPTS}))
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    peak = {p: peak_gflops(dtypes[p]) for p in precisions}
    print("peak (2048^3 matmul): " + ", ".join(f"{p} {peak[p]:.0f} GFLOP/s" for p in precisions)
          + (f" ({peak['bf16'] / peak['fp32']:.2f}x)" if len(peak) == 2 else "") + f"; model: {n_params / 1e6:.1f}M parameters")
    rows = []
    for precision in precisions:
        results = {"sampling": [], "ref log-probs": [], "training": []}
        for r in range(args.repeats):
            params = SamplingParams(max_new_tokens=24, seed=r, precision=precision)
            table, seconds = timed(lambda: sample_table(HFSampler(model, tokenizer, params, 64), prompts, range(8), shard_prompts=8,
                                                        desc=f"sampling {precision}"))
            generated = sum(table.column("num_tokens").to_pylist())
            needed = generated + sum(len(p.prompt_ids) for p in prompts)  # the work a sampler must do: each prompt once
            results["sampling"].append((generated / seconds, 2 * n_params * needed / seconds))
            prompt_ids, completion_ids = table.column("prompt_ids").to_pylist(), table.column("completion_ids").to_pylist()
            tokens = sum(len(p) + len(c) for p, c in zip(prompt_ids, completion_ids))
            logps, seconds = timed(lambda: batched_sequence_logps(model, prompt_ids, completion_ids, tokenizer.pad_token_id, 16,
                                                                  desc=f"log-probs {precision}", precision=precision))
            results["ref log-probs"].append((tokens / seconds, 2 * n_params * tokens / seconds))
            n = args.train_steps * 16
            train_table = pa.table({
                "prompt_id": table.column("prompt_id").to_pylist()[:n], "prompt_ids": prompt_ids[:n], "completion_ids": completion_ids[:n],
                "reward": [float(i % 4) for i in range(n)], "quantile": [(i % 4) / 4 for i in range(n)], "num_ref": [4] * n,
                "ref_logp": logps[:n].tolist(),
            })
            trainee, _ = load_policy(model_dir(), torch.device("cpu"))
            cfg = TrainConfig(learning_rate=1e-6, epochs=1, batch_size=16, micro_batch_size=8, mixed_precision=precision)
            history = train_policy(trainee, train_table, QRPO(beta=0.1), cfg, tokenizer.pad_token_id)
            steady = history[1:] or history  # the first step pays for the optimiser's state and the kernels' warm-up
            tok_s = statistics.median(h["tokens_per_s"] for h in steady)
            results["training"].append((tok_s, 6 * n_params * tok_s))
        for step, values in results.items():
            tok_s, flops = statistics.median(v[0] for v in values), statistics.median(v[1] for v in values)
            rows.append((step, precision, tok_s, flops / 1e9, flops / 1e9 / peak[precision]))
    print(f"\n| step | precision | tokens/s | model GFLOP/s | MFU (of that precision's peak) |\n|---|---|---|---|---|")
    for step, precision, tok_s, gflops, mfu in sorted(rows, key=lambda r: (r[0], r[1] != "fp32")):
        print(f"| {step} | {precision} | {tok_s:.0f} | {gflops:.0f} | {100 * mfu:.1f}% |", flush=True)
    by = {(r[0], r[1]): r[2] for r in rows}
    if len(precisions) == 2:
        print("\nbf16 / fp32 tokens/s: " + ", ".join(f"{s} {by[(s, 'bf16')] / by[(s, 'fp32')]:.2f}x" for s in results))


if __name__ == "__main__":
    main()
