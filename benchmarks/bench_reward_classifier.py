"""Sequence-classifier scoring: batches grouped by token length against batches in input order.

    .venv/bin/python benchmarks/bench_reward_classifier.py     # --samples 256 --batch-size 16 --repeats 3

A randomly initialised Llama sequence classifier over bytes (hidden 256, 4 layers; the cost per
token of a real reward model is larger, the padding waste is the same) scores completions whose
lengths vary as sampled answers do (log-normal, 20 to 1500 bytes). Same model, same inputs, same
batch size; only the order in which samples are batched differs. Scores are checked to agree.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qrpo.rewards.classifier import SequenceClassifierReward  # noqa: E402

ARCH = {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 4, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 2048}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(5.0, 0.9, args.samples), 20, 1500).astype(int)
    words = "the answer is that we should consider each case carefully and then return the result".split()
    completions = [" ".join(rng.choice(words, n // 5 + 1))[:n] for n in lengths]
    prompts = ["Explain the result."] * args.samples
    results = {}
    for grouped in (True, False):
        reward = SequenceClassifierReward.from_config(ARCH, seed=0, batch_size=args.batch_size, length_grouped=grouped)
        encoded = [reward.encode([{"role": "user", "content": p}], c) for p, c in zip(prompts, completions)]
        reward.score_ids(encoded[: args.batch_size])  # warm-up
        times, scores = [], None
        for _ in range(args.repeats):
            start = time.perf_counter()
            scores = reward.score_ids(encoded)
            times.append(time.perf_counter() - start)
        results[grouped] = (statistics.median(times), times, scores)
    np.testing.assert_allclose(results[True][2], results[False][2], atol=1e-4)
    tokens = sum(len(e) for e in encoded)
    for grouped, (t, times, _) in results.items():
        print(f"{'length-grouped' if grouped else 'input order   '}: median {t:.2f} s over {args.repeats} "
              f"({args.samples / t:.0f} samples/s, {tokens / t:.0f} tokens/s; runs {', '.join(f'{x:.2f}' for x in times)})")
    print(f"speed-up {results[False][0] / results[True][0]:.2f}x ({args.samples} samples, {tokens} tokens, batch {args.batch_size})")


if __name__ == "__main__":
    main()
