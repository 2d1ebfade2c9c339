"""The training table, built from scored reference samples by one of four data regimes.

Per training prompt the sampler drew (at least) K + M completions of pi_ref, scored by the reward.
Samples 0..K-1 are the training candidates, samples K..K+M-1 the reference set for the quantiles;
any further samples (a sweep sampled for its largest M once) are ignored, so a run with M
references sees exactly the first K + M samples whatever else the artifact holds.

| regime        | training examples                                                  | quantile of an example among |
|---------------|--------------------------------------------------------------------|------------------------------|
| best_worst    | one pair per prompt: the best and the worst of the K candidates    | the M references             |
| random_pairs  | K/2 disjoint random pairs of candidates per prompt                 | the M references             |
| offline       | the dataset's own chosen/rejected completions (scored by the reward)| all K + M samples of pi_ref  |
| pointwise     | every one of the K candidates on its own (QRPO only: no pairs)     | the M references             |
| pointwise, leave_one_out | all K + M samples on their own                          | the other K + M - 1 samples  |

Each regime is a class here (`BestWorst`, `RandomPairs`, `Offline`, `Pointwise`) that conf/regime/<name>.yaml
names as `_target_`; what the pipeline needs to know of one it declares (`pointwise`: single completions;
`uses_dataset_pairs`: the dataset's own scored pairs). The first three are the paper's regimes (Matrenok et al. 2025, arXiv 2507.08068, §5: offline,
off-policy best/worst of K, off-policy random pairs). The pointwise regime is what QRPO's regression
allows and pairwise methods cannot use: any number of completions per prompt, no pairs. In every
regime the set an example's quantile is computed from never contains the example itself, so no
completion counts itself. Pairs whose rewards tie carry no preference: they are dropped and counted.

Pair tables have the columns prompt_id, prompt_ids, chosen_ids, rejected_ids, chosen_reward,
rejected_reward, ref_rewards, chosen_quantile, rejected_quantile, num_ref; pointwise tables
prompt_id, prompt_ids, completion_ids, reward, ref_rewards, quantile, num_ref.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from qrpo.config.binding import build, declares
from qrpo.config.sections import RegimeConfig
from qrpo.errors import InputError
from qrpo.objective.quantiles import quantile_table
from qrpo.store.artifacts import write_table


def check_algorithm_fits(regime: RegimeConfig, algorithm) -> None:
    """A method that needs pairs cannot train on single completions: say so before any work."""
    if declares("regime", regime, "pointwise") and algorithm.needs_pairs:
        raise InputError(
            f"algorithm {algorithm.name} needs preference pairs, but regime=pointwise gives single completions; "
            f"use regime=best_worst or regime=random_pairs, or algorithm=qrpo (the method that learns pointwise)"
        )


def _group(samples: pa.Table, limit: int) -> dict[str, dict[str, list]]:
    """{prompt_id: {column: values ordered by sample_index}} for samples with index < limit."""
    samples = samples.filter(pc.less(samples.column("sample_index"), limit))
    samples = samples.sort_by([("prompt_id", "ascending"), ("sample_index", "ascending")])
    columns = {name: samples.column(name).to_pylist() for name in ("prompt_id", "prompt_ids", "completion_ids", "reward")}
    groups: dict[str, dict[str, list]] = {}
    for i, prompt_id in enumerate(columns["prompt_id"]):
        group = groups.setdefault(prompt_id, {"prompt_ids": columns["prompt_ids"][i], "completion_ids": [], "reward": []})
        group["completion_ids"].append(columns["completion_ids"][i])
        group["reward"].append(columns["reward"][i])
    return groups


def _check_counts(groups: dict, needed: int, num_candidates: int, num_ref: int) -> None:
    short = {p: len(g["reward"]) for p, g in groups.items() if len(g["reward"]) < needed}
    if short:
        prompt, have = next(iter(short.items()))
        raise InputError(
            f"{len(short)} prompt(s) have fewer than K + M = {num_candidates} + {num_ref} = {needed} scored samples "
            f"(prompt {prompt!r} has {have}); the samples artifact does not match sampler.num_train_samples/num_ref_samples"
        )


def _pair_rows(groups, num_candidates: int, pick, out: dict) -> int:
    """Append the pairs that `pick(rewards) -> [(chosen, rejected), ...]` selects; return the tied pairs dropped."""
    dropped = 0
    for prompt_id, g in groups.items():
        rewards = g["reward"][:num_candidates]
        for chosen, rejected in pick(prompt_id, rewards):
            if rewards[chosen] == rewards[rejected]:
                dropped += 1
                continue
            if rewards[chosen] < rewards[rejected]:
                chosen, rejected = rejected, chosen
            out["prompt_id"].append(prompt_id)
            out["prompt_ids"].append(g["prompt_ids"])
            out["chosen_ids"].append(g["completion_ids"][chosen])
            out["rejected_ids"].append(g["completion_ids"][rejected])
            out["chosen_reward"].append(rewards[chosen])
            out["rejected_reward"].append(rewards[rejected])
            out["ref_rewards"].append(g["reward"][num_candidates:])
    return dropped


def _with_pair_quantiles(table: pa.Table, ties: str) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    ref = table.column("ref_rewards")
    chosen_q = quantile_table(table.column("chosen_reward").to_numpy(), ref, ties=ties)
    rejected_q = quantile_table(table.column("rejected_reward").to_numpy(), ref, ties=ties)
    table = (
        table.append_column("chosen_quantile", pa.array(chosen_q))
        .append_column("rejected_quantile", pa.array(rejected_q))
        .append_column("num_ref", pc.list_value_length(ref).cast(pa.int64()))
    )
    return table, chosen_q, rejected_q


def _pointwise(groups, num_candidates: int, leave_one_out: bool, ties: str) -> tuple[pa.Table, np.ndarray]:
    out = {k: [] for k in ("prompt_id", "prompt_ids", "completion_ids", "reward", "ref_rewards")}
    for prompt_id, g in groups.items():
        rewards = g["reward"]
        examples = range(len(rewards)) if leave_one_out else range(num_candidates)
        for j in examples:
            others = rewards[:j] + rewards[j + 1 :] if leave_one_out else rewards[num_candidates:]
            out["prompt_id"].append(prompt_id)
            out["prompt_ids"].append(g["prompt_ids"])
            out["completion_ids"].append(g["completion_ids"][j])
            out["reward"].append(rewards[j])
            out["ref_rewards"].append(others)
    table = pa.table(out, schema=_POINTWISE_SCHEMA)
    quantiles = quantile_table(table.column("reward").to_numpy(), table.column("ref_rewards"), ties=ties)
    table = table.append_column("quantile", pa.array(quantiles)).append_column(
        "num_ref", pc.list_value_length(table.column("ref_rewards")).cast(pa.int64())
    )
    return table, quantiles


def quantile_histogram(quantiles: np.ndarray, bins: int = 10) -> list[int]:
    """Counts of quantiles in `bins` equal bins of [0, 1] (1.0 in the last)."""
    return np.histogram(quantiles, bins=bins, range=(0.0, 1.0))[0].tolist()


class Regime:
    """How scored samples become training examples. A subclass declares `name` (conf: regime.name) and
    what the pipeline must know of it, and builds the table from the samples grouped per prompt."""

    name: str | None = None
    pointwise = False  # examples are single completions (QRPO only), not pairs
    uses_dataset_pairs = False  # trains on the dataset's own chosen/rejected completions, scored by the reward

    def __init__(self, cfg: RegimeConfig):
        self.cfg = cfg

    @classmethod
    def from_config(cls, cfg: RegimeConfig) -> "Regime":
        return cls(cfg)

    def table(self, groups: dict, num_candidates: int, ties: str, offline: pa.Table | None) -> tuple[pa.Table, dict]:
        """(training table, stats) from {prompt_id: {prompt_ids, completion_ids, reward}} of K + M samples each."""
        raise NotImplementedError


class _PairRegime(Regime):
    def pairs(self, prompt_id: str, rewards: list) -> list[tuple[int, int]]:
        """The (i, j) candidate pairs of one prompt, in either order (the higher reward is made chosen)."""
        raise NotImplementedError

    def rows(self, groups: dict, num_candidates: int, offline: pa.Table | None, out: dict) -> int:
        """Append this regime's pairs to the columns `out`; return the tied pairs dropped."""
        return _pair_rows(groups, num_candidates, self.pairs, out)

    def table(self, groups, num_candidates, ties, offline):
        rows = {name: [] for name in _PAIR_SCHEMA.names}
        dropped = self.rows(groups, num_candidates, offline, rows)
        table, chosen_q, rejected_q = _with_pair_quantiles(pa.table(rows, schema=_PAIR_SCHEMA), ties)
        stats = _stats(table, groups, np.concatenate([chosen_q, rejected_q]), dropped)
        if table.num_rows:
            stats["chosen_quantile_mean"] = float(chosen_q.mean())
            stats["rejected_quantile_mean"] = float(rejected_q.mean())
            stats["reward_margin_mean"] = float(np.mean(np.subtract(rows["chosen_reward"], rows["rejected_reward"])))
        return table, stats


class BestWorst(_PairRegime):
    """One pair per prompt: the best and the worst of the K candidates."""

    name = "best_worst"

    def pairs(self, prompt_id, rewards):
        return [(int(np.argmax(rewards)), int(np.argmin(rewards)))]


class RandomPairs(_PairRegime):
    """K/2 disjoint random pairs of candidates per prompt, drawn from (regime.seed, prompt id)."""

    name = "random_pairs"

    def pairs(self, prompt_id, rewards):
        digest = hashlib.sha256(f"{self.cfg.seed}:{prompt_id}".encode()).digest()  # per prompt, whatever the row order
        order = np.random.default_rng(int.from_bytes(digest[:8], "little")).permutation(len(rewards))
        return [(int(order[i]), int(order[i + 1])) for i in range(0, len(order) - 1, 2)]


class Offline(_PairRegime):
    """The dataset's own chosen/rejected completions, scored by the reward; every pi_ref sample is a reference."""

    name = "offline"
    uses_dataset_pairs = True

    def rows(self, groups, num_candidates, offline, out):
        if offline is None:
            raise InputError("regime=offline needs the dataset's scored chosen/rejected completions (see offline_completions)")
        return _offline_rows(offline, groups, out)


class Pointwise(Regime):
    """Every candidate on its own, its quantile among the M references (leave_one_out: all K + M samples,
    each among the other K + M - 1)."""

    name = "pointwise"
    pointwise = True

    def table(self, groups, num_candidates, ties, offline):
        table, quantiles = _pointwise(groups, num_candidates, self.cfg.leave_one_out, ties)
        return table, _stats(table, groups, quantiles, 0)


def _stats(table: pa.Table, groups: dict, quantiles: np.ndarray, dropped: int) -> dict:
    return {
        "examples": table.num_rows,
        "prompts": len(groups),
        "dropped_tied_pairs": dropped,
        "quantile_mean": float(quantiles.mean()) if len(quantiles) else float("nan"),
        "num_ref_mean": float(np.mean(table.column("num_ref").to_numpy())) if table.num_rows else float("nan"),
        **{f"quantile_hist_{i:02d}": count for i, count in enumerate(quantile_histogram(quantiles))},
    }


def build_training_data(
    samples: pa.Table,
    regime: RegimeConfig,
    num_candidates: int,
    num_ref: int,
    ties: str = "le",
    offline: pa.Table | None = None,
) -> tuple[pa.Table, dict]:
    """The training table of `regime` (the class its `_target_` names) from scored samples (prompt_id,
    sample_index, prompt_ids, completion_ids, reward) with K = num_candidates and M = num_ref; `offline`
    holds the dataset's own scored completions (prompt_id, prompt_ids, chosen_ids, rejected_ids,
    chosen_reward, rejected_reward) for regime=offline. Returns (table, stats)."""
    regime.validate()
    needed = num_candidates + num_ref
    groups = _group(samples, needed)
    _check_counts(groups, needed, num_candidates, num_ref)
    return build("regime", regime).table(groups, num_candidates, ties, offline)


def training_data(regime: RegimeConfig, num_candidates: int, num_ref: int, ties: str, scored: pa.Table,
                  offline_scored: pa.Table | None, out: Path) -> dict:
    """The `training_data` step: the table of `build_training_data` into `out/data.parquet` and its quantile
    histogram into `out/training_quantiles.png`; returns the stats."""
    from qrpo.evaluation.report import plot_training_quantiles

    offline = offline_pairs(offline_scored) if offline_scored is not None else None
    table, stats = build_training_data(scored, regime, num_candidates, num_ref, ties, offline)
    write_table(table, out / "data.parquet")
    plot_training_quantiles(stats, out / "training_quantiles.png", regime.name)
    return stats


def _offline_rows(offline: pa.Table, groups: dict, out: dict) -> int:
    """The dataset's own pairs; every pi_ref sample of the prompt is a reference (none of them is trained on)."""
    dropped = 0
    for row in offline.to_pylist():
        g = groups.get(row["prompt_id"])
        if g is None:
            continue
        if row["chosen_reward"] == row["rejected_reward"]:
            dropped += 1
            continue
        chosen, rejected = ("chosen", "rejected") if row["chosen_reward"] > row["rejected_reward"] else ("rejected", "chosen")
        out["prompt_id"].append(row["prompt_id"])
        out["prompt_ids"].append(row["prompt_ids"])
        out["chosen_ids"].append(row[f"{chosen}_ids"])
        out["rejected_ids"].append(row[f"{rejected}_ids"])
        out["chosen_reward"].append(row[f"{chosen}_reward"])
        out["rejected_reward"].append(row[f"{rejected}_reward"])
        out["ref_rewards"].append(g["reward"])
    return dropped


def _completion_text(value) -> str:
    """A completion given as text, or as chat messages (UltraFeedback-binarized: the conversation, whose
    last assistant turn is the completion), or as a JSON string of such messages."""
    if isinstance(value, str):
        stripped = value.lstrip()
        if stripped.startswith("[") and stripped.rstrip().endswith("]"):
            try:
                value = json.loads(stripped)
            except json.JSONDecodeError:
                return value
        else:
            return value
    if isinstance(value, list):
        turns = [m for m in value if isinstance(m, dict) and m.get("role") == "assistant"]
        if turns:
            return str(turns[-1].get("content", ""))
    raise InputError(f"cannot read a completion from {str(value)[:80]!r}: give text or a list of chat messages with an assistant turn")


def offline_completions(prompts: pa.Table, prompt_ids: dict[str, list[int]], tokenize, chosen_column: str,
                        rejected_column: str, eos_id: int | None) -> pa.Table:
    """The dataset's own chosen/rejected completions of the train prompts as a samples table (sample_index
    0 = chosen, 1 = rejected) that the `score` step can score like any other samples. `tokenize(text)`
    gives the policy tokenizer's ids (no special tokens); EOS is appended, as a sampled completion that
    finished would end with it."""
    for column in (chosen_column, rejected_column):
        if column not in prompts.column_names:
            raise InputError(
                f"regime=offline needs the dataset's column {column!r} in the prompt table (columns: "
                f"{', '.join(prompts.column_names)}); add it to dataset.keep_columns or set regime.chosen_column/rejected_column"
            )
    rows = []
    for row in prompts.to_pylist():
        for index, column in enumerate((chosen_column, rejected_column)):
            text = _completion_text(row[column])
            ids = list(tokenize(text)) + ([eos_id] if eos_id is not None else [])
            rows.append({"prompt_id": row["prompt_id"], "sample_index": index, "prompt_ids": prompt_ids[row["prompt_id"]],
                         "completion_ids": ids, "completion": text, "num_tokens": len(ids), "finish_reason": "stop",
                         "finished": True})
    return pa.Table.from_pylist(rows)


def offline_samples(regime: RegimeConfig, prompts: pa.Table, samples: pa.Table, model_dir: Path, out: Path) -> dict:
    """The `offline_samples` step (regime=offline): the dataset's own chosen/rejected completions of the train
    prompts, tokenised by the policy's tokenizer, as a samples table into `out/data.parquet` (the `score` step
    scores it like any other samples); the prompts' token ids come from the sampled `samples`."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompt_ids = dict(zip(samples.column("prompt_id").to_pylist(), samples.column("prompt_ids").to_pylist()))
    table = offline_completions(prompts, prompt_ids, lambda text: tokenizer(text, add_special_tokens=False)["input_ids"],
                                regime.chosen_column, regime.rejected_column, tokenizer.eos_token_id)
    write_table(table, out / "data.parquet")
    return {"completions": table.num_rows, "length_mean": float(np.mean(table.column("num_tokens").to_numpy()))}


def offline_pairs(scored: pa.Table) -> pa.Table:
    """Scored offline completions (sample_index 0 = chosen, 1 = rejected) as one row per prompt."""
    by_prompt: dict[str, dict] = {}
    for row in scored.to_pylist():
        side = "chosen" if row["sample_index"] == 0 else "rejected"
        entry = by_prompt.setdefault(row["prompt_id"], {"prompt_id": row["prompt_id"], "prompt_ids": row["prompt_ids"]})
        entry[f"{side}_ids"], entry[f"{side}_reward"] = row["completion_ids"], row["reward"]
    return pa.Table.from_pylist(list(by_prompt.values()))


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
_POINTWISE_SCHEMA = pa.schema(
    [
        ("prompt_id", pa.string()),
        ("prompt_ids", pa.list_(pa.int64())),
        ("completion_ids", pa.list_(pa.int64())),
        ("reward", pa.float64()),
        ("ref_rewards", pa.list_(pa.float64())),
    ]
)
