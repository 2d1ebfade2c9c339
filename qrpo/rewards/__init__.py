"""Pointwise reward models r(x, y) -> float, one backend per module, chosen by `reward.kind`.

- `vader` (vader.py): VADER sentiment of the answer, the CPU demo.
- `sequence_classifier` / `tiny_classifier` (classifier.py): a Hugging Face reward model
  (ArmoRM-Llama3-8B, Skywork-Reward, ...) with its own chat template, or a tiny random one.
- `code_tests` (code.py): fraction of unit tests passed in the sandbox (qrpo/sandbox).
- `callable` (callable.py): any Python function f(prompt, completion, **row) -> float.
- `judge` (judge.py): an OpenAI-compatible LLM endpoint asked for a score.
The contract (`RewardModel`, `score_samples`) is in base.py.
"""

from __future__ import annotations

from qrpo.config import RewardConfig
from qrpo.errors import InputError
from qrpo.rewards.base import RewardModel, score_samples
from qrpo.rewards.classifier import SequenceClassifierReward
from qrpo.rewards.vader import VaderReward


def _classifier_options(cfg: RewardConfig) -> dict:
    return {"batch_size": cfg.batch_size, "score_index": cfg.score_index, "max_length": cfg.max_length,
            "truncation": cfg.truncation, "length_grouped": cfg.length_grouped}


def _sequence_classifier(cfg: RewardConfig) -> RewardModel:
    if not cfg.path:
        raise InputError("reward.kind=sequence_classifier needs reward.path (a folder or hub name)")
    return SequenceClassifierReward.from_pretrained(cfg.path, cfg.trust_remote_code, cfg.dtype, **_classifier_options(cfg))


def _tiny_classifier(cfg: RewardConfig) -> RewardModel:
    return SequenceClassifierReward.from_config(cfg.architecture, cfg.seed, **_classifier_options(cfg))


def _code_tests(cfg: RewardConfig) -> RewardModel:
    from qrpo.rewards.code import CodeTestsReward

    return CodeTestsReward.from_config(cfg)


def _callable(cfg: RewardConfig) -> RewardModel:
    from qrpo.rewards.callable import CallableReward

    if not cfg.function:
        raise InputError("reward.kind=callable needs reward.function, e.g. 'qrpo.rewards.callable:final_number_matches'")
    return CallableReward.from_path(cfg.function)


def _judge(cfg: RewardConfig) -> RewardModel:
    from qrpo.rewards.judge import JudgeReward

    return JudgeReward.from_config(cfg)


REWARD_KINDS = {
    "vader": lambda cfg: VaderReward(),
    "sequence_classifier": _sequence_classifier,
    "tiny_classifier": _tiny_classifier,
    "code_tests": _code_tests,
    "callable": _callable,
    "judge": _judge,
}


def build_reward(cfg: RewardConfig) -> RewardModel:
    if cfg.kind not in REWARD_KINDS:
        raise InputError(f"reward.kind={cfg.kind!r} is not one of {', '.join(REWARD_KINDS)}")
    return REWARD_KINDS[cfg.kind](cfg)


__all__ = ["REWARD_KINDS", "RewardModel", "SequenceClassifierReward", "VaderReward", "build_reward", "score_samples"]
