"""The training table: one preference pair per prompt, with the quantile of each side.

Per training prompt the sampler drew K + M reference completions. Samples 0..K-1 are the training
candidates; the best and the worst of them by reward become (chosen, rejected), the paper's
"off-policy best/worst of K" regime. Samples K..K+M-1 are the reference set for the quantiles.
The two sets are disjoint, so no completion counts itself in its own quantile.
Prompts whose best and worst candidates tie carry no preference and are dropped (and counted).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from qrpo.quantiles import quantile_table


def build_training_pairs(samples: pa.Table, num_train_samples: int, ties: str = "le") -> tuple[pa.Table, dict]:
    """samples: prompt_id, sample_index, prompt_ids, completion_ids, num_tokens, reward.

    Returns (pairs, stats). pairs columns: prompt_id, prompt_ids, chosen_ids, rejected_ids,
    chosen_reward, rejected_reward, ref_rewards (list of M), chosen_quantile, rejected_quantile, num_ref.
    """
    samples = samples.sort_by([("prompt_id", "ascending"), ("sample_index", "ascending")])
    is_candidate = pc.less(samples.column("sample_index"), num_train_samples)
    candidates = samples.filter(is_candidate).to_pydict()
    references = samples.filter(pc.invert(is_candidate)).group_by("prompt_id").aggregate([("reward", "list")])
    ref_by_prompt = dict(zip(references.column("prompt_id").to_pylist(), references.column("reward_list").to_pylist()))

    by_prompt: dict[str, list[int]] = {}
    for row, prompt_id in enumerate(candidates["prompt_id"]):
        by_prompt.setdefault(prompt_id, []).append(row)
    pairs = {k: [] for k in ("prompt_id", "prompt_ids", "chosen_ids", "rejected_ids", "chosen_reward", "rejected_reward", "ref_rewards")}
    dropped_ties = 0
    for prompt_id, rows in by_prompt.items():
        rewards = [candidates["reward"][r] for r in rows]
        best, worst = rows[int(np.argmax(rewards))], rows[int(np.argmin(rewards))]
        if candidates["reward"][best] == candidates["reward"][worst]:
            dropped_ties += 1
            continue
        pairs["prompt_id"].append(prompt_id)
        pairs["prompt_ids"].append(candidates["prompt_ids"][best])
        pairs["chosen_ids"].append(candidates["completion_ids"][best])
        pairs["rejected_ids"].append(candidates["completion_ids"][worst])
        pairs["chosen_reward"].append(candidates["reward"][best])
        pairs["rejected_reward"].append(candidates["reward"][worst])
        pairs["ref_rewards"].append(ref_by_prompt[prompt_id])
    table = pa.table(pairs, schema=_PAIR_SCHEMA)
    ref = table.column("ref_rewards")
    chosen_q = quantile_table(table.column("chosen_reward").to_numpy(), ref, ties=ties)
    rejected_q = quantile_table(table.column("rejected_reward").to_numpy(), ref, ties=ties)
    table = (
        table.append_column("chosen_quantile", pa.array(chosen_q))
        .append_column("rejected_quantile", pa.array(rejected_q))
        .append_column("num_ref", pc.list_value_length(ref))
    )
    stats = {
        "pairs": table.num_rows,
        "dropped_tied_pairs": dropped_ties,
        "chosen_quantile_mean": float(chosen_q.mean()) if len(chosen_q) else float("nan"),
        "rejected_quantile_mean": float(rejected_q.mean()) if len(rejected_q) else float("nan"),
        "reward_margin_mean": float(np.mean(np.subtract(pairs["chosen_reward"], pairs["rejected_reward"]))) if pairs["chosen_reward"] else float("nan"),
    }
    return table, stats


_PAIR_SCHEMA = pa.schema(
    [
        ("prompt_id", pa.string()),
        ("prompt_ids", pa.list_(pa.int64())),
        ("chosen_ids", pa.list_(pa.int64())),
        ("rejected_ids", pa.list_(pa.int64())),
        ("chosen_reward", pa.float64()),
        ("rejected_reward", pa.float64()),
        ("ref_rewards", pa.list_(pa.float64())),
    ]
)
