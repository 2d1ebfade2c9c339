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

from pathlib import Path

import pyarrow as pa

from qrpo.config.binding import build
from qrpo.config.sections import ExecutorConfig, RewardConfig
from qrpo.rewards.base import RewardModel, score_samples
from qrpo.rewards.classifier import SequenceClassifierReward
from qrpo.rewards.vader import VaderReward
from qrpo.store.artifacts import write_table
from qrpo.store.shards import ShardFolder


def build_reward(cfg: RewardConfig) -> RewardModel:
    """The reward `reward._target_` names, called with the section."""
    return build("reward", cfg)


def score(cfg: RewardConfig, samples: pa.Table, prompts: pa.Table, out: Path, shards: ShardFolder,
          executor: ExecutorConfig | None = None) -> dict:
    """The `score` step: `samples` with a `reward` column, into `out/data.parquet`, computed shard by shard into
    `shards` (resumed from the shards there) wherever `executor` runs them; returns the reward's mean and sd."""
    from qrpo.executor import steps as sharded

    rewards = sharded.score(executor, cfg, samples, prompts, shards)
    write_table(samples.append_column("reward", pa.array(rewards)), out / "data.parquet")
    return {"reward_mean": float(rewards.mean()), "reward_std": float(rewards.std())}


__all__ = ["RewardModel", "SequenceClassifierReward", "VaderReward", "build_reward", "score", "score_samples"]
