"""Pointwise reward models: r(x, y) -> float.

- `VaderReward` (the CPU demo): the compound sentiment score of the completion, in [-1, 1], from
  VADER (Hutto & Gilbert 2014, ICWSM), a lexicon- and rule-based model of warmth and positivity
  that runs in microseconds. Optimising it makes answers warmer and more upbeat; pushed too far it
  rewards gushing, which is exactly the over-optimisation that the KL term and the quantile
  transform are there to control, and it shows on a CPU in minutes.
- `SequenceClassifierReward`: any Hugging Face sequence classifier over the chat (prompt, answer),
  e.g. ArmoRM-Llama3-8B with trust_remote_code (the paper's reward) or Skywork-Reward; or a tiny
  one built from a config ("tiny_classifier") for smoke runs and tests.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import pyarrow as pa
import torch
from tqdm.auto import tqdm

from qrpo.config import RewardConfig
from qrpo.errors import InputError


class RewardModel(ABC):
    @abstractmethod
    def score(self, prompts: list[str], completions: list[str]) -> np.ndarray:
        """float64 [N] rewards of completions[i] as an answer to prompts[i]."""


class VaderReward(RewardModel):
    def __init__(self):
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self._analyzer = SentimentIntensityAnalyzer()

    def score(self, prompts, completions):
        return np.array([self._analyzer.polarity_scores(text)["compound"] for text in completions], dtype=np.float64)


class SequenceClassifierReward(RewardModel):
    def __init__(self, model, tokenizer, batch_size: int = 16, score_index: int = 0):
        self.model, self.tokenizer = model, tokenizer
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.eval()
        self.batch_size, self.score_index = batch_size, score_index

    @classmethod
    def from_pretrained(cls, path: str, trust_remote_code: bool = False, **kwargs) -> "SequenceClassifierReward":
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
            model = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as err:
            raise InputError(f"cannot load reward.path={path!r}: {str(err).splitlines()[0]}") from None
        return cls(model, tokenizer, **kwargs)

    @classmethod
    def from_config(cls, architecture: dict, seed: int = 0, **kwargs) -> "SequenceClassifierReward":
        """A tiny randomly initialised Llama classifier over bytes: a real, cheap, continuous reward for
        smoke runs and tests (it scores text consistently; it does not judge quality)."""
        from transformers import ByT5Tokenizer, LlamaConfig, LlamaForSequenceClassification

        tokenizer = ByT5Tokenizer()
        config = LlamaConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, num_labels=1, **architecture)
        torch.manual_seed(seed)
        return cls(LlamaForSequenceClassification(config), tokenizer, **kwargs)

    def _texts(self, prompts, completions):
        if self.tokenizer.chat_template is None:
            return [f"{p}\n\n{c}" for p, c in zip(prompts, completions)]
        return [
            self.tokenizer.apply_chat_template(
                [{"role": "user", "content": p}, {"role": "assistant", "content": c}], tokenize=False
            )
            for p, c in zip(prompts, completions)
        ]

    @torch.no_grad()
    def score(self, prompts, completions):
        texts = self._texts(prompts, completions)
        scores = []
        for b in tqdm(range(0, len(texts), self.batch_size), desc="reward model", unit="batch", dynamic_ncols=True):
            enc = self.tokenizer(texts[b : b + self.batch_size], return_tensors="pt", padding=True, truncation=True)
            out = self.model(**enc.to(self.model.device))
            score = getattr(out, "score", None)  # ArmoRM returns its preference score here
            score = out.logits[:, self.score_index] if score is None else score.reshape(-1)
            scores.append(score.float().cpu().numpy())
        return np.concatenate(scores).astype(np.float64)


def score_samples(reward: RewardModel, samples: pa.Table, prompts: pa.Table) -> np.ndarray:
    """Rewards [N] of a samples table (prompt_id, completion), with prompt texts from (prompt_id, prompt)."""
    prompt_text = dict(zip(prompts.column("prompt_id").to_pylist(), prompts.column("prompt").to_pylist()))
    return reward.score(
        [prompt_text[p] for p in samples.column("prompt_id").to_pylist()], samples.column("completion").to_pylist()
    )


def _sequence_classifier(cfg: RewardConfig) -> RewardModel:
    if not cfg.path:
        raise InputError("reward.kind=sequence_classifier needs reward.path (a folder or hub name)")
    return SequenceClassifierReward.from_pretrained(
        cfg.path, cfg.trust_remote_code, batch_size=cfg.batch_size, score_index=cfg.score_index
    )


def _tiny_classifier(cfg: RewardConfig) -> RewardModel:
    return SequenceClassifierReward.from_config(cfg.architecture, cfg.seed, batch_size=cfg.batch_size)


REWARD_KINDS = {"vader": lambda cfg: VaderReward(), "sequence_classifier": _sequence_classifier, "tiny_classifier": _tiny_classifier}


def build_reward(cfg: RewardConfig) -> RewardModel:
    if cfg.kind not in REWARD_KINDS:
        raise InputError(f"reward.kind={cfg.kind!r} is not one of {', '.join(REWARD_KINDS)}")
    return REWARD_KINDS[cfg.kind](cfg)
