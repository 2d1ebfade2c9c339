"""Bytes on disk per token of a samples table, the constants qrpo-plan prices disk with (qrpo/plan/throughput.yaml).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_plan_disk.py            # --tokenizer <folder>: another tokenizer

Builds tables with the samples artifact's schema (qrpo/sampling/base.py: prompt ids, completion ids, the decoded
completion, a few scalars), written as the pipeline writes them (qrpo.store.artifacts.write_table: pyarrow's
defaults), from real tokens: the repository's own Markdown and Python, tokenised by SmolLM2's tokenizer (prepared
from the shipped GGUF, as benchmarks/bench_sampling.py does) and cut into random spans. Each prompt's 40-token
span repeats in its 8 rows, as a prompt's ids do. Three shapes: 64 prompts x 8 samples of 24 and 512 tokens, and
16 x 8 of 2,048; then the least-squares fit bytes = a * completion tokens + b * prompt tokens (over all rows).
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
from transformers import AutoTokenizer

from qrpo.sampling.base import SAMPLES_SCHEMA
from qrpo.store.artifacts import write_table

ROOT = Path(__file__).resolve().parents[1]
SHAPES = [(64, 8, 24), (64, 8, 512), (16, 8, 2048)]  # prompts, samples per prompt, completion tokens
PROMPT_TOKENS = 40


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokenizer", default=None, help="a folder with a tokenizer (default: SmolLM2's, prepared from the GGUF)")
    args = parser.parse_args()
    if args.tokenizer is None:
        from benchmarks.bench_sampling import model_dir

        args.tokenizer = str(model_dir())
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    text = "\n".join(p.read_text() for p in sorted(ROOT.glob("**/*.md")) + sorted((ROOT / "qrpo").glob("**/*.py")))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    print(f"corpus: {len(ids):,} tokens ({len(set(ids)):,} distinct)")
    rng = random.Random(0)
    fit_x, fit_y = [], []
    print("| prompts x samples | completion tokens | rows | bytes | bytes per completion token | bytes per token (prompt + completion) |")
    print("|---|---|---|---|---|---|")
    for prompts, n, length in SHAPES:
        rows = []
        for p in range(prompts):
            start = rng.randrange(len(ids) - PROMPT_TOKENS)
            prompt = ids[start:start + PROMPT_TOKENS]
            for i in range(n):
                start = rng.randrange(len(ids) - length)
                completion = ids[start:start + length]
                rows.append({"prompt_id": f"p{p}", "sample_index": i, "prompt_ids": prompt, "completion_ids": completion,
                             "completion": tokenizer.decode(completion), "num_tokens": length, "finish_reason": "length", "finished": False})
        table = pa.Table.from_pylist(rows, schema=SAMPLES_SCHEMA)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "data.parquet"
            write_table(table, path)
            size = os.path.getsize(path)
        completion_tokens, prompt_tokens = len(rows) * length, len(rows) * PROMPT_TOKENS
        fit_x.append([completion_tokens, prompt_tokens])
        fit_y.append(size)
        print(f"| {prompts} x {n} | {length} | {len(rows)} | {size:,} | {size / completion_tokens:.2f} | "
              f"{size / (completion_tokens + prompt_tokens):.2f} |")
    (a, b), *_ = np.linalg.lstsq(np.array(fit_x, dtype=float), np.array(fit_y, dtype=float), rcond=None)
    print(f"\nfit: bytes = {a:.2f} per completion token + {b:.2f} per prompt token (repeated in each of its rows)")


if __name__ == "__main__":
    main()
