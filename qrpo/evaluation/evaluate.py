"""The `evaluate` step: the policy's scored samples (with log-probs) against the reference's on the same eval
prompts, as metrics of each half and as the per-sample table the report and comparisons read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from qrpo.evaluation.leetcode import pass_rates_by_half
from qrpo.evaluation.metrics import evaluate_halves, length_controlled_rewards, sample_quantiles, split_halves
from qrpo.store.artifacts import write_table


def evaluate(policy: pa.Table, reference: pa.Table, split_seed: int, lc_fit_on: str, problems: pa.Table | None, out: Path) -> dict:
    """Metrics of the reporting half (`eval/...`) and the selection half (`eval_selection/...`); with the
    prompt table of a reward that yields pass rates (`problems`), LeetCode pass rates of the policy and of
    pi_ref on the same problems (`eval/leetcode_...`, `eval/ref_leetcode_...`). Writes the policy's samples
    with their half, reference quantile and length-controlled reward (fitted per half, as the metrics are)
    into `out/data.parquet`; returns the metrics."""
    metrics = evaluate_halves(policy, reference, split_seed, lc_fit_on)
    if problems is not None:
        metrics.update(pass_rates_by_half(policy, problems, split_seed))
        metrics.update({k.replace("/", "/ref_", 1): v for k, v in pass_rates_by_half(reference, problems, split_seed).items()})
    halves = split_halves(policy.column("prompt_id").to_pylist(), split_seed)
    table = (policy.drop_columns(["prompt_ids", "completion_ids"])
             .append_column("half", pa.array([halves[p] for p in policy.column("prompt_id").to_pylist()]))
             .append_column("ref_quantile", pa.array(sample_quantiles(policy, reference)))
             .append_column("reward_lc", pa.array(_lc_by_half(policy, reference, halves, lc_fit_on))))
    write_table(table, out / "data.parquet")
    return metrics


def _lc_by_half(policy: pa.Table, reference: pa.Table, halves: dict[str, str], lc_fit_on: str) -> np.ndarray:
    """Each policy sample's length-controlled reward [N], the slope fitted on its own half (as `eval/reward_lc_mean`)."""
    out = np.full(policy.num_rows, np.nan)
    ids, ref_ids = policy.column("prompt_id").to_pylist(), reference.column("prompt_id").to_pylist()
    col = lambda t, name, rows: np.asarray(t.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)[rows]  # noqa: E731
    for half in set(halves.values()):
        rows = np.array([halves[p] == half for p in ids])
        ref_rows = np.array([halves.get(p) == half for p in ref_ids])
        index = {p: i for i, p in enumerate(sorted({p for p, keep in zip(ids, rows) if keep}))}
        groups = np.array([index[p] for p, keep in zip(ids, rows) if keep], dtype=np.int64)
        ref_groups = np.array([index[p] for p, keep in zip(ref_ids, ref_rows) if keep], dtype=np.int64)
        lc, _, _ = length_controlled_rewards(col(policy, "reward", rows), col(policy, "num_tokens", rows), groups,
                                             col(reference, "reward", ref_rows), col(reference, "num_tokens", ref_rows), ref_groups,
                                             lc_fit_on)
        out[rows] = lc
    return out
