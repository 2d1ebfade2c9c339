"""The reward contract: r(x, y) -> float for each (prompt, completion), plus the prompt row.

Every backend implements `score(prompts, completions)`. Backends that need more than the prompt
text (the code reward reads `entry_point` and `input_output`, a callable may read any column)
override `score_rows(rows, completions)`, where rows[i] is completion i's whole prompt-table row
(prompt_id, prompt, messages, split and every `dataset.keep_columns` column). `score_samples` is
the one entry point the pipeline uses, so every backend sees the rows.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import pyarrow as pa


class RewardModel(ABC):
    # True: the rewards are unit-test pass rates in [0, 1]; evaluation then adds the LeetCode metrics
    # (eval/leetcode_pass_rate, ...). Read from the class the reward's `_target_` names, before any build.
    yields_pass_rates: bool = False
    kind: str | None = None  # the family of reward.* keys it reads (conf: reward.kind), declared by each built-in

    @abstractmethod
    def score(self, prompts: list[str], completions: list[str]) -> np.ndarray:
        """float64 [N] rewards of completions[i] as an answer to prompts[i]."""

    def score_rows(self, rows: list[dict], completions: list[str]) -> np.ndarray:
        """float64 [N] rewards of completions[i] for the prompt-table row rows[i]; by default, its prompt text."""
        return self.score([row["prompt"] for row in rows], completions)


def score_samples(reward: RewardModel, samples: pa.Table, prompts: pa.Table) -> np.ndarray:
    """Rewards [N] of a samples table (prompt_id, completion); each sample is scored with its own prompt row."""
    rows = {row["prompt_id"]: row for row in prompts.to_pylist()}
    sample_rows = [rows[p] for p in samples.column("prompt_id").to_pylist()]
    return np.asarray(reward.score_rows(sample_rows, samples.column("completion").to_pylist()), dtype=np.float64)
