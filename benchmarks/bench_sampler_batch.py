"""The `hf` sampler's decode batch (`sampler.batch_size`) against the machine's own matrix throughput.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_sampler_batch.py --batches 64,128,256 --repeats 3

SmolLM2-135M-Instruct (prepared once from the shipped GGUF, benchmarks/bench_sampling.py) samples the default's
train prompts (the first `--prompts` of data/chat/prompts.jsonl's train split), 8 completions each, 24 new tokens,
once per batch size, the batch sizes alternating within each repeat so that a drift of the machine's speed hits
them alike. `sampler.shard_prompts` is batch / 8 (one generate call per shard, as in conf/sampler/hf.yaml).
A decode step multiplies a [rows, 576] activation by each weight matrix; at 64 rows those products run well below
the matrix units' peak, and more rows per call amortise each weight's read over more tokens. Prints, per batch
size: median seconds, generated tokens/s, model FLOP/s (2 N per generated token plus each prompt's tokens once,
as benchmarks/bench_precision.py counts) and MFU against the peak measured in the same process, and whether the
completions are those of the first batch size, row for row (they must be: a completion depends on its seed only).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import pyarrow as pa
import torch

from benchmarks.bench_precision import peak_gflops
from benchmarks.bench_sampling import model_dir
from qrpo.models import load_policy
from qrpo.sampling import HFSampler, SamplingParams, encode_prompts, sample_table

DATA = Path(__file__).resolve().parents[1] / "data" / "chat" / "prompts.jsonl"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", default="64,128,256", help="comma-separated sampler.batch_size values")
    parser.add_argument("--prompts", type=int, default=64, help="train prompts of the default's data (8 samples each)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--max-new-tokens", type=int, default=24)
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    torch.manual_seed(0)
    model, tokenizer = load_policy(model_dir(), torch.device("cpu"))
    n_params = sum(p.numel() for p in model.parameters())
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    train = [r for r in rows if r.get("split") == "train"][: args.prompts]
    prompts = encode_prompts(tokenizer, pa.table({"prompt_id": [str(r["id"]) for r in train], "prompt": [r["prompt"] for r in train]}))
    peak = peak_gflops({"fp32": torch.float32, "bf16": torch.bfloat16}[args.precision])
    print(f"peak ({args.precision}, 2048^3 matmul): {peak:.0f} GFLOP/s; {len(prompts)} prompts x 8 samples, "
          f"{args.max_new_tokens} new tokens; model {n_params / 1e6:.1f}M parameters")
    params = SamplingParams(max_new_tokens=args.max_new_tokens, seed=0, precision=args.precision)
    seconds: dict[int, list[float]] = {b: [] for b in batches}
    same, first, generated = {}, None, 0
    for repeat in range(args.repeats):
        for batch in batches:
            start = time.perf_counter()
            table = sample_table(HFSampler(model, tokenizer, params, batch), prompts, range(8), shard_prompts=max(1, batch // 8),
                                 desc=f"batch {batch}")
            seconds[batch].append(time.perf_counter() - start)
            completions = table.column("completion_ids").to_pylist()
            first = completions if first is None else first
            same[batch] = same.get(batch, True) and completions == first
            generated = sum(map(len, completions))
            print(f"repeat {repeat + 1}, batch {batch}: {seconds[batch][-1]:.2f} s", file=sys.stderr, flush=True)
    work = 2 * n_params * (generated + sum(len(p.prompt_ids) for p in prompts))
    base = statistics.median(seconds[batches[0]])
    print("| sampler.batch_size | median s | runs (s) | tokens/s | model GFLOP/s | MFU | vs first | same completions |")
    print("|---|---|---|---|---|---|---|---|")
    for batch in batches:
        median = statistics.median(seconds[batch])
        print(f"| {batch} | {median:.2f} | {', '.join(f'{s:.2f}' for s in seconds[batch])} | {generated / median:.0f} | "
              f"{work / median / 1e9:.0f} | {100 * work / median / 1e9 / peak:.1f}% | {base / median:.2f}x | "
              f"{'yes' if same[batch] else 'NO'} |")


if __name__ == "__main__":
    main()
