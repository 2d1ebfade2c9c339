"""Benchmark: `qrpo.objective.quantiles.quantile_table` on 1,000,000 prompts x 64 reference rewards.

    python benchmarks/bench_quantile_table.py                 # defaults: N = 1e6, M = 64, 5 repeats
    python benchmarks/bench_quantile_table.py --rows 100000   # quicker

Times (median of --repeats runs, wall clock, after one untimed warm-up):
  * NumPy float32 [N, M], tie policies "le" (the default) and "mid";
  * an Arrow list<float32> column holding the same rows (built zero-copy from offsets + values), "le";
  * baseline 1, one unchunked NumPy broadcast: (ref <= r[:, None]).sum(1) / M over the whole table;
  * baseline 2, naive: a per-row Python loop, np.sort of the row's references then np.searchsorted
    (side="right" counts r' <= r), timed on the first --naive-rows rows and extrapolated linearly to N.
The baseline's output is checked against quantile_table's on those rows before anything is timed.
Not a test: nothing asserts a time. Target: <= 3 s for the NumPy table on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import pyarrow as pa

from qrpo.objective.quantiles import quantile_table


def naive_quantiles(rewards: np.ndarray, ref_rewards: np.ndarray) -> np.ndarray:
    """Per-row loop: sort the row's references, count those <= r with a binary search ("le")."""
    out = np.empty(len(rewards), dtype=np.float64)
    for i in range(len(rewards)):
        row = np.sort(ref_rewards[i])
        out[i] = np.searchsorted(row, rewards[i], side="right") / len(row)
    return out


def median_seconds(fn, repeats: int) -> tuple[float, list[float]]:
    fn()  # warm-up (page faults, allocator)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--refs", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--naive-rows", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    ref = rng.standard_normal((args.rows, args.refs), dtype=np.float32)  # [N, M]
    rewards = rng.standard_normal(args.rows, dtype=np.float32)  # [N]
    offsets = pa.array(np.arange(0, (args.rows + 1) * args.refs, args.refs, dtype=np.int64))
    column = pa.LargeListArray.from_arrays(offsets, pa.array(ref.reshape(-1)))  # list<float32>, same rows

    subset = slice(0, args.naive_rows)
    naive = naive_quantiles(rewards[subset], ref[subset])
    if not np.array_equal(naive, quantile_table(rewards[subset], ref[subset])):
        raise SystemExit("naive baseline and quantile_table disagree")
    if not np.array_equal(quantile_table(rewards[subset], column.slice(0, args.naive_rows)), naive):
        raise SystemExit("Arrow column and NumPy array disagree")

    print(f"quantile_table, N = {args.rows:,} rows x M = {args.refs} float32 references, "
          f"median of {args.repeats} runs (numpy {np.__version__}, pyarrow {pa.__version__}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores)")  # fmt: skip
    results = {
        "numpy [N, M], ties='le'": lambda: quantile_table(rewards, ref, ties="le"),
        "numpy [N, M], ties='mid'": lambda: quantile_table(rewards, ref, ties="mid"),
        "arrow list<float32>, ties='le'": lambda: quantile_table(rewards, column, ties="le"),
        "baseline: unchunked broadcast, 'le'": lambda: (ref <= rewards[:, None]).sum(1) / args.refs,
    }
    for name, fn in results.items():
        median, times = median_seconds(fn, args.repeats)
        print(f"  {name:<36} {median:8.3f} s   (runs: {', '.join(f'{t:.3f}' for t in times)})")

    naive_median, _ = median_seconds(lambda: naive_quantiles(rewards[subset], ref[subset]), max(1, args.repeats // 2))
    extrapolated = naive_median * args.rows / args.naive_rows
    print(f"  {'baseline: per-row sort+searchsorted':<36} {extrapolated:8.3f} s   "
          f"(measured {naive_median:.3f} s on {args.naive_rows:,} rows, extrapolated x{args.rows / args.naive_rows:g})")


if __name__ == "__main__":
    main()
