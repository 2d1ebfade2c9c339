"""Benchmark: training and sampling throughput of a ~135M-parameter Llama in bf16 (the GPU check's figure).

    python benchmarks/bench_gpu.py                 # on the GPU: SmolLM2-135M's shape, bf16, ~1-2 minutes
    python benchmarks/bench_gpu.py --small --device cpu    # a 1.3M-parameter model: a smoke run on a CPU

The model has SmolLM2-135M-Instruct's architecture (30 layers, hidden 576, 9 heads / 3 KV heads, vocabulary
49,152) with random weights built from its config, so nothing is downloaded and the LM head is as large as
the real one's. Token ids are random (no tokenizer is involved beyond pad and EOS ids).

* training: `qrpo.training.trainer.train_policy` with QRPO (pointwise regime) on --batch-size completions of
  --seq-tokens tokens each (prompt --prompt-tokens of them), fp32 master weights under bf16 autocast
  (train.mixed_precision=bf16), shared prompts and the fused LM head as in the pipeline. tokens/s is
  tokens per step / median step time over the steps after --warmup-steps; the model FLOP/s line is
  6 x parameters x tokens/s (forward + backward, attention not counted).
* sampling: `qrpo.sampling.HFSampler.complete` (exact Gumbel sampling through `generate`) with the model
  in bf16, --prompts prompts x --samples completions of up to --new-tokens tokens (a random model draws
  EOS rarely, so rows nearly always run to the limit; `new_tokens` counts what was generated).
  tokens/s = generated tokens / wall time, median of --repeats after one warm-up call.

Only torch, transformers, accelerate and pyarrow are needed. Not a test: nothing asserts a time. One JSON
line per measurement goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qrpo.objective.algorithms import QRPO  # noqa: E402
from qrpo.config.sections import TrainConfig  # noqa: E402
from qrpo.sampling import HFSampler, SamplingParams  # noqa: E402
from qrpo.sampling.base import Prompt  # noqa: E402
from qrpo.training.trainer import train_policy  # noqa: E402

SMOLLM2_135M = {"vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                "num_attention_heads": 9, "num_key_value_heads": 3, "max_position_embeddings": 2048,
                "tie_word_embeddings": True, "rope_theta": 100000.0}
SMALL = {**SMOLLM2_135M, "vocab_size": 8192, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2}
PAD, EOS = 0, 2


class _Ids:
    """What the sampler needs of a tokenizer when no text is involved."""

    pad_token_id, eos_token_id = PAD, EOS


def _model(arch: dict, device: torch.device, dtype: torch.dtype):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(pad_token_id=PAD, eos_token_id=EOS, bos_token_id=1, **arch)
    return LlamaForCausalLM(config).to(device=device, dtype=dtype)


def bench_training(args, arch, device) -> dict:
    model = _model(arch, device, torch.float32)
    params = sum(p.numel() for p in model.parameters())
    rng = np.random.default_rng(0)
    n = args.batch_size * (args.warmup_steps + args.steps)
    completion = args.seq_tokens - args.prompt_tokens
    prompts = [rng.integers(3, arch["vocab_size"], args.prompt_tokens).tolist() for _ in range(n // 2) for _ in range(2)]
    table = pa.table({
        "prompt_id": [f"p{i // 2}" for i in range(n)], "prompt_ids": prompts,
        "completion_ids": [rng.integers(3, arch["vocab_size"], completion).tolist() for _ in range(n)],
        "reward": rng.random(n).tolist(), "quantile": rng.random(n).tolist(), "num_ref": [8] * n,
        "ref_logp": (-rng.random(n) * completion).tolist(),
    })
    cfg = TrainConfig(learning_rate=1e-5, epochs=1, batch_size=args.batch_size, micro_batch_size=args.micro_batch_size,
                      warmup_ratio=0.0, mixed_precision=args.precision, group_by_length=False)
    ends = []

    def on_step(step, record):
        if device.type == "cuda":
            torch.cuda.synchronize()
        ends.append(time.perf_counter())

    train_policy(model, table, QRPO(beta=0.1), cfg, PAD, on_step=on_step)
    step_times = np.diff(ends[args.warmup_steps - 1:]) if args.warmup_steps else np.diff(ends)
    tokens_per_step = args.batch_size * args.seq_tokens
    tokens_per_s = tokens_per_step / float(np.median(step_times))
    return {"measure": "training", "device": device.type, "precision": args.precision, "parameters": params,
            "batch": args.batch_size, "seq_tokens": args.seq_tokens, "timed_steps": len(step_times),
            "step_s_median": round(float(np.median(step_times)), 4), "tokens_per_s": round(tokens_per_s, 1),
            "model_tflop_per_s": round(6 * params * tokens_per_s / 1e12, 3)}


def bench_sampling(args, arch, device) -> dict:
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    model = _model(arch, device, dtype)
    rng = np.random.default_rng(1)
    prompts = [Prompt(f"p{i}", tuple(rng.integers(3, arch["vocab_size"], args.prompt_tokens).tolist())) for i in range(args.prompts)]
    sampler = HFSampler(model, _Ids(), SamplingParams(max_new_tokens=args.new_tokens, seed=0), batch_size=args.prompts * args.samples)
    times, generated = [], 0
    for _ in range(args.repeats + 1):  # the first call warms up (kernels, allocator)
        start = time.perf_counter()
        out = sampler.complete(prompts, range(args.samples))
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        generated = sum(len(c.token_ids) for row in out for c in row)
    wall = statistics.median(times[1:])
    return {"measure": "sampling", "device": device.type, "precision": args.precision, "sequences": args.prompts * args.samples,
            "new_tokens": generated, "wall_s_median": round(wall, 3), "tokens_per_s": round(generated / wall, 1)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a tiny model and batch: a smoke run on a CPU")
    parser.add_argument("--device", default="cuda", help="cuda (default), or cpu with --small")
    parser.add_argument("--precision", default="bf16", choices=["bf16", "no"])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--micro-batch-size", type=int, default=16)
    parser.add_argument("--seq-tokens", type=int, default=512)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--warmup-steps", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.small:
        args.batch_size = args.micro_batch_size = 4
        args.seq_tokens, args.prompt_tokens, args.steps, args.warmup_steps = 64, 16, 3, 1
        args.prompts, args.samples, args.new_tokens, args.repeats = 4, 2, 16, 1
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here (torch.cuda.is_available() is False); --small --device cpu is a CPU smoke run")
    arch, device = (SMALL if args.small else SMOLLM2_135M), torch.device(args.device)
    for bench in (bench_training, bench_sampling):
        print(json.dumps(bench(args, arch, device)), flush=True)


if __name__ == "__main__":
    main()
