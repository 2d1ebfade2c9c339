"""Pointwise reward models r(x, y) -> float, one backend per module, chosen by `reward.kind` and built by
the function or class method `reward._target_` names (conf/reward/*.yaml; your own f(cfg) -> RewardModel
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

from qrpo.config.binding import build
from qrpo.config.sections import REWARD_TARGETS, RewardConfig
from qrpo.errors import InputError
from qrpo.rewards.base import RewardModel, score_samples
from qrpo.rewards.classifier import SequenceClassifierReward
from qrpo.rewards.vader import VaderReward

REWARD_KINDS = REWARD_TARGETS  # kind -> the dotted path that builds it (what conf/reward/*.yaml name as _target_)


def build_reward(cfg: RewardConfig) -> RewardModel:
    """The reward `reward._target_` names (built-in: REWARD_TARGETS[reward.kind]), called with the section."""
    if cfg.kind not in REWARD_KINDS:
        raise InputError(f"reward.kind={cfg.kind!r} is not one of {', '.join(REWARD_KINDS)}")
    return build("reward", cfg)


__all__ = ["REWARD_KINDS", "RewardModel", "SequenceClassifierReward", "VaderReward", "build_reward", "score_samples"]
