"""Pointwise reward models r(x, y) -> float, one family per module (`reward.kind` names which keys apply),
built by the function or class method `reward._target_` names (conf/reward/*.yaml; your own f(cfg) -> RewardModel
works the same way).

- `vader` (vader.py): VADER sentiment of the answer, the CPU demo.
- `sequence_classifier` / `tiny_classifier` (classifier.py): a Hugging Face reward model
  (ArmoRM-Llama3-8B, Skywork-Reward, ...) with its own chat template, or a tiny random one.
- `code_tests` (code.py): fraction of unit tests passed in the sandbox (qrpo/sandbox).
- `callable` (callable.py): any Python function f(prompt, completion, **row) -> float.
- `judge` (judge.py): an OpenAI-compatible LLM endpoint asked for a score.
The contract (`RewardModel`, `score_samples`) is in base.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from qrpo.config.binding import build
from qrpo.config.sections import ExecutorConfig, RewardConfig, composed
from qrpo.rewards.base import RewardModel, score_samples
from qrpo.rewards.classifier import SequenceClassifierReward
from qrpo.rewards.vader import VaderReward
from qrpo.store.artifacts import write_table
from qrpo.store.shards import ShardFolder


def build_reward(cfg: RewardConfig) -> RewardModel:
    """The reward `reward._target_` names, called with the section."""
    return build("reward", cfg)


@dataclass
class ScoreShard:
    reward: RewardConfig
    samples: pa.Table  # prompt_id, completion
    prompts: pa.Table

    def __call__(self, rows: range) -> pa.Table:
        from qrpo.executor import cache

        key = "reward:" + json.dumps(composed(self.reward), sort_keys=True, default=str)
        with cache.hold(key, lambda: build_reward(self.reward)) as reward:
            values = score_samples(reward, self.samples.slice(rows.start, len(rows)), self.prompts)
        return pa.table({"reward": pa.array(np.asarray(values, dtype=np.float64))})


def score_shards(executor: ExecutorConfig | None, reward: RewardConfig, samples: pa.Table, prompts: pa.Table,
                 folder: ShardFolder) -> np.ndarray:
    """The reward of every sample (float64 [N]), shard by shard (`executor.shard_rows` samples each)."""
    from qrpo.executor.base import run_table_shards
    from qrpo.executor.choice import executor_for

    shard_rows = executor.shard_rows if executor is not None else ExecutorConfig().shard_rows
    table = run_table_shards(samples.num_rows, shard_rows, ScoreShard(reward, samples.select(["prompt_id", "completion"]), prompts),
                             folder, executor_for(executor, "score"), name="score")
    return table.column("reward").to_numpy()


def score(cfg: RewardConfig, samples: pa.Table, prompts: pa.Table, out: Path, shards: ShardFolder,
          executor: ExecutorConfig | None = None) -> dict:
    """The `score` step: `samples` with a `reward` column, into `out/data.parquet`, computed shard by shard into
    `shards` (resumed from the shards there) wherever `executor` runs them; returns the reward's mean and sd."""
    rewards = score_shards(executor, cfg, samples, prompts, shards)
    write_table(samples.append_column("reward", pa.array(rewards)), out / "data.parquet")
    return {"reward_mean": float(rewards.mean()), "reward_std": float(rewards.std())}


__all__ = ["RewardModel", "SequenceClassifierReward", "VaderReward", "build_reward", "score", "score_samples"]
