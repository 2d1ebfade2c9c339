"""The `evaluate` step: the policy's scored samples (with log-probs) against the reference's on the same eval
prompts, as metrics of each half and as the per-sample table the report and comparisons read."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from qrpo.evaluation.leetcode import pass_rates_by_half
from qrpo.evaluation.metrics import evaluate_halves, sample_quantiles, split_halves
from qrpo.store.artifacts import write_table


def evaluate(policy: pa.Table, reference: pa.Table, split_seed: int, lc_fit_on: str, problems: pa.Table | None, out: Path) -> dict:
    """Metrics of the reporting half (`eval/...`) and the selection half (`eval_selection/...`); with the
    prompt table of a reward that yields pass rates (`problems`), LeetCode pass rates of the policy and of
    pi_ref on the same problems (`eval/leetcode_...`, `eval/ref_leetcode_...`). Writes the policy's samples
    with their half and reference quantile into `out/data.parquet`; returns the metrics."""
    metrics = evaluate_halves(policy, reference, split_seed, lc_fit_on)
    if problems is not None:
        metrics.update(pass_rates_by_half(policy, problems, split_seed))
        metrics.update({k.replace("/", "/ref_", 1): v for k, v in pass_rates_by_half(reference, problems, split_seed).items()})
    halves = split_halves(policy.column("prompt_id").to_pylist(), split_seed)
    table = (policy.drop_columns(["prompt_ids", "completion_ids"])
             .append_column("half", pa.array([halves[p] for p in policy.column("prompt_id").to_pylist()]))
             .append_column("ref_quantile", pa.array(sample_quantiles(policy, reference))))
    write_table(table, out / "data.parquet")
    return metrics
