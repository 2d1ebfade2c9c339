import pyarrow as pa
import pytest

from qrpo.training_data import build_training_pairs


def _samples(rewards_by_prompt):
    rows = []
    for prompt_id, rewards in rewards_by_prompt.items():
        for i, r in enumerate(rewards):
            rows.append({"prompt_id": prompt_id, "sample_index": i, "prompt_ids": [9, 9], "completion_ids": [100 + i],
                         "num_tokens": 1, "reward": r})
    return pa.Table.from_pylist(rows)


def test_pair_is_best_and_worst_candidate_and_quantiles_use_only_the_reference_samples():
    # K = 3 candidates (indices 0-2), M = 4 references (indices 3-6).
    samples = _samples({"a": [0.5, 0.9, 0.1, 0.0, 0.2, 0.6, 1.0]})
    pairs, stats = build_training_pairs(samples, num_train_samples=3, ties="le")
    row = pairs.to_pylist()[0]
    assert (row["chosen_ids"], row["rejected_ids"]) == ([101], [102])
    assert (row["chosen_reward"], row["rejected_reward"]) == (0.9, 0.1)
    assert row["ref_rewards"] == [0.0, 0.2, 0.6, 1.0] and row["num_ref"] == 4
    # 0.9 beats 0.0, 0.2, 0.6 -> 3/4; 0.1 beats 0.0 -> 1/4. Candidates never count in their own quantile.
    assert row["chosen_quantile"] == pytest.approx(0.75) and row["rejected_quantile"] == pytest.approx(0.25)
    assert stats["pairs"] == 1 and stats["dropped_tied_pairs"] == 0


def test_prompts_whose_candidates_all_tie_are_dropped_and_counted():
    samples = _samples({"a": [0.3, 0.3, 0.0, 1.0], "b": [0.1, 0.4, 0.2, 0.3]})
    pairs, stats = build_training_pairs(samples, num_train_samples=2)
    assert pairs.column("prompt_id").to_pylist() == ["b"]
    assert stats["dropped_tied_pairs"] == 1


def test_tie_policy_reaches_the_quantiles():
    samples = _samples({"a": [1.0, 0.0, 1.0, 1.0, 0.0, 0.0]})  # refs 1, 1, 0, 0
    le, _ = build_training_pairs(samples, 2, ties="le")
    mid, _ = build_training_pairs(samples, 2, ties="mid")
    assert le.column("chosen_quantile").to_pylist() == [1.0]  # 1.0 <= all four refs
    assert mid.column("chosen_quantile").to_pylist() == [0.75]  # beats two zeros, ties two ones at 1/2
