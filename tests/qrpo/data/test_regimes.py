import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from qrpo.objective.algorithms import DPO, QRPO, SFT, SimPO
from qrpo.config.binding import check_target
from qrpo.config.sections import RegimeConfig
from qrpo.errors import InputError
from qrpo.data.regimes import build_training_data, check_algorithm_fits

CLASSES = {"best_worst": "BestWorst", "random_pairs": "RandomPairs", "offline": "Offline", "pointwise": "Pointwise"}


def regime_of(name: str, **kwargs) -> RegimeConfig:
    """The regime section as conf/regime/<name>.yaml composes it: the name and the class it names."""
    return RegimeConfig(name, _target_=f"qrpo.data.regimes.{CLASSES[name]}", **kwargs)


def _samples(rewards_by_prompt):
    rows = []
    for prompt_id, rewards in rewards_by_prompt.items():
        for i, r in enumerate(rewards):
            rows.append({"prompt_id": prompt_id, "sample_index": i, "prompt_ids": [9, 9], "completion_ids": [100 + i],
                         "num_tokens": 1, "reward": r})
    return pa.Table.from_pylist(rows)


def test_best_worst_pair_is_best_and_worst_candidate_and_quantiles_use_only_the_references():
    # K = 3 candidates (indices 0-2), M = 4 references (indices 3-6).
    samples = _samples({"a": [0.5, 0.9, 0.1, 0.0, 0.2, 0.6, 1.0]})
    pairs, stats = build_training_data(samples, regime_of("best_worst"), num_candidates=3, num_ref=4, ties="le")
    row = pairs.to_pylist()[0]
    assert (row["chosen_ids"], row["rejected_ids"]) == ([101], [102])
    assert (row["chosen_reward"], row["rejected_reward"]) == (0.9, 0.1)
    assert row["ref_rewards"] == [0.0, 0.2, 0.6, 1.0] and row["num_ref"] == 4
    # 0.9 beats 0.0, 0.2, 0.6 -> 3/4; 0.1 beats 0.0 -> 1/4. Candidates never count in their own quantile.
    assert row["chosen_quantile"] == pytest.approx(0.75) and row["rejected_quantile"] == pytest.approx(0.25)
    assert stats["examples"] == 1 and stats["dropped_tied_pairs"] == 0
    assert sum(stats[f"quantile_hist_{i:02d}"] for i in range(10)) == 2  # both sides of the one pair


def test_samples_past_k_plus_m_are_ignored_so_a_sweep_can_share_one_larger_sample_set():
    """A run with M = 2 on an artifact sampled for M = 4 sees exactly the first K + M samples."""
    samples = _samples({"a": [0.5, 0.9, 0.1, 0.0, 0.2, 0.6, 1.0]})
    pairs, _ = build_training_data(samples, regime_of("best_worst"), num_candidates=3, num_ref=2)
    assert pairs.column("ref_rewards").to_pylist() == [[0.0, 0.2]]
    assert pairs.column("num_ref").to_pylist() == [2]


def test_prompts_whose_pair_ties_are_dropped_and_counted():
    samples = _samples({"a": [0.3, 0.3, 0.0, 1.0], "b": [0.1, 0.4, 0.2, 0.3]})
    pairs, stats = build_training_data(samples, regime_of("best_worst"), 2, 2)
    assert pairs.column("prompt_id").to_pylist() == ["b"]
    assert stats["dropped_tied_pairs"] == 1


def test_tie_policy_reaches_the_quantiles():
    samples = _samples({"a": [1.0, 0.0, 1.0, 1.0, 0.0, 0.0]})  # refs 1, 1, 0, 0
    le, _ = build_training_data(samples, regime_of("best_worst"), 2, 4, ties="le")
    mid, _ = build_training_data(samples, regime_of("best_worst"), 2, 4, ties="mid")
    assert le.column("chosen_quantile").to_pylist() == [1.0]  # 1.0 <= all four refs
    assert mid.column("chosen_quantile").to_pylist() == [0.75]  # beats two zeros, ties two ones at 1/2


def test_random_pairs_use_every_candidate_once_in_k_over_2_disjoint_pairs():
    rewards = [0.1, 0.7, 0.3, 0.9, 0.5, 0.2, 0.0, 0.4]  # K = 6 candidates, M = 2 references
    samples = _samples({"a": rewards, "b": [r + 1 for r in rewards]})
    pairs, stats = build_training_data(samples, regime_of("random_pairs", seed=3), 6, 2)
    assert stats["examples"] == 6  # 3 pairs per prompt
    for prompt in ("a", "b"):
        rows = [r for r in pairs.to_pylist() if r["prompt_id"] == prompt]
        used = [r["chosen_ids"][0] for r in rows] + [r["rejected_ids"][0] for r in rows]
        assert sorted(used) == [100, 101, 102, 103, 104, 105]  # disjoint, every candidate once, no reference
        assert all(r["chosen_reward"] > r["rejected_reward"] for r in rows)
    again, _ = build_training_data(samples, regime_of("random_pairs", seed=3), 6, 2)
    assert again.equals(pairs)  # seeded
    others = [build_training_data(samples, regime_of("random_pairs", seed=s), 6, 2)[0] for s in range(4, 10)]
    assert any(not t.equals(pairs) for t in others)  # the seed chooses the pairing


def test_pointwise_makes_every_candidate_an_example_with_its_quantile_among_the_references():
    samples = _samples({"a": [0.5, 0.9, 0.1, 0.0, 0.2, 0.6, 1.0]})  # K = 3, M = 4
    table, stats = build_training_data(samples, regime_of("pointwise"), 3, 4)
    rows = table.to_pylist()
    assert [r["completion_ids"] for r in rows] == [[100], [101], [102]]
    assert [r["quantile"] for r in rows] == pytest.approx([0.5, 0.75, 0.25])
    assert all(r["ref_rewards"] == [0.0, 0.2, 0.6, 1.0] and r["num_ref"] == 4 for r in rows)
    assert stats["examples"] == 3 and stats["dropped_tied_pairs"] == 0


def test_pointwise_leave_one_out_trains_on_all_samples_and_no_sample_counts_itself():
    rewards = [0.5, 0.9, 0.1, 0.0, 0.2, 0.6, 1.0]
    table, stats = build_training_data(_samples({"a": rewards}), regime_of("pointwise", leave_one_out=True), 3, 4)
    rows = table.to_pylist()
    assert stats["examples"] == 7 and all(r["num_ref"] == 6 for r in rows)
    for j, row in enumerate(rows):
        assert row["ref_rewards"] == rewards[:j] + rewards[j + 1 :]
        # distinct rewards: the quantile is the number of others it beats / 6 -- with "le" a sample counted
        # among its own references would beat itself and get one extra 1/6
        assert row["quantile"] == pytest.approx(sum(r < rewards[j] for r in rewards) / 6)


def test_offline_regime_trains_on_the_datasets_pairs_with_all_pi_ref_samples_as_references():
    samples = _samples({"a": [0.1, 0.4, 0.6, 0.9], "b": [0.0, 0.5, 0.5, 0.5]})
    offline = pa.Table.from_pylist([
        {"prompt_id": "a", "prompt_ids": [9], "chosen_ids": [7], "rejected_ids": [8], "chosen_reward": 0.5, "rejected_reward": 0.95},
        {"prompt_id": "b", "prompt_ids": [9], "chosen_ids": [7], "rejected_ids": [8], "chosen_reward": 0.2, "rejected_reward": 0.2},
    ])
    table, stats = build_training_data(samples, regime_of("offline"), 2, 2, offline=offline)
    row = table.to_pylist()[0]
    # the reward decides which side is chosen (the dataset's label is only a label), ties dropped
    assert (row["chosen_ids"], row["rejected_ids"], row["chosen_reward"]) == ([8], [7], 0.95)
    assert row["ref_rewards"] == [0.1, 0.4, 0.6, 0.9] and row["chosen_quantile"] == 1.0 and row["rejected_quantile"] == 0.5
    assert stats["dropped_tied_pairs"] == 1 and stats["examples"] == 1


def test_too_few_samples_for_k_plus_m_is_a_clear_error():
    with pytest.raises(InputError, match=r"fewer than K \+ M = 2 \+ 4 = 6 scored samples"):
        build_training_data(_samples({"a": [0.1, 0.2, 0.3]}), regime_of("best_worst"), 2, 4)


def test_unknown_regime_and_misplaced_leave_one_out_are_refused():
    with pytest.raises(InputError, match="builds regime.name=best_worst, not triples"):  # the name its class declares
        check_target("regime", RegimeConfig("triples", _target_="qrpo.data.regimes.BestWorst"))
    with pytest.raises(InputError, match="leave_one_out=true only applies to regime=pointwise"):
        RegimeConfig("best_worst", leave_one_out=True).validate()


@pytest.mark.parametrize("algorithm", [DPO(0.1), SimPO(2.0), SFT()], ids=repr)
def test_pair_methods_refuse_the_pointwise_regime_with_one_clear_line(algorithm):
    with pytest.raises(InputError, match=f"algorithm {algorithm.name} needs preference pairs.*regime=pointwise") as err:
        check_algorithm_fits(regime_of("pointwise"), algorithm)
    assert "\n" not in str(err.value)
    check_algorithm_fits(regime_of("best_worst"), algorithm)
    check_algorithm_fits(regime_of("pointwise"), QRPO(0.1))


def test_best_worst_takes_the_samples_past_k_as_references():
    pairs, stats = build_training_data(_samples({"a": [0.5, 0.9, 0.1, 0.0, 0.2, 0.6, 1.0]}), regime_of("best_worst"), 3, 4)
    assert pairs.column("num_ref").to_pylist() == [4] and stats["examples"] == 1


def test_offline_completions_read_text_or_chat_messages_and_pair_up_after_scoring():
    from qrpo.data.regimes import offline_completions, offline_pairs

    prompts = pa.Table.from_pylist([
        {"prompt_id": "a", "prompt": "hi", "chosen": "good answer", "rejected": "bad"},
        {"prompt_id": "b", "prompt": "yo", "chosen": '[{"role": "user", "content": "yo"}, {"role": "assistant", "content": "fine"}]',
         "rejected": '[{"role": "user", "content": "yo"}, {"role": "assistant", "content": "meh"}]'},
    ])
    as_lists = pa.Table.from_pylist([{"prompt_id": "c", "chosen": [{"role": "assistant", "content": "ok"}],
                                      "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "no"}]}])
    tokenize = lambda text: [ord(ch) for ch in text]  # noqa: E731
    samples = offline_completions(prompts, {"a": [1], "b": [2]}, tokenize, "chosen", "rejected", eos_id=0)
    assert samples.column("completion").to_pylist() == ["good answer", "bad", "fine", "meh"]
    assert samples.column("completion_ids").to_pylist()[1] == [98, 97, 100, 0]  # "bad" + EOS
    listed = offline_completions(as_lists, {"c": [3]}, tokenize, "chosen", "rejected", eos_id=None)
    assert listed.column("completion").to_pylist() == ["ok", "no"]  # messages as Arrow lists of structs
    scored = samples.append_column("reward", pa.array([0.9, 0.1, 0.3, 0.6]))
    pairs = offline_pairs(scored).to_pylist()
    assert pairs[1] == {"prompt_id": "b", "prompt_ids": [2], "chosen_ids": [102, 105, 110, 101, 0], "chosen_reward": 0.3,
                        "rejected_ids": [109, 101, 104, 0], "rejected_reward": 0.6}
    with pytest.raises(InputError, match="needs the dataset's column 'answer_a'.*dataset.keep_columns"):
        offline_completions(prompts, {}, tokenize, "answer_a", "rejected", 0)


def test_stats_count_prompts_and_report_quantile_means_margins_and_the_histogram():
    # K = 2, M = 2. a: 0.9 vs 0.1 among refs (0.5, 0.0) -> q 1.0 and 0.5; b: 0.6 vs 0.3 among (1.0, 0.7) -> 0 and 0;
    # c ties (dropped, but its prompt counts).
    samples = _samples({"a": [0.9, 0.1, 0.5, 0.0], "b": [0.3, 0.6, 1.0, 0.7], "c": [0.4, 0.4, 0.0, 1.0]})
    _, stats = build_training_data(samples, regime_of("best_worst"), 2, 2)
    assert (stats["examples"], stats["prompts"], stats["dropped_tied_pairs"]) == (2, 3, 1)
    assert stats["quantile_mean"] == pytest.approx(1.5 / 4)  # both sides of every pair
    assert stats["chosen_quantile_mean"] == pytest.approx(0.5) and stats["rejected_quantile_mean"] == pytest.approx(0.25)
    assert stats["reward_margin_mean"] == pytest.approx((0.8 + 0.3) / 2) and stats["num_ref_mean"] == 2.0
    hist = [stats[f"quantile_hist_{i:02d}"] for i in range(10)]
    assert hist == [2, 0, 0, 0, 0, 1, 0, 0, 0, 1]  # 0 in the first bin, 0.5 in the sixth, 1.0 in the last


def test_a_table_whose_every_pair_ties_is_empty_and_its_means_are_nan():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "mean of empty slice"
        table, stats = build_training_data(_samples({"a": [0.3, 0.3, 0.0, 1.0], "b": [0.5, 0.5, 0.1, 0.2]}),
                                           regime_of("best_worst"), 2, 2)
    assert table.num_rows == 0 and stats["examples"] == 0 and stats["dropped_tied_pairs"] == 2
    assert np.isnan(stats["quantile_mean"]) and np.isnan(stats["num_ref_mean"])
    assert "chosen_quantile_mean" not in stats and sum(stats[f"quantile_hist_{i:02d}"] for i in range(10)) == 0


def test_candidates_and_references_follow_sample_index_whatever_the_row_order():
    samples = _samples({"b": [0.1, 0.7, 0.3, 0.9], "a": [0.5, 0.2, 0.0, 1.0]})
    shuffled = samples.take([5, 2, 7, 0, 3, 6, 1, 4])
    table, _ = build_training_data(shuffled, regime_of("pointwise"), 2, 2)
    assert table.column("prompt_id").to_pylist() == ["a", "a", "b", "b"]  # sorted by prompt
    assert table.column("completion_ids").to_pylist() == [[100], [101], [100], [101]]  # candidates = samples 0, 1
    assert table.column("ref_rewards").to_pylist() == [[0.0, 1.0]] * 2 + [[0.3, 0.9]] * 2
    assert table.equals(build_training_data(samples, regime_of("pointwise"), 2, 2)[0])


def test_pointwise_tie_policy_reaches_the_quantiles_and_the_quantile_mean():
    samples = _samples({"a": [1.0, 0.0, 1.0, 0.0]})  # K = 2 candidates 1, 0; references 1, 0
    le, le_stats = build_training_data(samples, regime_of("pointwise"), 2, 2, ties="le")
    mid, mid_stats = build_training_data(samples, regime_of("pointwise"), 2, 2, ties="mid")
    assert le.column("quantile").to_pylist() == [1.0, 0.5] and le_stats["quantile_mean"] == 0.75
    assert [le_stats[f"quantile_hist_{i:02d}"] for i in range(10)] == [0, 0, 0, 0, 0, 1, 0, 0, 0, 1]  # bins of [0, 1], not of the data
    assert mid.column("quantile").to_pylist() == [0.75, 0.25] and mid_stats["quantile_mean"] == 0.5
    loo, _ = build_training_data(samples, regime_of("pointwise", leave_one_out=True), 2, 2, ties="mid")
    assert loo.column("quantile").to_pylist() == pytest.approx([5 / 6, 1 / 6, 5 / 6, 1 / 6])  # among the other three


def test_tie_policy_reaches_the_rejected_quantile_too():
    samples = _samples({"a": [1.0, 0.0, 1.0, 1.0, 0.0, 0.0]})  # refs 1, 1, 0, 0; rejected 0.0
    le, _ = build_training_data(samples, regime_of("best_worst"), 2, 4, ties="le")
    mid, _ = build_training_data(samples, regime_of("best_worst"), 2, 4, ties="mid")
    assert le.column("rejected_quantile").to_pylist() == [0.5] and mid.column("rejected_quantile").to_pylist() == [0.25]


def test_random_pairs_with_odd_k_leave_one_candidate_out():
    samples = _samples({"a": [0.1, 0.7, 0.3, 0.9, 0.5, 0.2, 0.0]})  # K = 5, M = 2
    pairs, stats = build_training_data(samples, regime_of("random_pairs", seed=1), 5, 2)
    used = pairs.column("chosen_ids").to_pylist() + pairs.column("rejected_ids").to_pylist()
    assert stats["examples"] == 2 and len({u[0] for u in used}) == 4 and {u[0] for u in used} < {100, 101, 102, 103, 104}


@pytest.mark.parametrize("seed", range(8))
def test_a_tied_random_pair_is_dropped_and_the_prompts_other_pairs_kept(seed):
    samples = _samples({"a": [0.5, 0.5, 0.5, 0.9, 0.0, 1.0]})  # K = 4: one pair holds 0.9, the other ties
    pairs, stats = build_training_data(samples, regime_of("random_pairs", seed=seed), 4, 2)
    assert stats["dropped_tied_pairs"] == 1 and pairs.column("chosen_reward").to_pylist() == [0.9]


def test_a_prompts_random_pairs_do_not_depend_on_the_other_prompts():
    rewards = [0.1, 0.7, 0.3, 0.9, 0.5, 0.2, 0.0, 0.4]
    alone, _ = build_training_data(_samples({"b": rewards}), regime_of("random_pairs", seed=3), 6, 2)
    together, _ = build_training_data(_samples({"a": rewards, "b": rewards}), regime_of("random_pairs", seed=3), 6, 2)
    assert together.filter(pc.equal(together.column("prompt_id"), "b")).equals(alone)


def test_too_few_samples_error_names_the_count_and_the_first_short_prompt():
    samples = _samples({"a": [0.1, 0.2, 0.3], "b": [0.1] * 6, "c": [0.1, 0.2]})
    with pytest.raises(InputError) as err:
        build_training_data(samples, regime_of("best_worst"), 2, 4)
    assert str(err.value) == ("2 prompt(s) have fewer than K + M = 2 + 4 = 6 scored samples (prompt 'a' has 3); "
                              "the samples artifact does not match sampler.num_train_samples/num_ref_samples")
    build_training_data(samples.filter(pc.equal(samples.column("prompt_id"), "b")), regime_of("best_worst"), 2, 4)  # exactly K + M


def test_offline_regime_without_the_datasets_pairs_is_a_clear_error():
    with pytest.raises(InputError, match=r"^regime=offline needs the dataset's scored chosen/rejected completions \(see offline_completions\)$"):
        build_training_data(_samples({"a": [0.1, 0.4, 0.6, 0.9]}), regime_of("offline"), 2, 2)


def test_offline_rows_skip_prompts_without_samples_and_drop_ties_one_at_a_time():
    samples = _samples({"a": [0.1, 0.4, 0.6, 0.9], "b": [0.0, 0.5, 0.5, 0.5]})
    row = lambda p, c, r: {"prompt_id": p, "prompt_ids": [9], "chosen_ids": [7], "rejected_ids": [8],  # noqa: E731
                           "chosen_reward": c, "rejected_reward": r}
    offline = pa.Table.from_pylist([row("z", 0.1, 0.2), row("a", 0.3, 0.3), row("b", 0.8, 0.2), row("b", 0.4, 0.4)])
    table, stats = build_training_data(samples, regime_of("offline"), 2, 2, offline=offline)
    assert table.to_pylist()[0] | {"chosen_quantile": None, "rejected_quantile": None} == {
        "prompt_id": "b", "prompt_ids": [9], "chosen_ids": [7], "rejected_ids": [8], "chosen_reward": 0.8, "rejected_reward": 0.2,
        "ref_rewards": [0.0, 0.5, 0.5, 0.5], "chosen_quantile": None, "rejected_quantile": None, "num_ref": 4}
    assert stats["examples"] == 1 and stats["dropped_tied_pairs"] == 2 and stats["prompts"] == 2


def test_best_worst_takes_the_first_k_plus_m_samples_and_passes_the_tie_policy():
    samples = _samples({"a": [0.5, 0.9, 0.1, 0.0, 0.2, 0.6, 1.0], "b": [0.5, 0.9, 0.1, 0.9, 0.2, 0.6]})
    pairs, _ = build_training_data(samples, regime_of("best_worst"), 3, 3)
    assert pairs.column("num_ref").to_pylist() == [3, 3]  # the 7th sample of "a" is past K + M
    mid, _ = build_training_data(samples, regime_of("best_worst"), 3, 3, ties="mid")
    assert pairs.column("chosen_quantile").to_pylist()[1] == 1.0 and mid.column("chosen_quantile").to_pylist()[1] == pytest.approx(5 / 6)


def test_completion_text_reads_text_json_messages_or_message_lists_and_refuses_the_rest():
    from qrpo.data.regimes import _completion_text

    assert _completion_text("  [draft] an answer") == "  [draft] an answer"  # looks like a list, is not one
    assert _completion_text("[not json]") == "[not json]"
    assert _completion_text(' [{"role": "assistant", "content": "a"}]  ') == "a"
    messages = ["noise", {"role": "assistant", "content": "first"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "last"}]
    assert _completion_text(messages) == "last" and _completion_text([{"role": "assistant"}]) == ""
    with pytest.raises(InputError) as err:
        _completion_text([{"role": "user", "content": "q"}])
    assert str(err.value) == ("cannot read a completion from \"[{'role': 'user', 'content': 'q'}]\": "
                              "give text or a list of chat messages with an assistant turn")
    with pytest.raises(InputError, match=r"from \"\['x{78}\": give text"):
        _completion_text(["x" * 100])  # no assistant turn; the value is cut at 80 characters
    with pytest.raises(InputError, match="cannot read a completion from '7'"):
        _completion_text(7)


def test_offline_completions_are_finished_samples_with_their_token_counts():
    from qrpo.data.regimes import offline_completions

    prompts = pa.Table.from_pylist([{"prompt_id": "a", "chosen": "ab", "rejected": "c"}])
    rows = offline_completions(prompts, {"a": [5, 6]}, lambda text: [ord(ch) for ch in text], "chosen", "rejected", eos_id=0).to_pylist()
    assert rows == [
        {"prompt_id": "a", "sample_index": 0, "prompt_ids": [5, 6], "completion_ids": [97, 98, 0], "completion": "ab",
         "num_tokens": 3, "finish_reason": "stop", "finished": True},
        {"prompt_id": "a", "sample_index": 1, "prompt_ids": [5, 6], "completion_ids": [99, 0], "completion": "c",
         "num_tokens": 2, "finish_reason": "stop", "finished": True},
    ]
    with pytest.raises(InputError) as err:
        offline_completions(prompts, {}, list, "chosen", "answer_b", 0)
    assert str(err.value) == ("regime=offline needs the dataset's column 'answer_b' in the prompt table (columns: prompt_id, chosen, "
                              "rejected); add it to dataset.keep_columns or set regime.chosen_column/rejected_column")


def test_random_pairs_are_drawn_per_prompt_and_are_a_stable_function_of_seed_and_prompt():
    """Prompts with the same rewards get their own pairings (not one pattern copied to all). The pairing
    of (seed, prompt_id) is pinned: a training table rebuilt by a later version of the code, from the
    same samples and config, must pair the same candidates (cached artifacts and reruns stay comparable)."""
    rewards = [0.1, 0.7, 0.3, 0.9, 0.5, 0.2, 0.0, 0.4]
    many, _ = build_training_data(_samples({f"p{i}": rewards for i in range(8)}), regime_of("random_pairs", seed=3), 6, 2)
    pairings = {p: frozenset((r["chosen_ids"][0], r["rejected_ids"][0]) for r in many.to_pylist() if r["prompt_id"] == p)
                for p in many.column("prompt_id").to_pylist()}
    assert len(set(pairings.values())) > 1
    table, _ = build_training_data(_samples({"a": rewards, "b": rewards}), regime_of("random_pairs", seed=3), 6, 2)
    assert [(r["prompt_id"], r["chosen_ids"][0], r["rejected_ids"][0]) for r in table.to_pylist()] == [
        ("a", 103, 101), ("a", 105, 100), ("a", 104, 102), ("b", 105, 100), ("b", 104, 102), ("b", 103, 101)]


def test_tables_have_the_documented_column_types_even_for_integer_rewards_or_no_rows():
    pair_types = {"prompt_id": pa.string(), "prompt_ids": pa.list_(pa.int64()), "chosen_ids": pa.list_(pa.int64()),
                  "rejected_ids": pa.list_(pa.int64()), "chosen_reward": pa.float64(), "rejected_reward": pa.float64(),
                  "ref_rewards": pa.list_(pa.float64()), "chosen_quantile": pa.float64(), "rejected_quantile": pa.float64(),
                  "num_ref": pa.int64()}
    pointwise_types = {"prompt_id": pa.string(), "prompt_ids": pa.list_(pa.int64()), "completion_ids": pa.list_(pa.int64()),
                       "reward": pa.float64(), "ref_rewards": pa.list_(pa.float64()), "quantile": pa.float64(), "num_ref": pa.int64()}
    integer = _samples({"a": [1, 0, 0, 1, 1, 0]})
    for regime, types in (("best_worst", pair_types), ("pointwise", pointwise_types)):
        table, _ = build_training_data(integer, regime_of(regime), 2, 4)
        assert dict(zip(table.schema.names, table.schema.types)) == types, regime
    empty, _ = build_training_data(_samples({"a": [1, 1, 0, 1]}), regime_of("best_worst"), 2, 2)  # the one pair ties
    assert empty.num_rows == 0 and dict(zip(empty.schema.names, empty.schema.types)) == pair_types


def test_best_worst_pairs_the_highest_and_the_lowest_of_many_candidates():
    rng = np.random.default_rng(0)
    rewards = {f"p{i}": rng.permutation(10).tolist() for i in range(6)}  # K = 8 candidates, M = 2
    pairs, _ = build_training_data(_samples(rewards), regime_of("best_worst"), 8, 2)
    for row in pairs.to_pylist():
        candidates = rewards[row["prompt_id"]][:8]
        assert (row["chosen_reward"], row["rejected_reward"]) == (max(candidates), min(candidates))
        assert (row["chosen_ids"], row["rejected_ids"]) == ([100 + candidates.index(max(candidates))], [100 + candidates.index(min(candidates))])


def test_no_samples_give_an_empty_table():
    schema = pa.schema([("prompt_id", pa.string()), ("sample_index", pa.int64()), ("prompt_ids", pa.list_(pa.int64())),
                        ("completion_ids", pa.list_(pa.int64())), ("reward", pa.float64())])
    pairs, stats = build_training_data(schema.empty_table(), regime_of("best_worst"), 4, 0)
    assert pairs.num_rows == 0 and stats["examples"] == stats["prompts"] == 0


def test_offline_completions_append_no_eos_when_the_tokenizer_has_none():
    from qrpo.data.regimes import offline_completions

    prompts = pa.Table.from_pylist([{"prompt_id": "a", "chosen": "ab", "rejected": "c"}])
    rows = offline_completions(prompts, {"a": [5]}, lambda text: [ord(ch) for ch in text], "chosen", "rejected", eos_id=None)
    assert rows.column("completion_ids").to_pylist() == [[97, 98], [99]] and rows.column("num_tokens").to_pylist() == [2, 1]


def test_every_row_carries_its_own_prompts_token_ids():
    samples = _samples({"a": [0.1, 0.7, 0.3, 0.9], "b": [0.4, 0.2, 0.0, 0.5]})
    samples = samples.set_column(2, "prompt_ids", pa.array([[1]] * 4 + [[2, 2]] * 4))
    for regime in ("best_worst", "random_pairs", "pointwise"):
        table, _ = build_training_data(samples, regime_of(regime), 2, 2)
        assert [(r["prompt_id"], r["prompt_ids"]) for r in table.to_pylist()] == [("a", [1])] * (table.num_rows // 2) + [
            ("b", [2, 2])] * (table.num_rows // 2), regime


def test_quantile_histogram_has_equal_bins_of_the_unit_interval_with_one_in_the_last():
    from qrpo.data.regimes import quantile_histogram

    assert quantile_histogram(np.array([0.0, 0.3, 0.5, 0.74, 1.0]), bins=4) == [1, 1, 2, 1]
    assert quantile_histogram(np.array([0.55, 0.6])) == [0, 0, 0, 0, 0, 2, 0, 0, 0, 0]
