import numpy as np
import pytest

from qrpo.config import RewardConfig
from qrpo.errors import InputError
from qrpo.rewards import REWARD_KINDS, SequenceClassifierReward, build_reward


def test_vader_scores_warm_answers_above_cold_ones_within_minus_one_to_one():
    reward = build_reward(RewardConfig(name="v", kind="vader"))
    scores = reward.score(["q"] * 3, ["I'd be glad to help, what a wonderful idea!", "The file is 3 MB.", "That is awful and stupid."])
    assert scores[0] > scores[1] > scores[2]
    assert scores[1] == 0.0 and np.all(np.abs(scores) <= 1)


def test_tiny_classifier_is_deterministic_continuous_and_batch_invariant():
    arch = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1}
    texts = ["short", "a somewhat longer answer", "zzz", "another one entirely", "x"]
    a = SequenceClassifierReward.from_config(arch, seed=3, batch_size=2).score(["q"] * 5, texts)
    b = SequenceClassifierReward.from_config(arch, seed=3, batch_size=5).score(["q"] * 5, texts)
    np.testing.assert_allclose(a, b, atol=1e-5)  # padding must not change a score
    assert len(set(np.round(a, 6))) == 5


def test_unknown_reward_kind_lists_the_registry():
    with pytest.raises(InputError, match=", ".join(REWARD_KINDS)):
        build_reward(RewardConfig(name="x", kind="telepathy"))


def test_score_samples_pairs_each_completion_with_its_own_prompt():
    import pyarrow as pa

    from qrpo.rewards import RewardModel, score_samples

    class PromptLength(RewardModel):
        def score(self, prompts, completions):
            return np.array([len(p) * 100 + len(c) for p, c in zip(prompts, completions)], dtype=np.float64)

    prompts = pa.table({"prompt_id": ["a", "b"], "prompt": ["x", "yyy"]})
    samples = pa.table({"prompt_id": ["b", "a", "b"], "completion": ["1", "22", "333"]})
    assert score_samples(PromptLength(), samples, prompts).tolist() == [301, 102, 303]
