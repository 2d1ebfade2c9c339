"""Log-ratio error of bf16 against fp32 on a finished run's own samples.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_logratio_precision.py --store $QRPO_HOME/artifacts --model KEY --train KEY --samples .../data.parquet

Reads the run's policy (train artifact), π_ref (model artifact) and the policy's eval samples, computes
log π(y|x) and log π_ref(y|x) of every sample in fp32 and in bf16 (autocast over fp32 weights), and prints
how far the bf16 sequence log-probs and the log-ratio log π − log π_ref (the quantity KL and every
implicit reward are made of) are from fp32: mean and max absolute error, per completion and per token.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from qrpo.store.artifacts import ArtifactStore
from qrpo.evaluation.logratios import policy_and_ref_logps


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--model", required=True, help="model artifact key (π_ref)")
    parser.add_argument("--train", required=True, help="train artifact key (the policy)")
    parser.add_argument("--samples", type=Path, required=True, help="a samples parquet of the policy")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    store = ArtifactStore(args.store)
    ref_dir, policy_dir = store.require("model", args.model).path, store.require("train", args.train).path / "policy"
    samples = pq.read_table(args.samples)
    out = {p: policy_and_ref_logps(policy_dir, ref_dir, samples, args.batch_size, precision=p) for p in ("fp32", "bf16")}
    tokens = np.asarray(samples.column("num_tokens").to_pylist(), dtype=float)
    print(f"{samples.num_rows} completions, {int(tokens.sum())} completion tokens")
    for name, f in (("log pi_ref", lambda t: t["ref_logp"]), ("log pi", lambda t: t["policy_logp"]),
                    ("log pi - log pi_ref", lambda t: np.asarray(t["policy_logp"]) - np.asarray(t["ref_logp"]))):
        a, b = np.asarray(f(out["fp32"]), dtype=float), np.asarray(f(out["bf16"]), dtype=float)
        err = np.abs(b - a)
        print(f"{name:20s} fp32 mean {a.mean():+.4f}  |bf16 - fp32| per completion: mean {err.mean():.4f} max {err.max():.4f}"
              f"  per token: mean {(err / tokens).mean():.5f}; mean signed {(b - a).mean():+.4f}")


if __name__ == "__main__":
    main()
