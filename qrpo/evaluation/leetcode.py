"""LeetCode pass rates of a policy's solutions to the eval problems of the code task.

Each solution was run against its problem's unit tests in the sandbox; its reward (the `code_tests`
reward) is the fraction of those tests it passed. From the scored samples:

    pass rate       = mean fraction of tests passed           (the paper's "average pass rate")
    full-pass rate  = share of solutions that pass every test

each as the mean over problems of the per-problem average (over seeds and samples), with its standard
error over problems (as in `qrpo.evaluation.metrics`), overall and per difficulty (Easy / Medium / Hard,
from the prompt table's `difficulty` column).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from qrpo.errors import InputError
from qrpo.evaluation.metrics import cluster_mean_se

FULL_PASS = 1.0 - 1e-9  # a reward this close to 1 passed every test


def pass_rates(scored: pa.Table, prompts: pa.Table) -> dict[str, float]:
    """{"leetcode_pass_rate", "leetcode_full_pass_rate", their _se, and the same per difficulty
    ("leetcode_pass_rate_easy", ...)} from scored samples (prompt_id, reward in [0, 1]) and the prompt
    table (prompt_id, difficulty)."""
    if "difficulty" not in prompts.column_names:
        raise InputError("LeetCode pass rates need a `difficulty` column in the prompt table; add it to dataset.keep_columns")
    difficulty = dict(zip(prompts.column("prompt_id").to_pylist(), prompts.column("difficulty").to_pylist()))
    ids = scored.column("prompt_id").to_pylist()
    missing = sorted({p for p in ids if p not in difficulty})
    if missing:
        raise InputError(f"LeetCode pass rates: {len(missing)} scored problem(s) are not in the prompt table (e.g. {missing[0]!r})")
    reward = np.asarray(scored.column("reward").to_numpy(zero_copy_only=False), dtype=np.float64)  # [N]
    if np.any((reward < -1e-9) | (reward > 1 + 1e-9)):
        raise InputError("LeetCode pass rates need rewards in [0, 1] (the fraction of tests passed: reward=code_tests)")
    levels = np.array([str(difficulty[p]).strip().lower() for p in ids])
    out: dict[str, float] = {}
    for suffix, mask in [("", np.ones(len(ids), bool))] + [(f"_{d}", levels == d) for d in sorted(set(levels))]:
        if not mask.any():
            continue
        kept = [p for p, m in zip(ids, mask) if m]
        index = {p: i for i, p in enumerate(sorted(set(kept)))}
        groups = np.array([index[p] for p in kept])
        for name, values in (("pass_rate", reward[mask]), ("full_pass_rate", (reward[mask] >= FULL_PASS).astype(float))):
            mean, se, _ = cluster_mean_se(values, groups, len(index))
            out[f"leetcode_{name}{suffix}"], out[f"leetcode_{name}{suffix}_se"] = mean, se
        out[f"leetcode_problems{suffix}"] = len(index)
    return out


def pass_rates_by_half(scored: pa.Table, prompts: pa.Table, split_seed: int) -> dict[str, float]:
    """`pass_rates` on the reporting half (eval/...) and the selection half (eval_selection/...) of the problems."""
    from qrpo.evaluation.metrics import split_halves

    halves = split_halves(scored.column("prompt_id").to_pylist(), split_seed)
    out: dict[str, float] = {}
    for half, prefix in (("reporting", "eval/"), ("selection", "eval_selection/")):
        part = scored.filter(pa.array([halves[p] == half for p in scored.column("prompt_id").to_pylist()]))
        if part.num_rows:
            out.update({prefix + k: v for k, v in pass_rates(part, prompts).items()})
    return out
