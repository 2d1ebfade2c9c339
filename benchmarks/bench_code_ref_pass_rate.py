"""π_ref's pass rate on a code tier: the figure that says whether the code task gives QRPO any signal.

    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_code_ref_pass_rate.py     # easy tier, 4 samples
    ... bench_code_ref_pass_rate.py --samples 2 dataset=code_demo                                # other overrides

Samples every problem of the dataset (train and eval split, all rows: the max_*_prompts caps are ignored) with
the project's own sampler and scores the samples with the project's code reward, both at the settings the Hydra
overrides compose (default: experiment=code): model, sampler seed / temperature / top_p / max_new_tokens,
precision, reward limits and max_tests. Sample indices 0..n-1 of a prompt are the ones the pipeline's train
`sample` step draws first for that prompt (same seed, same exact Gumbel-max sampler), so on train problems they are
that run's own reference samples. Prints the mean pass rate (mean over problems of the per-problem mean fraction
of tests passed, with its standard error over problems), the full-pass rate, and per-problem rewards.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows.config import compose_config  # noqa: E402
from qrpo.config.binding import build  # noqa: E402
from qrpo.config.sections import typed_sections  # noqa: E402
from qrpo.data.prompts import load_prompts  # noqa: E402
from qrpo.precision import resolve  # noqa: E402
from qrpo.rewards.code import CodeTestsReward  # noqa: E402
from qrpo.sampling.hf import sample_completions  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=4, help="samples per problem")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides after experiment=code")
    args = parser.parse_args()
    config = compose_config(["experiment=code", *args.overrides])
    s = typed_sections(config)
    dataset = dataclasses.replace(s.dataset, max_train_prompts=0, max_eval_prompts=0)
    prompts = load_prompts(dataset)
    start = time.perf_counter()
    model, tokenizer = build("model", s.model)  # what the pipeline's prepare_model step saves
    precision = resolve(config["precision"], "cpu")
    print(f"model loaded in {time.perf_counter() - start:.0f} s; precision {precision}", flush=True)
    start = time.perf_counter()
    samples = sample_completions(model, tokenizer, prompts, args.samples, max_new_tokens=s.sampler.max_new_tokens,
                                 temperature=s.sampler.temperature, top_p=s.sampler.top_p, batch_size=s.sampler.batch_size,
                                 shard_prompts=s.sampler.shard_prompts, seed=s.sampler.seed, precision=precision)
    tokens = sum(samples.column("num_tokens").to_pylist())
    print(f"sampled {samples.num_rows} completions, {tokens} tokens in {time.perf_counter() - start:.0f} s", flush=True)
    rows = {r["prompt_id"]: r for r in prompts.to_pylist()}
    drawn = samples.to_pylist()
    rewards = CodeTestsReward.from_config(s.reward).score_rows([rows[d["prompt_id"]] for d in drawn],
                                                              [d["completion"] for d in drawn])
    per: dict[str, list[float]] = {}
    for d, r in zip(drawn, rewards):
        per.setdefault(d["prompt_id"], []).append(float(r))
    print(f"{dataset.name}: {s.sampler.max_new_tokens} new tokens, temperature {s.sampler.temperature}, top_p "
          f"{s.sampler.top_p}, seed {s.sampler.seed}, {precision}, max_tests {s.reward.max_tests or 'all'}")
    for split in ("train", "eval", None):
        ids = [p for p in per if split is None or rows[p]["split"] == split]
        means = np.array([np.mean(per[p]) for p in ids])
        full = np.array([np.mean([v >= 1 - 1e-9 for v in per[p]]) for p in ids])
        se = means.std(ddof=1) / np.sqrt(len(ids)) if len(ids) > 1 else float("nan")
        print(f"{split or 'all'}: {len(ids)} problems x {args.samples} samples: pass rate {means.mean():.3f} (se {se:.3f}), "
              f"full pass {full.mean():.3f}, problems never passed {int((means == 0).sum())}, "
              f"always fully passed {int((full == 1).sum())}")
    for p, values in per.items():
        print(f"  {rows[p]['split']:5s} {p:28s} {' '.join(f'{v:.2f}' for v in values)}")


if __name__ == "__main__":
    main()
