"""Sandbox throughput: programs (each with all its test cases) per second through the bounded pool.

    .venv/bin/python benchmarks/bench_sandbox.py            # --repeats 3 --workers 0 (one per core)

Runs the reference solution of every shipped code problem (data/code/problems.jsonl; ~5.5 test
cases each, every case its own bubblewrap process) and reports the median over repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qrpo.sandbox import Sandbox, SandboxLimits, parse_case  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0, help="0: one per core")
    args = parser.parse_args()
    rows = [json.loads(line) for line in Path(__file__).resolve().parents[1].joinpath("data/code/problems.jsonl").read_text().splitlines()]
    jobs = [(r["completion"], r["entry_point"], [parse_case(c, r["task_id"]) for c in r["input_output"]]) for r in rows]
    cases = sum(len(j[2]) for j in jobs)
    sandbox = Sandbox(SandboxLimits(wall_seconds=20, cpu_seconds=20), max_workers=args.workers or None)
    sandbox.run_many(jobs[:4])  # warm-up
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        results = sandbox.run_many(jobs)
        times.append(time.perf_counter() - start)
        assert all(r.fraction == 1.0 for r in results)
    t = statistics.median(times)
    print(f"{len(jobs)} programs, {cases} test cases, {sandbox.max_workers} workers on {os.cpu_count()} cores: "
          f"median {t:.2f} s over {args.repeats} -> {len(jobs) / t:.1f} programs/s, {cases / t:.1f} cases/s "
          f"(all runs: {', '.join(f'{x:.2f}' for x in times)} s)")


if __name__ == "__main__":
    main()
