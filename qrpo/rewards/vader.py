"""VADER (Hutto & Gilbert 2014, ICWSM): the compound sentiment of the completion, in [-1, 1].

The CPU demo reward: a lexicon- and rule-based model of warmth and positivity that runs in
microseconds. Optimising it makes answers warmer and more upbeat; pushed too far it rewards
gushing, which is exactly the over-optimisation that the KL term and the quantile transform are
there to control, and it shows on a CPU in minutes.
"""

from __future__ import annotations

import numpy as np

from qrpo.rewards.base import RewardModel


class VaderReward(RewardModel):
    kind = "vader"

    def __init__(self):
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self._analyzer = SentimentIntensityAnalyzer()

    @classmethod
    def from_config(cls, cfg=None) -> "VaderReward":
        return cls()

    def score(self, prompts, completions):
        return np.array([self._analyzer.polarity_scores(text)["compound"] for text in completions], dtype=np.float64)
