"""A Python function as the reward (`kind: callable`): verifiable rewards without writing a backend.

`reward.function` names a function `f(prompt, completion, **row) -> float` as "package.module:function"
or "package.module.function"; `row` holds the sample's other prompt-table columns (prompt_id,
messages, split and every `dataset.keep_columns` column, e.g. a reference `answer`). The module must
be importable (installed, or on PYTHONPATH). Every return value must be a finite number.

`final_number_matches` is a ready example: 1.0 when the last number in the completion equals the
row's `answer` column (a GSM8K-style exact-answer check), else 0.0.
"""

from __future__ import annotations

import math
import re

import numpy as np

from qrpo.config.binding import locate
from qrpo.errors import InputError
from qrpo.rewards.base import RewardModel

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


class CallableReward(RewardModel):
    kind = "callable"

    def __init__(self, function, name: str = ""):
        self.function, self.name = function, name or getattr(function, "__qualname__", repr(function))

    @classmethod
    def from_path(cls, path: str) -> "CallableReward":
        return cls(locate("reward.function", path), path)  # the one resolver every _target_ goes through

    @classmethod
    def from_config(cls, cfg) -> "CallableReward":
        if not cfg.function:
            raise InputError("reward.kind=callable needs reward.function, e.g. 'qrpo.rewards.callable:final_number_matches'")
        return cls.from_path(cfg.function)

    def score(self, prompts, completions):
        return self.score_rows([{"prompt": p} for p in prompts], completions)

    def score_rows(self, rows, completions):
        scores = np.empty(len(completions), dtype=np.float64)
        for i, (row, completion) in enumerate(zip(rows, completions)):
            extra = {k: v for k, v in row.items() if k not in ("prompt", "completion")}
            value = self.function(row["prompt"], completion, **extra)
            try:
                scores[i] = float(value)
            except (TypeError, ValueError):
                raise InputError(f"reward function {self.name} returned {value!r} (not a number) for prompt {row.get('prompt_id')!r}") from None
            if not math.isfinite(scores[i]):
                raise InputError(f"reward function {self.name} returned {value!r} for prompt {row.get('prompt_id')!r}; rewards must be finite")
        return scores


def final_number_matches(prompt: str, completion: str, answer=None, **row) -> float:
    """1.0 if the last number in the completion equals `answer` (commas ignored), else 0.0."""
    if answer is None:
        raise InputError("final_number_matches needs an `answer` column: add it to dataset.keep_columns")
    numbers = _NUMBER.findall(completion)
    if not numbers:
        return 0.0
    try:
        return float(float(numbers[-1].replace(",", "")) == float(str(answer).replace(",", "")))
    except ValueError:
        return 0.0
